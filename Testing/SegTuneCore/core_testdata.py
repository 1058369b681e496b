"""Generated volumes shared by the SegTuneCore tests (imported through Testing/SegTuneCore/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from SegTuneCore.geometry import Volume

KMEANS_LSA = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz")
"""Debian insighttoolkit5-examples: a brain MRI stored LSA at 2 x 2 x 3 mm."""


def rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Rodrigues' formula: rotation about a unit axis (independent of SegTuneCore)."""
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    angle = np.radians(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


# Storage orientations as RAS direction columns of (i, j, k).
ORIENTATIONS = {
    "RAS": np.eye(3),
    "LPS": np.diag([-1.0, -1.0, 1.0]),
    "LSA": np.array([[-1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]]),
    "oblique": rotation([1.0, 2.0, 0.5], 27.0) @ np.diag([-1.0, -1.0, 1.0]),
    "oblique_LSA": rotation([0.3, -1.0, 2.0], 13.0) @ np.array([[-1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]]),
}


def generated_volume(orientation: str, dtype=np.int16, seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    shape_kji = (7, 9, 11)  # distinct sizes so that a transposed axis cannot go unnoticed
    if np.issubdtype(dtype, np.floating):
        array = rng.normal(0, 100, shape_kji).astype(dtype)
    else:
        info = np.iinfo(dtype)
        array = rng.integers(max(info.min, -1000), min(info.max, 2000), shape_kji, endpoint=True).astype(dtype)
    return Volume.from_geometry(array, spacing=(0.7, 1.3, 3.1), origin=(-121.5, 87.25, -310.125),
                                directions=ORIENTATIONS[orientation])


def generated_labels(orientation: str) -> Volume:
    """Three touching ellipsoids (labels 1, 2, 3) on an anisotropic grid of the given orientation."""
    k, j, i = np.meshgrid(np.arange(10), np.arange(13), np.arange(16), indexing="ij")
    labels = np.zeros(k.shape, dtype=np.uint8)
    for value, centre in ((1, (4, 5, 5)), (2, (5, 7, 10)), (3, (6, 4, 12))):
        inside = ((k - centre[0]) / 3.0) ** 2 + ((j - centre[1]) / 4.0) ** 2 + ((i - centre[2]) / 3.5) ** 2 <= 1
        labels[inside] = value
    return Volume.from_geometry(labels, spacing=(0.8, 1.1, 2.5), origin=(33.3, -12.5, 140.0),
                                directions=ORIENTATIONS[orientation])
