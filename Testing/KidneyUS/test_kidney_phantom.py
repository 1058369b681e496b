"""The ultrasound kidney phantom: determinism, grids, populations, speckle calibration, fast path."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from KidneyUSLib import phantom, preprocessing
from KidneyUSLib.data import speckle_calibration

SMALL = dict(spacing=(1.4, 1.3, 1.45), size=(110, 130, 100))


def test_same_seed_same_phantom_other_seed_other_phantom():
    first, first_label = phantom.generate_phantom("child", 11, **SMALL)
    again, again_label = phantom.generate_phantom("child", 11, **SMALL)
    other, _ = phantom.generate_phantom("child", 12, **SMALL)
    assert np.array_equal(first.array, again.array) and np.array_equal(first_label.array, again_label.array)
    assert np.array_equal(first.ijk_to_ras, again.ijk_to_ras)
    assert not np.array_equal(first.array, other.array)
    assert first.array.dtype == np.uint8 and first_label.array.dtype == np.uint8
    assert set(np.unique(first_label.array)) == {0, 1}
    assert first.array.shape == (100, 130, 110)  # [k, j, i] for size (i, j, k)
    np.testing.assert_allclose(first.spacing, SMALL["spacing"])


def test_default_native_grids_are_in_the_documented_ranges_and_any_orientation():
    orders = set()
    for seed in range(30):
        scene = phantom.draw_scene("adult" if seed % 2 else "child", seed)
        assert scene.size_ijk.min() >= 150 and scene.size_ijk.max() <= 250
        assert scene.spacing_ijk.min() >= 0.4 - 1e-9 and scene.spacing_ijk.max() <= 1.0 + 1e-9
        ijk_to_ras = scene.probe_to_ras @ scene.ijk_to_probe()
        directions = ijk_to_ras[:3, :3] / scene.spacing_ijk
        np.testing.assert_allclose(directions.T @ directions, np.eye(3), atol=1e-12)
        assert np.allclose(np.abs(directions).max(axis=0), 1.0)  # not oblique: a signed permutation
        orders.add(tuple(np.argmax(np.abs(directions), axis=0)) + tuple(np.sign(directions.sum(axis=0))))
    assert len(orders) > 5, "storage orientation should vary between seeds"


def test_oblique_grids_are_rotated_but_keep_their_nearest_axes():
    for seed in range(10):
        plain = phantom.draw_scene("adult", seed, oblique=False)
        oblique = phantom.draw_scene("adult", seed, oblique=True)
        directions = (oblique.probe_to_ras @ oblique.ijk_to_probe())[:3, :3] / oblique.spacing_ijk
        np.testing.assert_allclose(directions.T @ directions, np.eye(3), atol=1e-12)
        angle = np.degrees(np.arccos(np.clip(np.abs(directions).max(axis=0), -1, 1))).max()
        assert 5 < angle <= phantom.MAX_OBLIQUE_DEG + 1e-6
        plain_directions = (plain.probe_to_ras @ plain.ijk_to_probe())[:3, :3] / plain.spacing_ijk
        assert np.array_equal(preprocessing.canonical_directions(plain_directions).round(),
                              preprocessing.canonical_directions(directions).round())


def _principal_length_mm(label: np.ndarray, spacing_mm: float) -> float:
    """Length along the first principal axis, from the voxels' extreme projections."""
    points = np.argwhere(label > 0) * spacing_mm
    centred = points - points.mean(axis=0)
    axis = np.linalg.eigh(np.cov(centred.T))[1][:, -1]
    projection = centred @ axis
    return float(projection.max() - projection.min() + spacing_mm)


def test_adults_have_larger_kidneys_than_children_and_children_have_hydronephrosis():
    lengths, volumes = {"adult": [], "child": []}, {"adult": [], "child": []}
    for population in ("adult", "child"):
        for seed in range(4):
            _, label = phantom.generate_training_pair(population, seed)
            lengths[population].append(_principal_length_mm(label, 4.0))
            volumes[population].append(label.sum() * 64 / 1000.0)
    assert 95 <= np.mean(lengths["adult"]) <= 130, lengths["adult"]
    assert 50 <= np.mean(lengths["child"]) <= 100, lengths["child"]
    assert np.mean(volumes["adult"]) > 1.8 * np.mean(volumes["child"])
    hydronephrosis = [phantom.draw_scene("child", seed).hydronephrosis > 0 for seed in range(300)]
    assert 0.22 <= np.mean(hydronephrosis) <= 0.38
    assert not any(phantom.draw_scene("adult", seed).hydronephrosis for seed in range(50))
    child, adult = phantom.draw_scene("child", 1), phantom.draw_scene("adult", 1)
    assert child.cortex_mm < adult.cortex_mm and child.noise > adult.noise


