"""Volume geometry, the SimpleITK bridge and the file readers, checked against ITK's own geometry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from SegTuneCore import geometry
from SegTuneCore.errors import SegTuneError
from SegTuneCore.geometry import Segment, Volume

from core_testdata import ORIENTATIONS, generated_labels, generated_volume


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_sitk_bridge_matches_itk_physical_points(orientation):
    volume = generated_volume(orientation)
    image = geometry.volume_to_sitk(volume)
    # ITK's own index-to-point (LPS) must equal our IJK-to-RAS with x and y negated.
    for ijk in ([0, 0, 0], [10, 0, 0], [0, 8, 0], [0, 0, 6], [3, 5, 2]):
        lps = np.array(image.TransformIndexToPhysicalPoint([int(v) for v in ijk]))
        ras = volume.ijk_to_ras_points(ijk)[0]
        np.testing.assert_allclose(lps * [-1, -1, 1], ras, atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), volume.array)
    back = geometry.volume_from_sitk(image)
    np.testing.assert_allclose(back.ijk_to_ras, volume.ijk_to_ras, atol=1e-12)
    np.testing.assert_allclose(back.spacing, [0.7, 1.3, 3.1])
    np.testing.assert_allclose(back.directions, ORIENTATIONS[orientation], atol=1e-12)
    np.testing.assert_allclose(back.ras_to_ijk @ back.ijk_to_ras, np.eye(4), atol=1e-12)
    assert back.shape_ijk == (11, 9, 7)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".nii", ".mha"])
def test_write_read_volume_round_trip(tmp_path, suffix):
    volume = generated_volume("oblique_LSA", dtype=np.float32)
    path = geometry.write_volume(volume, tmp_path / f"v{suffix}")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    back = geometry.read_volume(path)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.ijk_to_ras, volume.ijk_to_ras, atol=1e-4 if ".nii" in suffix else 1e-9)


def test_read_volume_refuses_bad_files(tmp_path):
    valid = geometry.write_volume(generated_volume("RAS"), tmp_path / "valid.nii").read_bytes()
    cases = {"missing.nrrd": None, "folder.nrrd": "dir", "empty.nrrd": b"", "text.nrrd": b"hello\n",
             "truncated.nii": valid[: len(valid) - 10]}
    for name, content in cases.items():
        path = tmp_path / name
        if content == "dir":
            path.mkdir()
        elif content is not None:
            path.write_bytes(content)
        with pytest.raises(SegTuneError) as caught:
            geometry.read_volume(path)
        assert "\n" not in str(caught.value) and name in str(caught.value)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5), np.uint8)), str(tmp_path / "flat.nrrd"))
    with pytest.raises(SegTuneError, match="expected a 3D volume"):
        geometry.read_volume(tmp_path / "flat.nrrd")
    with pytest.raises(SegTuneError, match="2D"):
        geometry.read_volume(tmp_path / "flat.nrrd", require_3d=False)
    with pytest.raises(SegTuneError, match="unsupported output file type"):
        geometry.write_volume(generated_volume("RAS"), tmp_path / "volume.png")
    assert not (tmp_path / "volume.png").exists()
    for unwritable in ("/proc/segtune_test.nrrd", "/sys/segtune_test.nii.gz"):
        with pytest.raises(SegTuneError, match="could not be written") as caught:
            geometry.write_volume(generated_volume("RAS"), unwritable)
        assert "\n" not in str(caught.value)
    with pytest.raises(SegTuneError, match="could not be written"):
        geometry.write_segmentation(generated_labels("RAS"), [Segment("a", 1, (1, 0, 0))], "/proc/segtune.seg.nrrd")


def test_write_segmentation_checks_its_segments(tmp_path):
    labels = generated_labels("LPS")
    with pytest.raises(SegTuneError, match="distinct"):
        geometry.write_segmentation(labels, [Segment("a", 1, (1, 0, 0)), Segment("b", 1, (0, 1, 0))],
                                    tmp_path / "x.seg.nrrd")
    with pytest.raises(SegTuneError, match=".seg.nrrd"):
        geometry.write_segmentation(labels, [Segment("a", 1, (1, 0, 0))], tmp_path / "x.nrrd")
    assert list(tmp_path.iterdir()) == []
    # Extents written are those of each label (i, j, k bounds), computed independently here.
    path = geometry.write_segmentation(labels, [Segment("a", 2, (1, 0, 0))], tmp_path / "x.seg.nrrd")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    k, j, i = np.nonzero(labels.array == 2)
    expected = [i.min(), i.max(), j.min(), j.max(), k.min(), k.max()]
    assert [int(v) for v in reader.GetMetaData("Segment0_Extent").split()] == expected
    # Labels that no segment names are not written.
    read, read_segments = geometry.read_segmentation(path)
    assert read_segments == [Segment("a", 2, (1.0, 0.0, 0.0))]
    np.testing.assert_array_equal(read.array, np.where(labels.array == 2, 2, 0))


def test_volume_from_geometry_properties():
    directions = ORIENTATIONS["oblique"]
    volume = Volume.from_geometry(np.zeros((2, 3, 4)), spacing=(0.5, 2.0, 3.0), origin=(1, 2, 3), directions=directions)
    np.testing.assert_allclose(volume.spacing, [0.5, 2.0, 3.0])
    np.testing.assert_allclose(volume.origin, [1, 2, 3])
    np.testing.assert_allclose(volume.directions, directions, atol=1e-12)
    assert volume.shape_ijk == (4, 3, 2)
    np.testing.assert_allclose(volume.ijk_to_ras_points([1, 0, 0])[0], [1, 2, 3] + 0.5 * directions[:, 0])
    with pytest.raises(ValueError):
        volume.with_array(np.zeros((3, 3, 4)))
    # A vector volume ([k, j, i, channel], as SimpleITK gives it) has the same grid.
    vector = volume.with_array(np.zeros((2, 3, 4, 3), np.float32))
    assert vector.shape_ijk == (4, 3, 2)
    image = geometry.volume_to_sitk(vector)
    assert image.GetSize() == (4, 3, 2) and image.GetNumberOfComponentsPerPixel() == 3
