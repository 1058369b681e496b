"""Pre/post-processing: the network's 4 mm cube and the exact way back to the input grid."""

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from KidneyUSLib import phantom, preprocessing
from KidneyUSLib.selftest import dice, flipped_ij
from SegTuneCore.geometry import Volume


def _ramp_volume(shape_kji, ijk_to_ras):
    """A volume whose voxels hold a linear function of their RAS position."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape_kji], indexing="ij")
    ijk = np.stack([i, j, k], -1).reshape(-1, 3)
    ras = ijk @ ijk_to_ras[:3, :3].T + ijk_to_ras[:3, 3]
    return Volume((ras @ [0.3, -0.2, 0.5] + 7.0).reshape(shape_kji).astype(np.float32), ijk_to_ras)


def _oblique_matrix(spacing, degrees, origin=(10.0, -20.0, 5.0)):
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", degrees, degrees=True).as_matrix() @ np.diag(spacing)
    matrix[:3, 3] = origin
    return matrix


@pytest.mark.parametrize("population,seed", [("adult", 21), ("child", 23)])
def test_label_round_trip_on_oblique_anisotropic_phantoms(population, seed):
    volume, label = phantom.generate_phantom(population, seed, spacing=(0.9, 0.6, 1.2), size=(170, 230, 130), oblique=True)
    assert not np.allclose(np.abs(volume.directions).max(axis=0), 1.0)  # really oblique
    _, info = preprocessing.preprocess(volume)
    back = preprocessing.postprocess(preprocessing.resample_to_cube(label.array, info), info)
    assert back.shape == label.array.shape and back.dtype == np.uint8
    assert dice(back, label.array) >= 0.97


def test_cube_geometry_is_canonical_4mm_and_centred_on_the_input():
    ijk_to_ras = _oblique_matrix((0.7, 0.5, 1.1), (20, -15, 10))
    ijk_to_ras[:3, :3] = ijk_to_ras[:3, :3][:, [2, 0, 1]] * [-1, 1, -1]  # any storage order
    shape_kji = (90, 120, 100)
    cube_matrix = preprocessing.cube_geometry(shape_kji, ijk_to_ras)
    np.testing.assert_allclose(np.linalg.norm(cube_matrix[:3, :3], axis=0), 4.0)
    directions = cube_matrix[:3, :3] / 4.0
    assert np.array_equal(np.argmax(np.abs(directions), axis=0), [0, 1, 2])  # i ~ R, j ~ A, k ~ S
    assert (np.diag(directions) > 0).all()
    # every cube axis is one of the input's axes: the content is never rotated
    input_directions = ijk_to_ras[:3, :3] / np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    np.testing.assert_allclose(np.abs(input_directions.T @ directions).max(axis=0), 1.0, atol=1e-12)
    input_centre = ijk_to_ras[:3, :3] @ ((np.array(shape_kji[::-1]) - 1) / 2) + ijk_to_ras[:3, 3]
    cube_centre = cube_matrix[:3, :3] @ np.full(3, 39.5) + cube_matrix[:3, 3]
    np.testing.assert_allclose(cube_centre, input_centre, atol=1e-9)


def test_resampling_to_the_cube_samples_the_input_at_the_cube_voxels_ras():
    ijk_to_ras = _oblique_matrix((1.3, 0.9, 1.7), (10, 25, -5))
    shape_kji = (120, 150, 110)
    volume = _ramp_volume(shape_kji, ijk_to_ras)
    info = preprocessing.PreprocessInfo(shape_kji, ijk_to_ras, preprocessing.cube_geometry(shape_kji, ijk_to_ras), (0, 1))
    cube = preprocessing.resample_to_cube(volume.array, info)
    expected = _ramp_volume((80, 80, 80), info.cube_ijk_to_ras).array  # independent: the ramp at each cube voxel
    inside = preprocessing.field_of_view(info)
    interior = ndimage.binary_erosion(inside, iterations=3)  # away from the border's zero padding
    assert interior.sum() > 1000
    np.testing.assert_allclose(cube[interior], expected[interior], atol=1e-3)


def test_back_to_the_input_grid_samples_the_cube_at_the_input_voxels_ras():
    ijk_to_ras = _oblique_matrix((0.8, 1.1, 0.6), (-20, 5, 30))
    shape_kji = (140, 100, 120)
    info = preprocessing.PreprocessInfo(shape_kji, ijk_to_ras, preprocessing.cube_geometry(shape_kji, ijk_to_ras), (0, 1))
    cube = _ramp_volume((80, 80, 80), info.cube_ijk_to_ras).array
    back = preprocessing.cube_to_input(cube, info)
    expected = _ramp_volume(shape_kji, ijk_to_ras).array
    # cubic B-splines reproduce a linear function away from the cube's border (the input lies well inside it)
    np.testing.assert_allclose(back, expected, atol=1e-3)


def test_storage_order_does_not_change_the_cube():
    volume, _ = phantom.generate_phantom("adult", 31, spacing=(1.4, 1.3, 1.45), size=(110, 130, 100), oblique=True)
    cube, info = preprocessing.preprocess(volume)
    flipped_cube, flipped_info = preprocessing.preprocess(flipped_ij(volume))
    np.testing.assert_allclose(flipped_info.cube_ijk_to_ras, info.cube_ijk_to_ras, atol=1e-9)
    np.testing.assert_allclose(flipped_cube, cube, atol=1e-5)


@pytest.mark.parametrize("storage", ["i and j swapped", "i and j swapped and flipped"])
def test_axes_at_exactly_45_degrees_give_the_same_cube_in_any_storage_order(storage):
    # i and j lie exactly between R and A: two assignments are equally near; the tie must be
    # broken by the physical directions, not by which axis is stored first
    matrix = _oblique_matrix((1.5, 1.5, 2.0), (0.0, 0.0, 45.0))
    volume, _ = phantom.generate_phantom("adult", 33, spacing=(1.5, 1.5, 2.0), size=(60, 60, 40))
    volume = Volume(volume.array, matrix)
    swap = np.eye(4)[:, [1, 0, 2, 3]]  # new (i, j) = old (j, i)
    other = Volume(np.ascontiguousarray(volume.array.transpose(0, 2, 1)), matrix @ swap)
    # voxel (i, j, k) = (3, 7, 11) of one is voxel (7, 3, 11) of the other: same value, same point
    assert other.array[11, 3, 7] == volume.array[11, 7, 3]
    np.testing.assert_allclose(other.ijk_to_ras @ [7, 3, 11, 1], volume.ijk_to_ras @ [3, 7, 11, 1])
    if storage.endswith("flipped"):
        other = flipped_ij(other)
    cube, info = preprocessing.preprocess(volume)
    other_cube, other_info = preprocessing.preprocess(other)
    np.testing.assert_allclose(other_info.cube_ijk_to_ras, info.cube_ijk_to_ras, atol=1e-9)
    np.testing.assert_allclose(other_cube, cube, atol=1e-5)


def test_intensity_normalisation_maps_percentiles_and_zeroes_outside_the_field_of_view():
    volume, _ = phantom.generate_phantom("child", 32, spacing=(1.4, 1.3, 1.45), size=(110, 130, 100))
    cube, info = preprocessing.preprocess(volume)
    inside = preprocessing.field_of_view(info)
    assert 0.05 < inside.mean() < 0.9
    assert (cube[~inside] == 0).all()
    assert cube.min() >= 0 and cube.max() <= preprocessing.INTENSITY_CLIP[1]
    raw = preprocessing.resample_to_cube(volume.array, info)
    low, high = np.percentile(raw[inside], preprocessing.INTENSITY_PERCENTILES)
    assert info.intensity_range == pytest.approx((low, high))
    expected = np.clip((raw[inside] - low) / (high - low), *preprocessing.INTENSITY_CLIP)
    np.testing.assert_allclose(cube[inside], expected, atol=1e-5)
    assert np.mean(cube[inside] >= 1.0) == pytest.approx(1 - preprocessing.INTENSITY_PERCENTILES[1] / 100, abs=0.005)


def test_postprocess_threshold_and_largest_component():
    shape_kji = (60, 70, 50)
    ijk_to_ras = np.diag([4.0, 4.0, 4.0, 1.0])  # input grid = cube grid shifted: a pure voxel copy
    info = preprocessing.PreprocessInfo(shape_kji, ijk_to_ras, preprocessing.cube_geometry(shape_kji, ijk_to_ras), (0, 1))
    probability = np.zeros((80, 80, 80), dtype=np.float32)
    probability[30:50, 30:50, 30:50] = 0.9  # big blob
    probability[15:18, 15:18, 15:18] = 0.9  # small blob
    probability[60:63, 30:33, 30:33] = 0.4  # below threshold
    both = preprocessing.postprocess(probability, info, largest_component=False)
    largest = preprocessing.postprocess(probability, info)

    assert ndimage.label(both)[1] == 2 and ndimage.label(largest)[1] == 1
    assert largest.sum() > 0.9 * both.sum()
    lower = preprocessing.postprocess(probability, info, threshold=0.3, largest_component=False)
    assert ndimage.label(lower)[1] == 3


def test_postprocess_equals_thresholding_the_full_cubic_resampling():
    volume, label = phantom.generate_phantom("child", 24, spacing=(1.1, 0.8, 1.3), size=(140, 180, 110), oblique=True)
    _, info = preprocessing.preprocess(volume)
    smooth = preprocessing.resample_to_cube(label.array, info)
    noisy = np.clip(smooth + np.random.default_rng(0).normal(0, 0.1, smooth.shape), 0, 1).astype(np.float32)
    first = np.flatnonzero(preprocessing.field_of_view(info).any(axis=(1, 2)))[0]
    border = np.zeros_like(smooth)  # a slab across the input's first face: the box postprocess works in is clipped
    border[max(first - 2, 0):first + 3] = 0.9 * preprocessing.field_of_view(info)[first]
    # smooth, network-sharp, noisy, edge and empty maps
    for cube in (smooth, (smooth > 0.5).astype(np.float32), noisy, border, np.zeros_like(smooth)):
        full = (preprocessing.cube_to_input(cube, info) >= 0.5).astype(np.uint8)
        np.testing.assert_array_equal(preprocessing.postprocess(cube, info, largest_component=False), full)
        assert full.any() or not cube.any()


def test_round_trip_of_real_kidney_masks_on_a_ras_stored_ct(shared_data):
    """TotalSegmentator's kidneys (real shapes, 3 mm, RAS-stored NIfTI) survive cube and back."""
    from SegTuneCore.geometry import read_volume

    ct = read_volume(shared_data / "totalseg_ct_abdomen.nii.gz")
    labels = read_volume(shared_data / "totalseg_ct_abdomen_seg.nii.gz")
    np.testing.assert_allclose(labels.ijk_to_ras, ct.ijk_to_ras, atol=1e-4)
    _, info = preprocessing.preprocess(ct)
    for value in (2, 3):  # right, left kidney
        mask = (labels.array == value).astype(np.uint8)
        back = preprocessing.postprocess(preprocessing.resample_to_cube(mask, info), info)
        assert dice(back, mask) >= 0.95, value
