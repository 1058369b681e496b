"""MRML integration on the headless runtime: volumes and segmentations keep voxels and geometry.

Round trip: file -> MRML volumes logic -> array -> SimpleITK -> node -> NRRD/NIfTI (storage
node) -> reload. Geometry is compared by mapping the volume's corner voxels to RAS with both
matrices (distances in mm), an independent check of every matrix element that matters.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from SegTuneCore import geometry, mrml
from SegTuneCore.errors import SegTuneError

from core_testdata import KMEANS_LSA, ORIENTATIONS, generated_volume

NRRD_TOLERANCE_MM = 1e-6
# NIfTI stores the sform/qform as float32: a few float32 epsilons (1.2e-7) relative to the
# coordinates, i.e. ~1e-4 mm at 300 mm from the origin.
NIFTI_RELATIVE_TOLERANCE = 4 * float(np.finfo(np.float32).eps)


def corners_ras(ijk_to_ras: np.ndarray, shape_ijk) -> np.ndarray:
    corners = np.array([[i, j, k, 1.0] for i in (0, shape_ijk[0] - 1) for j in (0, shape_ijk[1] - 1)
                        for k in (0, shape_ijk[2] - 1)])
    return (corners @ np.asarray(ijk_to_ras).T)[:, :3]


def assert_same_geometry(actual: np.ndarray, expected: np.ndarray, shape_ijk, nifti: bool = False) -> None:
    expected_points = corners_ras(expected, shape_ijk)
    error = np.abs(corners_ras(actual, shape_ijk) - expected_points).max()
    tolerance = NRRD_TOLERANCE_MM
    if nifti:
        tolerance = max(tolerance, NIFTI_RELATIVE_TOLERANCE * np.abs(expected_points).max())
    assert error <= tolerance, f"corner voxels moved by {error} mm (tolerance {tolerance})"


def round_trip(slicer, path: Path, tmp_path: Path) -> None:
    """file -> MRML -> array -> SimpleITK -> node -> NRRD and NIfTI -> reload."""
    loaded = mrml.volume_from_node(mrml.load_volume_node(path))
    image = geometry.volume_to_sitk(loaded)
    through_sitk = geometry.volume_from_sitk(image)
    node = mrml.node_from_volume(through_sitk, "through_sitk")
    assert mrml.volume_from_node(node).array.dtype == loaded.array.dtype
    for suffix in (".nrrd", ".nii.gz"):
        written = mrml.save_node(node, tmp_path / f"roundtrip{suffix}")
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")], "temporary file left behind"
        reloaded = mrml.volume_from_node(mrml.load_volume_node(written))
        np.testing.assert_array_equal(reloaded.array, loaded.array)
        assert reloaded.array.dtype == loaded.array.dtype
        assert_same_geometry(reloaded.ijk_to_ras, loaded.ijk_to_ras, loaded.shape_ijk, nifti=suffix != ".nrrd")


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_generated_volume_round_trip(slicer_runtime, tmp_path, orientation, suffix):
    volume = generated_volume(orientation, dtype=np.float32 if orientation == "oblique" else np.int16)
    path = geometry.write_volume(volume, tmp_path / f"source{suffix}")
    loaded = mrml.volume_from_node(mrml.load_volume_node(path))
    # The MRML reader sees exactly what was generated (voxels and geometry).
    np.testing.assert_array_equal(loaded.array, volume.array)
    assert_same_geometry(loaded.ijk_to_ras, volume.ijk_to_ras, volume.shape_ijk, nifti=suffix != ".nrrd")
    # Stored orientation survives: each direction column points where it was generated.
    np.testing.assert_allclose(loaded.directions, ORIENTATIONS[orientation], atol=1e-5)
    np.testing.assert_allclose(loaded.spacing, [0.7, 1.3, 3.1], rtol=1e-6)
    out = tmp_path / "out"
    out.mkdir()
    round_trip(slicer_runtime, path, out)


def test_real_ct_round_trip(slicer_runtime, shared_data, tmp_path):
    path = shared_data / "totalseg_ct_abdomen.nii.gz"
    loaded = mrml.volume_from_node(mrml.load_volume_node(path))
    assert loaded.shape_ijk == (122, 101, 30)
    # RAS-stored NIfTI: ITK direction diag(-1, -1, 1) (LPS) is the identity in RAS.
    np.testing.assert_allclose(loaded.directions, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(loaded.spacing, [3.0, 3.0, 3.0], rtol=1e-6)
    round_trip(slicer_runtime, path, tmp_path)


def test_lsa_brain_mri_round_trip(slicer_runtime, tmp_path):
    if not KMEANS_LSA.is_file():
        pytest.skip(f"{KMEANS_LSA} is absent (apt-get install insighttoolkit5-examples)")
    loaded = mrml.volume_from_node(mrml.load_volume_node(KMEANS_LSA))
    np.testing.assert_allclose(loaded.directions, ORIENTATIONS["LSA"], atol=1e-6)
    np.testing.assert_allclose(loaded.spacing, [2.0, 2.0, 3.0], rtol=1e-6)
    round_trip(slicer_runtime, KMEANS_LSA, tmp_path)


def shared_ct(repo_root: Path) -> Path | None:
    folder = Path(os.environ.get("SEGTUNE_SHARED_DATA", repo_root.parent / "shared" / "data"))
    path = folder / "totalseg_ct_abdomen.nii.gz"
    return path if path.is_file() else None


def test_read_volume_agrees_with_mrml_volumes_logic(slicer_runtime, tmp_path, repo_root):
    """geometry.read_volume (SimpleITK) and AddArchetypeVolume (MRML) are independent readers."""
    files = [geometry.write_volume(generated_volume(orientation, seed=3), tmp_path / f"{orientation}{suffix}")
             for orientation in ORIENTATIONS for suffix in (".nrrd", ".nii.gz", ".mha")]
    files += [path for path in (KMEANS_LSA, shared_ct(repo_root)) if path is not None and path.is_file()]
    for path in files:
        by_sitk = geometry.read_volume(path)
        by_mrml = mrml.volume_from_node(mrml.load_volume_node(path))
        np.testing.assert_array_equal(by_sitk.array, by_mrml.array, err_msg=str(path))
        nifti = ".nii" in path.name
        assert_same_geometry(by_sitk.ijk_to_ras, by_mrml.ijk_to_ras, by_sitk.shape_ijk, nifti=nifti)


@pytest.mark.parametrize("kind", ["4D", "6 components"])
def test_4d_and_multi_component_images_are_refused_not_loaded_in_part(slicer_runtime, tmp_path, kind):
    import SimpleITK as sitk

    path = tmp_path / "image.nii"
    array = np.arange(3 * 4 * 5 * 6, dtype=np.float32).reshape(3, 4, 5, 6)
    # the volumes logic loaded frame 0 of the first, and the second as a tensor volume
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=kind != "4D"), str(path))
    scene_nodes = slicer_runtime.mrmlScene.GetNumberOfNodes()
    with pytest.raises(SegTuneError, match="a 4D image, expected 3D" if kind == "4D" else "6 components per voxel"):
        mrml.load_volume_node(path)
    assert slicer_runtime.mrmlScene.GetNumberOfNodes() == scene_nodes