def _fluid_fraction(scene) -> float:
    """Share of kidney points (a grid in the kidney's frame) at the fluid's echo level."""
    scene.ribs, scene.attenuation = scene.ribs[:0], 0.0  # no shadows or depth loss: echo levels only
    q = np.stack(np.meshgrid(*[np.linspace(-0.9, 0.9, 25)] * 3, indexing="ij"), -1).reshape(-1, 3)
    points = scene.kidney_centre + (q * scene.kidney_scale) @ scene.kidney_axes.T
    amplitude, label, _ = phantom.render_scene(scene, points)
    return float((amplitude[label] < 2 * scene.echo["fluid"] * scene.gain).mean())


def test_hydronephrosis_is_dark_inside_the_kidney():
    sick = next(s for s in range(100) if phantom.draw_scene("child", s).hydronephrosis)
    healthy = next(s for s in range(100) if not phantom.draw_scene("child", s).hydronephrosis)
    assert 0.05 < _fluid_fraction(phantom.draw_scene("child", sick)) < 0.7
    assert _fluid_fraction(phantom.draw_scene("child", healthy)) == 0.0


def test_phantom_speckle_matches_the_committed_calibration_of_the_real_ultrasound():
    calibration = json.loads((Path(speckle_calibration.__file__).with_name("speckle_calibration.json")).read_text())
    real = calibration["real"]
    stats = speckle_calibration.statistics(speckle_calibration.patches(speckle_calibration.phantom_speckle(seed=3)),
                                           0.5, {"axial": 0, "elevational": 1, "lateral": 2})
    assert abs(stats["snr_pooled"] - real["snr_pooled"]) < 0.15
    assert abs(stats["nakagami_m"] - real["nakagami_m"]) < 0.15
    assert stats["ks_nakagami"] < 0.03  # the samples are Nakagami-like
    for direction in ("axial", "lateral", "elevational"):
        assert stats["speckle_fwhm_mm"][direction] == pytest.approx(real["speckle_fwhm_mm"][direction], rel=0.15)
    # the speckle is larger across the beam than along it, as in the real volume
    assert stats["speckle_fwhm_mm"]["axial"] < stats["speckle_fwhm_mm"]["lateral"] < stats["speckle_fwhm_mm"]["elevational"]


def test_rayleigh_envelope_mean_display_formula_against_monte_carlo():
    rng = np.random.default_rng(0)
    amplitude = np.array([0.2, 0.6, 1.0], dtype=np.float32)[:, None] * np.ones((3, 200_000), dtype=np.float32)
    envelope = phantom.speckle_envelope(rng, amplitude, 0.1, None)
    observed = phantom._display(envelope).mean(axis=1)
    expected = phantom._mean_display(amplitude[:, 0], 0.1)
    np.testing.assert_allclose(observed, expected, rtol=0.03)  # clipping at 255 is rare at these levels


def test_fast_training_pair_matches_preprocessing_the_native_phantom():
    volume, label = phantom.generate_phantom("child", 5)
    cube, info = preprocessing.preprocess(volume)
    native_label = preprocessing.resample_to_cube(label.array, info) >= 0.5
    fast_cube, fast_label = phantom.generate_training_pair("child", 5)
    assert fast_cube.shape == fast_label.shape == (80, 80, 80)
    assert fast_cube.dtype == np.float32 and fast_label.dtype == np.uint8
    overlap = 2 * (native_label & (fast_label > 0)).sum() / (native_label.sum() + fast_label.sum())
    assert overlap >= 0.93
    # same image in the same frame: the two cubes correlate, and kidney/background contrast agrees
    inside = ndimage.binary_erosion(fast_cube > 0, iterations=2) & ndimage.binary_erosion(cube > 0, iterations=2)
    smooth = [ndimage.gaussian_filter(c, 1.5)[inside] for c in (cube, fast_cube)]
    assert np.corrcoef(*smooth)[0, 1] > 0.8
    kidney = ndimage.binary_erosion(native_label, iterations=1) & inside
    around = ndimage.binary_dilation(native_label, iterations=4) & ~ndimage.binary_dilation(native_label, iterations=1) & inside
    contrast = [c[kidney].mean() / c[around].mean() for c in (cube, fast_cube)]
    assert contrast[1] == pytest.approx(contrast[0], rel=0.2)
