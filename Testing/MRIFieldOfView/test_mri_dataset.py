"""Axial slice preprocessing (orientation handling), splits, class weights, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SegTuneCore.errors import SegTuneError
from SegTuneCore.geometry import Volume
from MRIFieldOfViewLib.dataset import (EMPTY, SliceSet, augment, class_weights, encode_labels, split_slice_set,
                                       split_volumes, study_options)
from MRIFieldOfViewLib.preprocessing import SIZE, axial_slices
from MRIFieldOfViewLib.regions import ORDERED_REGIONS, REGIONS


def asymmetric_volume(rng=None):
    """A volume whose content identifies every direction: a bright block anterior-right,
    intensity increasing upwards, on an LPS-stored canonical grid of 24 x 20 x 10 voxels."""
    array = np.zeros((10, 20, 24), dtype=np.float32)  # [k, j, i]; i -> left, j -> posterior, k -> up
    for k in range(10):
        array[k] = 10 + k
        array[k, 2:6, 1:5] = 200  # small j (anterior), small i (right)
    return Volume.from_geometry(array, spacing=(1.5, 2.0, 4.0), origin=(30.0, 40.0, -20.0),
                                directions=np.diag([-1.0, -1.0, 1.0]))


def reflect(volume: Volume, array_axis: int) -> Volume:
    """The same physical image stored with one array axis reversed."""
    matrix = volume.ijk_to_ras.copy()
    ijk_axis = 2 - array_axis
    matrix[:3, 3] += matrix[:3, ijk_axis] * (volume.array.shape[array_axis] - 1)
    matrix[:3, ijk_axis] *= -1
    return Volume(np.flip(volume.array, axis=array_axis).copy(), matrix)


def permute(volume: Volume, order) -> Volume:
    """The same physical image with the IJK axes stored in another order (new axis n = old order[n])."""
    matrix = np.eye(4)
    matrix[:3, :3] = volume.ijk_to_ras[:3, order]
    matrix[:3, 3] = volume.ijk_to_ras[:3, 3]
    array_order = [2 - order[2 - n] for n in range(3)]
    return Volume(np.transpose(volume.array, array_order).copy(), matrix)


def rotate(volume: Volume, degrees: float) -> Volume:
    angle = np.radians(degrees)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    matrix = volume.ijk_to_ras.copy()
    matrix[:3, :] = rotation @ matrix[:3, :]
    return Volume(volume.array.copy(), matrix)


def physical(stack):
    order = stack.physical_order()
    return stack.images[order], stack.positions_mm[order]


def test_slices_are_radiological_and_ordered_by_superior_position():
    stack = axial_slices(asymmetric_volume())
    assert stack.images.shape == (10, SIZE, SIZE) and stack.images.dtype == np.float32
    assert stack.slice_axis == 2 and list(stack.k_indices) == list(range(10))
    # Independent: S of slice k = origin S + 4 mm * k (k is along +S).
    assert np.allclose(stack.positions_mm, -20.0 + 4.0 * np.arange(10))
    image = stack.images[0]
    rows, columns = np.nonzero(image > 0.9)
    assert rows.mean() < SIZE / 2 and columns.mean() < SIZE / 2  # anterior at the top, patient's right on the left
    assert stack.images[9].mean() > stack.images[0].mean()  # brighter upwards
    assert 0.0 <= stack.images.min() and stack.images.max() <= 1.0


@pytest.mark.parametrize("transform", [
    lambda v: reflect(v, 0),                      # slices stored top to bottom
    lambda v: reflect(reflect(v, 1), 2),           # RAS- instead of LPS-stored
    lambda v: permute(v, [1, 0, 2]),               # rows and columns swapped
    lambda v: permute(v, [2, 1, 0]),               # the patient axis stored along i
    lambda v: permute(reflect(v, 0), [0, 2, 1]),   # the patient axis along j, flipped
    lambda v: rotate(v, 10.0),                     # oblique by 10 degrees
])
def test_any_storage_gives_the_same_slices_in_physical_order(transform):
    reference = axial_slices(asymmetric_volume())
    other_volume = transform(asymmetric_volume())
    other = axial_slices(other_volume)
    images_a, positions_a = physical(reference)
    images_b, positions_b = physical(other)
    assert np.allclose(images_a, images_b, atol=1e-5)
    assert np.all(np.diff(positions_b) > 0)
    # k_indices index the slice axis of the stored array; positions follow the stored geometry.
    centre = (np.array(other_volume.array.shape[::-1]) - 1) / 2
    ijk = np.tile(centre, (len(other), 1))
    ijk[:, other.slice_axis] = other.k_indices
    assert np.allclose(other.positions_mm, (ijk @ other_volume.ijk_to_ras[:3, :3].T + other_volume.ijk_to_ras[:3, 3])[:, 2])


def test_aspect_ratio_is_kept_by_padding():
    array = np.tile(np.linspace(1.0, 2.0, 80, dtype=np.float32), (3, 20, 1))  # 80 columns x 20 rows of 1 mm
    stack = axial_slices(Volume.from_geometry(array, (1, 1, 1), (0, 0, 0)))
    rows_with_body = np.nonzero(stack.images[1].max(axis=1) > 0.5)[0]
    assert abs(len(rows_with_body) - SIZE * 20 / 80) <= 2


@pytest.mark.parametrize("array,message", [
    (np.full((4, 8, 8), np.nan, dtype=np.float32), "NaN"),
    (np.zeros((8, 8), dtype=np.float32), "3D"),
])
def test_bad_volumes_are_refused_with_a_clear_error(array, message):
    with pytest.raises(SegTuneError, match=message):
        axial_slices(Volume(array, np.eye(4)))


def test_volume_wise_split_is_50_25_25_disjoint_and_seeded():
    splits = split_volumes(40, seed=3)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [20, 10, 10]
    together = np.concatenate(list(splits.values()))
    assert sorted(together.tolist()) == list(range(40))
    assert all(np.array_equal(a, b) for a, b in zip(splits.values(), split_volumes(40, seed=3).values()))
    assert not np.array_equal(splits["train"], split_volumes(40, seed=4)["train"])
    data = SliceSet(np.zeros((60, 4, 4), np.uint8), np.zeros(60, np.int64), np.repeat(np.arange(12), 5))
    parts = split_slice_set(data, seed=1)
    volume_sets = [set(parts[s].volumes.tolist()) for s in ("train", "validation", "test")]
    assert not (volume_sets[0] & volume_sets[1] or volume_sets[0] & volume_sets[2] or volume_sets[1] & volume_sets[2])
    assert sum(len(p) for p in parts.values()) == 60


def test_class_weights_balance_the_classes():
    labels = np.array([0] * 50 + [1] * 10 + [4] * 40 + [EMPTY] * 7)
    weights = class_weights(labels)
    counts = np.bincount(labels[labels >= 0], minlength=len(REGIONS))
    contributions = weights * counts
    assert np.allclose(contributions[[0, 1, 4]], contributions[0])
    assert np.allclose(weights[[2, 3, 5]], 1.0)


def test_labels_and_study_options():
    assert list(encode_labels(["legs", None, "spine"])) == [0, EMPTY, 5]
    with pytest.raises(SegTuneError):
        encode_labels(["arm"])
    for seed in range(50):
        options = study_options(seed)
        if not options["spine"]:
            indices = [ORDERED_REGIONS.index(r) for r in options["regions"]]
            assert indices == list(range(indices[0], indices[-1] + 1))
    assert any(study_options(seed)["spine"] for seed in range(50))


def test_augmentation_is_seeded_and_identity_without_transform():
    images = torch.rand(4, 1, 32, 32)
    same = augment(images, torch.Generator().manual_seed(0), max_rotation_deg=0, max_shear=0, zoom=(1, 1),
                   max_translation=0, max_noise=0)
    assert torch.allclose(same, images, atol=1e-5)
    a = augment(images, torch.Generator().manual_seed(5))
    b = augment(images, torch.Generator().manual_seed(5))
    c = augment(images, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == images.shape and float(a.min()) >= 0 and float(a.max()) <= 1


def test_augmentation_translation_moves_content():
    images = torch.zeros(1, 1, 32, 32)
    images[0, 0, 14:18, 14:18] = 1
    moved = augment(images, torch.Generator().manual_seed(0), max_rotation_deg=0, max_shear=0, zoom=(1, 1),
                    max_translation=0.25, max_noise=0)
    assert not torch.allclose(moved, images)
    assert abs(float(moved.sum()) - 16.0) < 1.0  # moved, not lost (the square stays inside)
