"""The region decision of §2.6.4: exact dynamic program, smoothing in mm, invariants."""

import itertools

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from MRIFieldOfViewLib.decision import (
    best_ordered_labelling, boundary_errors, decide, gaussian_smooth, slice_boundaries,
)
from MRIFieldOfViewLib.regions import ORDERED_REGIONS, REGIONS


def is_admissible(labels, n_states):
    """Each state one contiguous block, blocks in state order (checked directly, not via sorting)."""
    first_seen = {}
    for z, s in enumerate(labels):
        if s in first_seen and labels[z - 1] != s:
            return False  # the state came back after another one: not contiguous
        first_seen.setdefault(s, z)
    starts = [first_seen[s] for s in range(n_states) if s in first_seen]
    return starts == sorted(starts)


def brute_force(scores, weights):
    n, k = scores.shape
    best = -np.inf
    for labels in itertools.product(range(k), repeat=n):
        if is_admissible(labels, k):
            best = max(best, sum(weights[z] * scores[z, s] for z, s in enumerate(labels)))
    return best


@pytest.mark.parametrize("seed", range(40))
def test_dynamic_program_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 8)), int(rng.integers(1, 6))
    scores = rng.random((n, k))
    if seed % 3 == 0:
        scores = np.round(scores, 1)  # ties
    weights = rng.uniform(0.2, 3.0, n)
    labels, total = best_ordered_labelling(scores, weights)
    assert total == pytest.approx(brute_force(scores, weights), abs=1e-12)
    assert is_admissible(tuple(labels), k)
    assert total == pytest.approx(sum(weights[z] * scores[z, s] for z, s in enumerate(labels)))


def test_dynamic_program_scales_linearly_in_slices():
    rng = np.random.default_rng(0)
    labels, _ = best_ordered_labelling(rng.random((3000, 7)))
    assert labels.shape == (3000,) and np.all(np.diff(labels) >= 0)


def brute_force_decision(smoothed, empty, thickness):
    """Best objective over every assignment of slices to {empty, 6 regions} with the documented
    constraints: body = empty* then ordered regions (each one block, at most once) then empty*;
    spine = empty* spine+ empty*."""
    labels = (None,) + REGIONS
    best = -np.inf
    for assignment in itertools.product(labels, repeat=len(smoothed)):
        names = [a for a in assignment if a is not None]
        inner = [i for i, a in enumerate(assignment) if a is not None]
        if inner and any(assignment[i] is None for i in range(inner[0], inner[-1] + 1)):
            continue  # an empty slice between two regions
        if "spine" in names and set(names) != {"spine"}:
            continue
        blocks = [name for i, name in enumerate(names) if i == 0 or names[i - 1] != name]
        if len(blocks) != len(set(blocks)):
            continue
        if "spine" not in names and blocks != sorted(blocks, key=ORDERED_REGIONS.index):
            continue
        value = 0.0
        for z, a in enumerate(assignment):
            value += thickness[z] * (empty[z] if a is None else (1 - empty[z]) * smoothed[z, REGIONS.index(a)])
        best = max(best, value)
    return best


@pytest.mark.parametrize("seed", range(12))
def test_decision_is_the_exact_optimum(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 6))
    probabilities = rng.dirichlet(np.full(6, 0.5), size=n)
    positions = np.sort(rng.uniform(0, 50, n)) + np.arange(n)  # distinct, non-uniform
    empty = (rng.random(n) < 0.3).astype(float)
    decision = decide(probabilities, positions, empty=empty, sigma_mm=0.0)
    thickness = np.diff(slice_boundaries(positions))
    assert decision.score == pytest.approx(brute_force_decision(probabilities, empty, thickness), abs=1e-12)


def check_invariants(decision, k_indices, positions):
    names = [r.name for r in decision.regions]
    assert len(names) == len(set(names))
    if "spine" in names:
        assert names == ["spine"]
    else:
        assert names == sorted(names, key=ORDERED_REGIONS.index)
    labels = np.array(decision.slice_labels, dtype=object)
    for region in decision.regions:
        ks = np.asarray(k_indices)[labels == region.name]
        assert ks.min() == region.first_slice and ks.max() == region.last_slice
        # contiguous along the patient axis: every slice between its ends belongs to it
        inside = (positions >= positions[labels == region.name].min()) & (positions <= positions[labels == region.name].max())
        assert np.all(labels[inside] == region.name)
        assert region.inferior_mm < region.superior_mm
    for below, above in zip(decision.regions, decision.regions[1:]):
        assert below.superior_mm == pytest.approx(above.inferior_mm)  # adjacent: no gap, no overlap


@pytest.mark.parametrize("seed", range(30))
def test_invariants_on_random_noisy_volumes(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 120))
    probabilities = rng.dirichlet(np.full(6, 0.3), size=n)
    positions = -40.0 + 2.5 * np.arange(n)
    k_indices = np.arange(n)
    if seed % 2:
        positions = positions[::-1].copy()  # k runs from head to feet
    empty = np.zeros(n)
    empty[: int(rng.integers(0, 4))] = 1
    decision = decide(probabilities, positions, k_indices, empty=empty, sigma_mm=float(rng.choice([0, 5, 20])))
    check_invariants(decision, k_indices, positions)


