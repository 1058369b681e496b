"""Slice data sets for the classifier (§2.6.1): 128x128 slices, volume-wise split, augmentation.

Volumes come from phantoms generated in memory (numpy/scipy only, no SimpleITK) or from a folder
of real volumes with truth files. Each volume's slices go through `preprocessing.axial_slices`,
the same function inference uses. Slices are kept as uint8 (x/255) to fit many in memory.

Labels: the region index (regions.REGIONS), or EMPTY (-1) for slices with no body (above the
head). Empty slices are trained towards the uniform distribution ("no evidence"), so the
decision's dynamic program is not pulled towards any region there.

The split is volume-wise, 50/25/25 (train/validation/test) by a seeded permutation of the
volumes, so slices of one volume never land in two sets.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from SegTuneCore.errors import SegTuneError

from .preprocessing import SIZE, axial_slices
from .regions import ORDERED_REGIONS, REGION_INDEX, REGIONS

EMPTY = -1
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.5, 0.25, 0.25)
# Phantom seeds at or above this are never used for training (evaluation and tests draw there).
HELD_OUT_SEED_START = 1_000_000


@dataclass
class SliceSet:
    images: np.ndarray   # uint8 [N, SIZE, SIZE]
    labels: np.ndarray   # int64 [N], region index or EMPTY
    volumes: np.ndarray  # int64 [N], which volume each slice came from

    def __len__(self) -> int:
        return len(self.labels)

    def float_images(self, indices=None) -> np.ndarray:
        images = self.images if indices is None else self.images[indices]
        return images.astype(np.float32) / 255.0

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels[self.labels >= 0], minlength=len(REGIONS))

    @staticmethod
    def concatenate(parts: list["SliceSet"]) -> "SliceSet":
        if not parts:
            return SliceSet(np.zeros((0, SIZE, SIZE), np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64))
        return SliceSet(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                        np.concatenate([p.volumes for p in parts]))


def encode_labels(slice_labels) -> np.ndarray:
    """Region names (None = empty) -> int64 indices (EMPTY for None)."""
    try:
        return np.array([EMPTY if name is None else REGION_INDEX[name] for name in slice_labels], dtype=np.int64)
    except KeyError as exc:
        raise SegTuneError(f"unknown region {exc.args[0]!r} in slice labels; expected one of {', '.join(REGIONS)}") from None


def quantise(images: np.ndarray) -> np.ndarray:
    return np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)


def study_options(seed: int) -> dict:
    """The study a dataset phantom seed stands for: a random contiguous run of regions
    (a whole body in a quarter of the volumes) or, in 15 %, a dedicated spine study."""
    rng = np.random.default_rng([seed, 20170418])
    if rng.random() < 0.15:
        return {"regions": None, "spine": True}
    if rng.random() < 0.25:
        return {"regions": list(ORDERED_REGIONS), "spine": False}
    first = int(rng.integers(0, 5))
    last = int(rng.integers(first, 5))
    return {"regions": list(ORDERED_REGIONS[first:last + 1]), "spine": False}


def phantom_volume_slices(seed: int, max_slices: int | None = None, max_matrix: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images, labels) of the study phantom `seed`; at most max_slices (a seeded subset,
    the only slices rendered)."""
    from SegTuneCore.geometry import Volume

    from .phantom import make_phantom

    phantom = make_phantom(seed, max_matrix=max_matrix, max_slices=max_slices, **study_options(seed))
    stack = axial_slices(Volume(phantom.array, phantom.ijk_to_ras))
    labels = encode_labels(phantom.slice_labels)[stack.k_indices]
    return quantise(stack.images), labels


def _volume_task(args):
    return phantom_volume_slices(*args)


def phantom_slice_set(seeds, max_slices: int | None = 48, max_matrix: int = 256, workers: int = 1,
                      on_volume=None) -> SliceSet:
    """Slices of the study phantoms `seeds` (volume id = position in seeds)."""
    seeds = [int(s) for s in seeds]
    parts = []
    tasks = [(seed, max_slices, max_matrix) for seed in seeds]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(_volume_task, tasks)
            for volume, (images, labels) in enumerate(results):
                parts.append(SliceSet(images, labels, np.full(len(labels), volume, np.int64)))
                if on_volume:
                    on_volume(volume + 1, len(seeds))
    else:
        for volume, task in enumerate(tasks):
            images, labels = _volume_task(task)
            parts.append(SliceSet(images, labels, np.full(len(labels), volume, np.int64)))
            if on_volume:
                on_volume(volume + 1, len(seeds))
    return SliceSet.concatenate(parts)


