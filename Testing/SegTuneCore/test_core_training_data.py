"""SegTuneCore.training_data.check_training_folder on real files written to a temporary folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from SegTuneCore.errors import SegTuneError
from SegTuneCore.geometry import Volume, write_volume
from SegTuneCore.training_data import check_training_folder

IJK_TO_RAS = np.diag([1.5, 1.2, 2.0, 1.0])


def _write(path, shape=(6, 5, 4), ijk_to_ras=IJK_TO_RAS, dtype=np.float32):
    write_volume(Volume(np.zeros(shape, dtype=dtype), np.array(ijk_to_ras, dtype=np.float64)), path)


def _refusal(folder, **options) -> str:
    with pytest.raises(SegTuneError) as raised:
        check_training_folder(folder, **options)
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_volume_pairs_follow_the_label_markers_and_ignore_other_files(tmp_path):
    _write(tmp_path / "a.nrrd")
    _write(tmp_path / "a_label.nrrd", dtype=np.uint8)
    _write(tmp_path / "b.nii.gz")
    _write(tmp_path / "b.seg.nrrd", dtype=np.uint8)
    _write(tmp_path / "c.mha")
    _write(tmp_path / "c-mask.nii", dtype=np.uint8)
    (tmp_path / "notes.txt").write_text("ignored")
    pairs = check_training_folder(tmp_path)
    assert [(i.name, l.name) for i, l in pairs] == [("a.nrrd", "a_label.nrrd"), ("b.nii.gz", "b.seg.nrrd"),
                                                    ("c.mha", "c-mask.nii")]


def test_every_offending_file_is_named_in_one_error(tmp_path):
    _write(tmp_path / "good.nrrd")
    _write(tmp_path / "good_label.nrrd", dtype=np.uint8)
    _write(tmp_path / "nolabel.nrrd")
    _write(tmp_path / "orphan_label.nrrd", dtype=np.uint8)
    _write(tmp_path / "size.nrrd")
    _write(tmp_path / "size_label.nrrd", shape=(6, 5, 3), dtype=np.uint8)
    _write(tmp_path / "spacing.nrrd")
    _write(tmp_path / "spacing_label.nrrd", ijk_to_ras=np.diag([1.5, 1.2, 2.5, 1.0]), dtype=np.uint8)
    shifted = IJK_TO_RAS.copy()
    shifted[:3, 3] = [0.0, 0.0, 1.0]  # half a voxel along k
    _write(tmp_path / "origin.nrrd")
    _write(tmp_path / "origin_label.nrrd", ijk_to_ras=shifted, dtype=np.uint8)
    rotated = np.array([[0, 1.2, 0, 0], [1.5, 0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])  # i along A, j along R
    _write(tmp_path / "direction.nrrd")
    _write(tmp_path / "direction_label.nrrd", ijk_to_ras=rotated, dtype=np.uint8)
    (tmp_path / "broken.nrrd").write_bytes(b"NRRD0004\nthis is not a header\n")
    _write(tmp_path / "broken_label.nrrd", dtype=np.uint8)
    message = _refusal(tmp_path)
    assert "7 offending files" in message
    assert "nolabel.nrrd: no label (expected nolabel_label.nrrd)" in message
    assert "orphan_label.nrrd: label without an image" in message
    # SimpleITK sizes are i, j, k: the array (6, 5, 3) is 3 slices along k
    assert "size_label.nrrd: label grid size 3x5x6 differs from 4x5x6 of size.nrrd" in message
    assert "spacing_label.nrrd: label grid spacing (1.5, 1.2, 2.5) differs from (1.5, 1.2, 2)" in message
    assert "origin_label.nrrd: label grid origin" in message
    assert "direction_label.nrrd: label grid direction differs" in message
    assert "broken.nrrd: unreadable" in message
    assert "good" not in message


def test_grids_equal_within_the_float32_tolerance_of_nifti_are_accepted(tmp_path):
    nudged = IJK_TO_RAS.copy()
    nudged[:3, 3] = [1e-5, -1e-5, 1e-5]
    _write(tmp_path / "a.nrrd")
    _write(tmp_path / "a_label.nii.gz", ijk_to_ras=nudged, dtype=np.uint8)
    assert len(check_training_folder(tmp_path)) == 1


def test_slice_json_lengths_follow_the_axial_axis(tmp_path):
    # array (6, 5, 4) = 4 i, 5 j, 6 k; a sagittal volume (k along R, j along S) has 5 axial slices
    _write(tmp_path / "axial.nrrd")
    (tmp_path / "axial.json").write_text(json.dumps({"slice_labels": ["head"] * 6}))
    sagittal = np.array([[0, 0, 2.0, 0], [1.5, 0, 0, 0], [0, 1.2, 0, 0], [0, 0, 0, 1]])
    _write(tmp_path / "sagittal.nrrd", ijk_to_ras=sagittal)
    (tmp_path / "sagittal.json").write_text(json.dumps({"slice_labels": ["legs", None, "legs", "legs", "legs"]}))
    pairs = check_training_folder(tmp_path, label_kind="slice-json")
    assert [(i.name, l.name) for i, l in pairs] == [("axial.nrrd", "axial.json"), ("sagittal.nrrd", "sagittal.json")]

    (tmp_path / "sagittal.json").write_text(json.dumps({"slice_labels": ["legs"] * 6}))
    _write(tmp_path / "unlabelled.nii.gz")
    (tmp_path / "bad.json").write_text("{not json")
    _write(tmp_path / "bad.nrrd")
    message = _refusal(tmp_path, label_kind="slice-json")
    assert "3 offending files" in message
    assert "sagittal.json: 6 slice labels for 5 axial slices" in message
    assert "unlabelled.nii.gz: no label (expected unlabelled.json)" in message
    assert "bad.json: unreadable" in message


def test_truncated_nifti_and_empty_files_are_refused(tmp_path):
    _write(tmp_path / "a.nii", shape=(20, 20, 20))
    _write(tmp_path / "a_label.nii", shape=(20, 20, 20), dtype=np.uint8)
    data = (tmp_path / "a.nii").read_bytes()
    (tmp_path / "a.nii").write_bytes(data[: len(data) // 2])
    (tmp_path / "b.nrrd").write_bytes(b"")
    _write(tmp_path / "b_label.nrrd", dtype=np.uint8)
    message = _refusal(tmp_path)
    assert "a.nii: truncated NIfTI file" in message
    assert "b.nrrd: empty file" in message


def test_not_a_folder_and_an_empty_folder_are_refused(tmp_path):
    assert "not a folder" in _refusal(tmp_path / "missing")
    assert "no training images and labels found" in _refusal(tmp_path)
    with pytest.raises(ValueError):
        check_training_folder(tmp_path, label_kind="mesh")


@pytest.mark.parametrize("suffix,compress", [(".nrrd", True), (".nrrd", False), (".mha", False)])
def test_truncated_voxel_data_is_found_from_the_file_size(tmp_path, suffix, compress):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32))
    for name in ("a", "a_label", "b", "b_label"):
        sitk.WriteImage(image, str(tmp_path / f"{name}{suffix}"), compress)
    assert len(check_training_folder(tmp_path)) == 2
    data = (tmp_path / f"a{suffix}").read_bytes()
    (tmp_path / f"a{suffix}").write_bytes(data[:-200])
    message = _refusal(tmp_path)
    assert "1 offending file:" in message and f"a{suffix}: truncated or damaged voxel data" in message