def synthetic_body(n=100, spacing=3.0, noise=0.35, seed=0):
    """Probabilities of a legs..chest volume (25 slices each) with heavy per-slice noise."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(4), n // 4)
    probabilities = np.full((n, 6), 0.05)
    probabilities[np.arange(n), truth] = 0.75
    probabilities += noise * rng.random((n, 6))
    probabilities /= probabilities.sum(1, keepdims=True)
    return probabilities, spacing * np.arange(n), truth


def test_recovers_regions_from_noisy_probabilities():
    probabilities, positions, truth = synthetic_body()
    decision = decide(probabilities, positions, sigma_mm=6.0)
    assert [r.name for r in decision.regions] == ["legs", "pelvis", "abdomen", "chest"]
    assert decision.hypothesis == "body"
    predicted = np.array([ORDERED_REGIONS.index(label) for label in decision.slice_labels])
    assert np.mean(predicted == truth) >= 0.97
    pelvis = decision.regions[1]
    assert (pelvis.first_slice, pelvis.last_slice) == (25, 49)
    assert (pelvis.inferior_mm, pelvis.superior_mm) == pytest.approx((73.5, 148.5))


def test_empty_slices_are_unassigned_only_at_the_ends():
    probabilities, positions, _ = synthetic_body()
    empty = np.zeros(len(positions))
    empty[-10:] = 1    # above the head
    empty[40:43] = 1   # a dark band inside the body must not split a region
    decision = decide(probabilities, positions, empty=empty, sigma_mm=6.0)
    assert decision.slice_labels[-10:] == [None] * 10
    assert None not in decision.slice_labels[:-10]
    assert decision.regions[-1].last_slice == len(positions) - 11


def test_spine_volume_is_one_spine_region_and_body_volume_has_no_spine():
    n = 60
    rng = np.random.default_rng(3)
    spine = rng.dirichlet(np.full(6, 0.5), size=n) * 0.4
    spine[:, REGIONS.index("spine")] += 0.6
    decision = decide(spine, 4.0 * np.arange(n), empty=np.r_[np.ones(3), np.zeros(n - 3)], sigma_mm=8)
    assert decision.hypothesis == "spine"
    assert [(r.name, r.first_slice, r.last_slice) for r in decision.regions] == [("spine", 3, n - 1)]

    body, positions, _ = synthetic_body()
    body[30:45] = 0.0
    body[30:45, REGIONS.index("spine")] = 1.0  # a stretch confused with spine
    decision = decide(body, positions, sigma_mm=6.0)
    assert decision.hypothesis == "body" and "spine" not in [r.name for r in decision.regions]


def test_smoothing_matches_scipy_inside_uniform_volumes():
    rng = np.random.default_rng(1)
    values = rng.random((200, 6))
    ours = gaussian_smooth(values, 2.0 * np.arange(200), sigma_mm=6.0)
    reference = gaussian_filter1d(values, sigma=3.0, axis=0, truncate=8.0)
    assert np.allclose(ours[30:-30], reference[30:-30], atol=1e-9)


def test_smoothing_handles_non_uniform_unordered_positions():
    rng = np.random.default_rng(2)
    positions = np.cumsum(rng.uniform(0.5, 8.0, 40))
    values = rng.random((40, 3))
    thickness = rng.uniform(1, 3, 40)
    expected = np.array([
        sum(t * np.exp(-0.5 * ((x - y) / 5.0) ** 2) * v for y, t, v in zip(positions, thickness, values))
        / sum(t * np.exp(-0.5 * ((x - y) / 5.0) ** 2) for y, t in zip(positions, thickness))
        for x in positions
    ])
    assert np.allclose(gaussian_smooth(values, positions, 5.0, thickness), expected)
    shuffle = rng.permutation(40)
    assert np.allclose(gaussian_smooth(values[shuffle], positions[shuffle], 5.0, thickness[shuffle]), expected[shuffle])
    assert np.allclose(gaussian_smooth(np.ones((40, 2)), positions, 5.0), 1.0)


def test_decision_follows_physical_order_not_array_order():
    probabilities, positions, _ = synthetic_body()
    forward = decide(probabilities, positions, sigma_mm=6.0)
    n = len(positions)
    # the same slices stored head-first: k reversed, positions attached to their slices
    reversed_ = decide(probabilities[::-1], positions[::-1], sigma_mm=6.0)
    assert [(r.name, r.inferior_mm, r.superior_mm) for r in reversed_.regions] == \
        [(r.name, r.inferior_mm, r.superior_mm) for r in forward.regions]
    assert [(r.first_slice, r.last_slice) for r in reversed_.regions] == \
        [(n - 1 - r.last_slice, n - 1 - r.first_slice) for r in forward.regions]


def test_bad_probabilities_are_refused():
    with pytest.raises(ValueError):
        decide(np.full((3, 6), np.nan), np.arange(3.0))
    with pytest.raises(ValueError):
        decide(np.ones((3, 5)), np.arange(3.0))
    with pytest.raises(ValueError):
        decide(np.ones((3, 6)), np.arange(4.0))


def test_boundary_errors_count_slices_between_matching_transitions():
    truth = [None, "legs", "legs", "pelvis", "pelvis", "pelvis", "abdomen", "abdomen", None]
    predicted = [None, "legs", "legs", "legs", "pelvis", "pelvis", "pelvis", "abdomen", None]
    assert boundary_errors(predicted, truth) == [1.0, 1.0]
    assert boundary_errors(truth, truth) == [0.0, 0.0]
    # a missing transition (pelvis never predicted) is an infinite error
    assert boundary_errors(["legs"] * 5 + ["abdomen"] * 4, truth) == [float("inf"), float("inf")]
    assert boundary_errors(truth, ["spine"] * 9) == []
