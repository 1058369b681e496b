"""From per-slice probabilities to contiguous anatomical regions (thesis §2.6.4, eq. 2.23).

Formulation (documented in docs/MRIFieldOfView.md):

1. Slices are ordered by their physical position along the patient axis (inferior -> superior),
   never by array index, and each slice z gets a thickness w(z): the distance between the
   mid-points to its neighbours (the end slices extend by half their neighbour gap).
2. Each class probability is smoothed along that axis with a Gaussian of standard deviation
   `sigma_mm` (a kernel-weighted mean with weights w(z') exp(-(x - x')^2 / 2 sigma^2), normalised
   per slice, so non-uniform positions and the volume ends are handled).
3. Every slice gets exactly one *state*. A hypothesis is an ordered list of states; a labelling
   is admissible when the state index never decreases from inferior to superior, so each state
   is one contiguous block, used at most once, possibly absent, and blocks appear in order.
   Eq. 2.23 maximises sum_i integral_{Z_i^m}^{Z_i^M} P_i(z) dz; its discrete form is
   sum_z w(z) S(z, state(z)), solved exactly by dynamic programming in O(slices x states).
4. Two hypotheses compete under the same objective and the larger total wins:
   - body:  [empty-below, legs, pelvis, abdomen, chest, head, empty-above]
   - spine: [empty-below, spine, empty-above]   (a dedicated spine examination)
   The empty states score E(z) (1 for a slice without body signal, else 0) and a region scores
   (1 - E(z)) P_r(z): empty slices are left unassigned only at the ends of the volume (as the
   empty slices above the head), never between two regions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from MRIFieldOfViewLib.regions import ORDERED_REGIONS, REGION_INDEX, REGIONS, SPINE

EMPTY = None  # label of a slice assigned to no region
DEFAULT_SMOOTHING_MM = 5.0  # chosen with `bench accuracy` on held-out phantoms (docs/MRIFieldOfView.md)


@dataclass(frozen=True)
class Region:
    name: str
    first_slice: int      # smallest k index of the region
    last_slice: int       # largest k index of the region
    inferior_mm: float    # patient-axis (S) coordinate of the region's inferior slab face
    superior_mm: float    # ... and of its superior face

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    regions: list[Region]             # in anatomical order, inferior first
    slice_labels: list[str | None]    # one per input slice (input order), None = empty slice
    smoothed: np.ndarray              # [N, 6] smoothed probabilities, input order
    hypothesis: str                   # "body" or "spine"
    score: float                      # the maximised objective (mm-weighted probability)


def slice_boundaries(sorted_positions: np.ndarray, single_thickness: float = 1.0) -> np.ndarray:
    """Slab faces [N + 1] of slices at ascending positions: mid-points, ends mirrored."""
    x = np.asarray(sorted_positions, dtype=np.float64)
    if x.size == 1:
        return np.array([x[0] - single_thickness / 2, x[0] + single_thickness / 2])
    middle = (x[1:] + x[:-1]) / 2
    first = x[0] - (x[1] - x[0]) / 2
    last = x[-1] + (x[-1] - x[-2]) / 2
    return np.concatenate([[first], middle, [last]])


def gaussian_smooth(values: np.ndarray, positions: np.ndarray, sigma_mm: float,
                    thickness: np.ndarray | None = None) -> np.ndarray:
    """Smooth values [N, C] along positions [N] (any order, non-uniform) with a Gaussian in mm."""
    values = np.asarray(values, dtype=np.float64)
    if sigma_mm <= 0 or len(values) < 2:
        return values.copy()
    x = np.asarray(positions, dtype=np.float64)
    w = np.ones_like(x) if thickness is None else np.asarray(thickness, dtype=np.float64)
    kernel = np.exp(-0.5 * ((x[:, None] - x[None, :]) / sigma_mm) ** 2) * w[None, :]
    return (kernel @ values) / kernel.sum(axis=1, keepdims=True)


def best_ordered_labelling(scores: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Exact maximiser of sum_z weights[z] * scores[z, label[z]] over non-decreasing labels.

    scores [N, K]; returns (labels [N] ints, total). O(N K) time via a running maximum.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n, k = scores.shape
    gain = scores * (np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64))[:, None]
    best = np.empty((n, k))
    came_from = np.zeros((n, k), dtype=np.int64)  # best previous state (<= current) for each state
    best[0] = gain[0]
    for z in range(1, n):
        # running argmax over states 0..s of best[z-1]; ties keep the earlier state
        previous = best[z - 1]
        arg = np.zeros(k, dtype=np.int64)
        for s in range(1, k):
            arg[s] = s if previous[s] > previous[arg[s - 1]] else arg[s - 1]
        came_from[z] = arg
        best[z] = gain[z] + previous[arg]
    labels = np.empty(n, dtype=np.int64)
    labels[-1] = int(np.argmax(best[-1]))
    for z in range(n - 1, 0, -1):
        labels[z - 1] = came_from[z, labels[z]]
    return labels, float(best[-1, labels[-1]])


# state list of each hypothesis: a region name, or EMPTY for the empty ends
BODY_STATES: tuple[str | None, ...] = (EMPTY, *ORDERED_REGIONS, EMPTY)
SPINE_STATES: tuple[str | None, ...] = (EMPTY, SPINE, EMPTY)


def _state_scores(states, smoothed: np.ndarray, empty: np.ndarray) -> np.ndarray:
    body = 1.0 - empty
    columns = [empty if s is EMPTY else body * smoothed[:, REGION_INDEX[s]] for s in states]
    return np.stack(columns, axis=1)


def decide(probabilities: np.ndarray, positions_mm: np.ndarray, k_indices: np.ndarray | None = None,
           *, empty: np.ndarray | None = None, sigma_mm: float = DEFAULT_SMOOTHING_MM,
           single_thickness: float = 1.0) -> Decision:
    """Regions from probabilities [N, 6] (columns in REGIONS order) at patient-axis positions [N].

    k_indices [N]: the array slice index of each row (default 0..N-1); empty [N]: truthy for
    slices with no body signal (default none). Positions are superior-positive (RAS S).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n = len(probabilities)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(REGIONS) or n == 0:
        raise ValueError(f"probabilities must be [N, {len(REGIONS)}] with N >= 1, got {probabilities.shape}")
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("probabilities contain NaN or inf")
    positions = np.asarray(positions_mm, dtype=np.float64)
    k_indices = np.arange(n) if k_indices is None else np.asarray(k_indices, dtype=np.int64)
    empty = np.zeros(n) if empty is None else np.asarray(empty, dtype=np.float64)
    if positions.shape != (n,) or k_indices.shape != (n,) or empty.shape != (n,):
        raise ValueError("positions, k_indices and empty must have one value per slice")

    order = np.argsort(positions, kind="stable")
    sorted_positions = positions[order]
    faces = slice_boundaries(sorted_positions, single_thickness)
    thickness = np.diff(faces)
    smoothed_sorted = gaussian_smooth(probabilities[order], sorted_positions, sigma_mm, thickness)
    empty_sorted = empty[order]

    candidates = []
    for name, states in (("body", BODY_STATES), ("spine", SPINE_STATES)):
        labels, total = best_ordered_labelling(_state_scores(states, smoothed_sorted, empty_sorted), thickness)
        candidates.append((total, name, [states[s] for s in labels]))
    # ties go to the body hypothesis (listed first)
    total, hypothesis, sorted_labels = max(candidates, key=lambda c: c[0])

    regions = []
    sorted_labels_array = np.array(sorted_labels, dtype=object)
    for name in REGIONS:
        rows = np.flatnonzero(sorted_labels_array == name)
        if rows.size:
            ks = k_indices[order[rows]]
            regions.append(Region(name, int(ks.min()), int(ks.max()),
                                  float(faces[rows[0]]), float(faces[rows[-1] + 1])))
    regions.sort(key=lambda r: r.inferior_mm)

    slice_labels: list[str | None] = [None] * n
    smoothed = np.empty_like(smoothed_sorted)
    for rank, row in enumerate(order):
        slice_labels[row] = sorted_labels[rank]
        smoothed[row] = smoothed_sorted[rank]
    return Decision(regions, slice_labels, smoothed, hypothesis, total)


def boundary_errors(predicted: list, truth: list) -> list[float]:
    """Per true region-to-region boundary, |predicted - true| position in slices (inf if missing).

    Both lists hold one label per slice in physical order (None = empty). A boundary is the gap
    between two adjacent slices with different region labels; the predicted boundary between
    the same two regions is the one nearest to the true one.
    """
    def transitions(labels):
        return [(z, labels[z], labels[z + 1]) for z in range(len(labels) - 1)
                if labels[z] != labels[z + 1] and labels[z] is not None and labels[z + 1] is not None]

    found = transitions(predicted)
    errors = []
    for z, below, above in transitions(truth):
        candidates = [abs(z - z2) for z2, b2, a2 in found if (b2, a2) == (below, above)]
        errors.append(float(min(candidates)) if candidates else float("inf"))
    return errors