def split_volumes(count: int, seed: int) -> dict[str, np.ndarray]:
    """Volume indices per split (50/25/25, at least one volume per split when count >= 3)."""
    order = np.random.default_rng([seed, 2]).permutation(count)
    n_train = int(round(count * SPLIT_FRACTIONS[0]))
    n_validation = int(round(count * SPLIT_FRACTIONS[1]))
    if count >= 3:
        n_train = min(max(n_train, 1), count - 2)
        n_validation = min(max(n_validation, 1), count - n_train - 1)
    return {"train": np.sort(order[:n_train]), "validation": np.sort(order[n_train:n_train + n_validation]),
            "test": np.sort(order[n_train + n_validation:])}


def split_slice_set(data: SliceSet, seed: int) -> dict[str, SliceSet]:
    count = int(data.volumes.max()) + 1 if len(data) else 0
    splits = split_volumes(count, seed)
    out = {}
    for name, volumes in splits.items():
        mask = np.isin(data.volumes, volumes)
        out[name] = SliceSet(data.images[mask], data.labels[mask], data.volumes[mask])
    return out


def folder_pairs(folder: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(volume, truth JSON) pairs of a training folder: NAME.<volume suffix> next to NAME.json,
    all checked (headers, slice counts) before anything trains; one error names every offending file."""
    from SegTuneCore.training_data import check_training_folder

    return check_training_folder(folder, label_kind="slice-json")


def folder_slice_set(folder, max_slices: int | None = None, on_volume=None) -> SliceSet:
    """Slices of real (or saved phantom) volumes with truth files {"slice_labels": [...]}."""
    from SegTuneCore.geometry import read_volume

    pairs = folder_pairs(folder)
    parts = []
    for volume_id, (volume_path, truth_path) in enumerate(pairs):
        try:
            slice_labels = json.loads(truth_path.read_text())["slice_labels"]
        except (ValueError, KeyError, TypeError):
            raise SegTuneError(f"{truth_path}: expected JSON with a \"slice_labels\" list") from None
        volume = read_volume(volume_path)
        stack = axial_slices(volume)
        if len(slice_labels) != len(stack):
            raise SegTuneError(f"{truth_path}: {len(slice_labels)} labels for {len(stack)} slices in {volume_path.name}")
        labels = encode_labels(slice_labels)[stack.k_indices]
        keep = np.arange(len(labels))
        if max_slices is not None and len(keep) > max_slices:
            keep = np.sort(np.random.default_rng([volume_id, 1]).choice(keep, max_slices, replace=False))
        parts.append(SliceSet(quantise(stack.images[keep]), labels[keep], np.full(len(keep), volume_id, np.int64)))
        if on_volume:
            on_volume(volume_id + 1, len(pairs))
    return SliceSet.concatenate(parts)


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Inverse-frequency weights (mean 1 over present classes); absent classes get weight 1."""
    counts = np.bincount(labels[labels >= 0], minlength=len(REGIONS)).astype(np.float64)
    present = counts > 0
    weights = np.ones(len(REGIONS))
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


def augment(images, generator, max_rotation_deg=12.0, max_shear=0.12, zoom=(0.85, 1.15),
            max_translation=0.1, max_noise=0.03):
    """Random affine (rotation, shear, zoom, translation) and Gaussian noise on a batch [B,1,H,W].

    `generator` is a torch.Generator on the batch's device, so augmentation is seeded.
    """
    import torch
    import torch.nn.functional as F

    batch = images.shape[0]
    device = images.device

    def uniform(low, high):
        return low + (high - low) * torch.rand(batch, generator=generator, device=device)

    angle = torch.deg2rad(uniform(-max_rotation_deg, max_rotation_deg))
    shear = uniform(-max_shear, max_shear)
    scale = uniform(*zoom)
    tx, ty = uniform(-max_translation, max_translation) * 2, uniform(-max_translation, max_translation) * 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    # theta maps output coordinates to input coordinates (normalised, align_corners=False):
    # rotation . shear / zoom, then translation.
    theta = torch.zeros(batch, 2, 3, device=device)
    theta[:, 0, 0] = (cos - sin * shear) / scale
    theta[:, 0, 1] = (cos * shear - sin) / scale
    theta[:, 1, 0] = sin / scale
    theta[:, 1, 1] = cos / scale
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sigma = uniform(0.0, max_noise).view(batch, 1, 1, 1)
    out = out + sigma * torch.randn(out.shape, generator=generator, device=device)
    return out.clamp_(0.0, 1.0)
