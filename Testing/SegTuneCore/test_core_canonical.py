"""CanonicalFrame (axis permutation + flips to nearest RAS) and resample_to_reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from SegTuneCore.geometry import CanonicalFrame, Volume, read_volume, resample_to_reference

from core_testdata import KMEANS_LSA, ORIENTATIONS, rotation


def all_axis_orientations() -> dict[str, np.ndarray]:
    """Every signed permutation of the RAS axes (48), each also slightly tilted (oblique)."""
    cases = {}
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            directions = np.zeros((3, 3))
            for ijk, ras in enumerate(perm):
                directions[ras, ijk] = signs[ijk]
            name = "".join(("RAS" if s > 0 else "LPI")[r] for r, s in zip(perm, signs))
            cases[name] = directions
            cases[name + "_tilted"] = rotation([1.0, -0.4, 0.7], 20.0) @ directions
    return cases


CASES = {**all_axis_orientations(), **ORIENTATIONS}


def numbered_volume(directions: np.ndarray, channels: int = 0) -> Volume:
    shape = (4, 5, 6) + ((channels,) if channels else ())
    array = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)  # every voxel identifiable
    return Volume.from_geometry(array, spacing=(0.5, 1.5, 4.0), origin=(10.0, -20.0, 30.0), directions=directions)


@pytest.mark.parametrize("name", sorted(CASES))
def test_canonical_keeps_every_voxel_at_its_ras_position(name):
    source = numbered_volume(CASES[name])
    frame = CanonicalFrame.of(source)
    canonical = frame.canonical_volume(source.array)

    # Independent check: for every source voxel, its RAS position expressed in the canonical grid
    # must be an integer index holding the same value.
    k, j, i = np.meshgrid(*[np.arange(n) for n in source.array.shape], indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1)
    ras = source.ijk_to_ras_points(ijk)
    canonical_ijk = (np.c_[ras, np.ones(len(ras))] @ np.linalg.inv(canonical.ijk_to_ras).T)[:, :3]
    rounded = np.rint(canonical_ijk).astype(int)
    assert np.abs(canonical_ijk - rounded).max() < 1e-9
    np.testing.assert_array_equal(canonical.array[rounded[:, 2], rounded[:, 1], rounded[:, 0]], source.array.ravel())

    # Canonical axes point (nearest) to +R, +A, +S.
    directions = canonical.directions
    assert np.all(np.diag(directions) > 0)
    assert np.all(np.argmax(np.abs(directions), axis=0) == [0, 1, 2])
    # Spacing travels with its axis.
    np.testing.assert_allclose(sorted(frame.canonical_spacing), sorted(source.spacing))
    np.testing.assert_allclose(canonical.spacing, frame.canonical_spacing)


@pytest.mark.parametrize("name", ["LPS", "LSA", "oblique", "ASL_tilted", "PIL"])
@pytest.mark.parametrize("channels", [0, 2])
def test_from_canonical_is_the_exact_inverse(name, channels):
    source = numbered_volume(CASES[name], channels)
    frame = CanonicalFrame.of(source)
    canonical = frame.to_canonical(source.array)
    back = frame.from_canonical(canonical)
    assert back.dtype == source.array.dtype
    np.testing.assert_array_equal(back, source.array)
    # And the other way round, on an array that only lives on the canonical grid.
    other = np.random.default_rng(1).normal(size=canonical.shape).astype(np.float32)
    np.testing.assert_array_equal(frame.to_canonical(frame.from_canonical(other)), other)


@pytest.mark.parametrize("name", ["LSA", "oblique", "PIL_tilted"])
def test_resampling_canonical_back_equals_from_canonical(name):
    """Two independent routes back to the source grid: index arithmetic and resampling."""
    source = numbered_volume(CASES[name])
    frame = CanonicalFrame.of(source)
    canonical = frame.canonical_volume(source.array)
    resampled = resample_to_reference(canonical.array, canonical.ijk_to_ras, source, order=0, fill=-1)
    np.testing.assert_array_equal(resampled, frame.from_canonical(canonical.array))


def test_real_lsa_mri_canonical_frame():
    if not KMEANS_LSA.is_file():
        pytest.skip(f"{KMEANS_LSA} is absent (apt-get install insighttoolkit5-examples)")
    source = read_volume(KMEANS_LSA)
    frame = CanonicalFrame.of(source)
    # LSA at 2 x 2 x 3 mm: R <- i (2 mm), A <- k (3 mm), S <- j (2 mm).
    np.testing.assert_allclose(frame.canonical_spacing, [2.0, 3.0, 2.0])
    canonical = frame.canonical_volume(source.array)
    assert canonical.shape_ijk == (source.shape_ijk[0], source.shape_ijk[2], source.shape_ijk[1])
    np.testing.assert_allclose(canonical.directions, np.eye(3), atol=1e-6)
    # The first and last voxel corners cover the same RAS box as the source.
    for volume in (source, canonical):
        corners = volume.ijk_to_ras_points([[0, 0, 0], np.array(volume.shape_ijk) - 1])
        np.testing.assert_allclose(np.sort(corners, axis=0),
                                   np.sort(source.ijk_to_ras_points([[0, 0, 0], np.array(source.shape_ijk) - 1]), axis=0))
    np.testing.assert_array_equal(frame.from_canonical(canonical.array), source.array)


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("name", ["RAS", "oblique"])
def test_resample_identity(order, name):
    reference = Volume.from_geometry(np.random.default_rng(2).normal(size=(5, 6, 7)).astype(np.float32),
                                     spacing=(0.9, 1.2, 2.0), origin=(1.0, 2.0, 3.0), directions=ORIENTATIONS[name])
    out = resample_to_reference(reference.array, reference.ijk_to_ras, reference, order=order)
    np.testing.assert_allclose(out, reference.array, atol=1e-6)


def test_resample_known_shifts():
    rng = np.random.default_rng(3)
    directions = ORIENTATIONS["oblique"]
    spacing = np.array([0.9, 1.2, 2.0])
    reference = Volume.from_geometry(np.zeros((5, 6, 7), np.float32), spacing, (1.0, 2.0, 3.0), directions)
    array = rng.normal(size=(5, 6, 7)).astype(np.float32)

    # Source grid shifted by +2 voxels along j: reference voxel j reads source voxel j - 2.
    shifted = reference.ijk_to_ras.copy()
    shifted[:3, 3] += 2 * spacing[1] * directions[:, 1]
    out = resample_to_reference(array, shifted, reference, order=0, fill=-7.0)
    expected = np.full_like(array, -7.0)
    expected[:, 2:, :] = array[:, :-2, :]
    np.testing.assert_allclose(out, expected, atol=1e-6)

    # Half a voxel along i with trilinear interpolation: the mean of the two neighbours.
    half = reference.ijk_to_ras.copy()
    half[:3, 3] -= 0.5 * spacing[0] * directions[:, 0]
    out = resample_to_reference(array, half, reference, order=1)
    np.testing.assert_allclose(out[:, :, :-1], 0.5 * (array[:, :, :-1] + array[:, :, 1:]), atol=1e-5)

    # Entirely outside: everything is the fill value.
    far = reference.ijk_to_ras.copy()
    far[:3, 3] += 100 * directions[:, 2] * spacing[2]
    assert np.all(resample_to_reference(array, far, reference, order=1, fill=5.0) == 5.0)
