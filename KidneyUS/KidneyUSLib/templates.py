"""Kidney templates φ0 for the template deformation segmenter (thesis §4.2.1, §4.4.3, §4.7).

- `mask_template(label)`: one ground-truth mask, whose image is then left out of training and
  testing (the thesis' choice).
- `mean_template(labels)`: a mean shape: every mask is aligned by its moments (centroid,
  principal axes and the spread along them) onto a common frame, the aligned masks are averaged
  and the mean shape is where at least half of them agree (largest component, holes filled).

A template is a float32 cube in (0, 1), an implicit shape as in §4.3: the logistic of the signed
distance to the boundary (voxels, positive inside, the boundary half-way between voxel centres),
so thresholding it at 0.5 returns the mask exactly and the warp has a gradient a few voxels either
side of the boundary (a plainly blurred mask would shrink small kidneys at 0.5).
The template is stored with the model (a buffer of TemplateNet, inside weights.safetensors).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from SegTuneCore.errors import SegTuneError

TEMPLATE_WIDTH = 1.0  # voxels of signed distance per unit of logit
KINDS = ("mask", "mean")
# defaults of the command-line options (TemplateConfig's; this module stays free of torch so
# `train --help` stays fast)
DEFAULT_PENALTY = 0.01
DEFAULT_FIELD_LEVEL = 1
GLOBAL_POOLING = ("average", "attention")  # the first is the default (the thesis)
LOCAL_BRANCHES = ("thesis", "registration")  # the first is the default
DEFAULT_LOCAL_WIDTH = 16


def add_template_arguments(parser) -> None:
    """The options of `--method template`, added to `train`'s parser and to template_training's."""
    group = parser.add_argument_group("template deformation (--method template)")
    group.add_argument("--template", choices=KINDS, default="mask",
                       help="mask: one mask left out of training and testing (thesis); mean: aligned mean shape")
    group.add_argument("--no-geometric", action="store_true", help="deformation only (G = identity)")
    group.add_argument("--no-deformation", action="store_true", help="global transform only (L = identity)")
    group.add_argument("--penalty", type=float, default=DEFAULT_PENALTY, help="λ of the displacement L2 penalty (eq. 4.11)")
    group.add_argument("--field-level", type=int, default=DEFAULT_FIELD_LEVEL,
                       help="U-Net decoder level of the displacement field (0: full resolution)")
    group.add_argument("--downsample", type=int, default=1, choices=(1, 2),
                       help="train on cubes averaged by this factor (2: 40^3 at 8 mm)")
    group.add_argument("--global-pooling", choices=GLOBAL_POOLING, default=GLOBAL_POOLING[0],
                       help="pooling of the 9 parameter maps: average (the thesis) or attention "
                            "(softmax-weighted, starts as average)")
    group.add_argument("--local-branch", choices=LOCAL_BRANCHES, default=LOCAL_BRANCHES[0],
                       help="thesis: one 3x3x3 convolution on the features, ψ = L∘G; registration: a two-level "
                            "net on the features and the template as G placed it, ψ = G∘L")
    group.add_argument("--local-width", type=int, default=DEFAULT_LOCAL_WIDTH,
                       help="channels of the registration local branch")
    group.add_argument("--global-loss", type=float, default=0.0,
                       help="weight of a second Dice loss on the template moved by G alone (0: the thesis' loss)")
    group.add_argument("--probability-input", action="store_true",
                       help="run the body to the U-Net's output and give its kidney probability to both "
                            "branches (with --init UNET: the template is fitted to what the U-Net sees)")
    group.add_argument("--freeze-body", action="store_true",
                       help="with --init: keep the U-Net body as trained, train only the global and local branches")
    group.add_argument("--feature-copies", type=int, default=3,
                       help="with --freeze-body: the body's features are computed once for each image and "
                            "N-1 augmented copies of it (the thesis drew its augmented copies before training)")


def soft_template(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    signed = np.where(mask, ndimage.distance_transform_edt(mask) - 0.5, 0.5 - ndimage.distance_transform_edt(~mask))
    return (1.0 / (1.0 + np.exp(-signed / TEMPLATE_WIDTH))).astype(np.float32)


def mask_template(label: np.ndarray) -> np.ndarray:
    mask = np.asarray(label) > 0
    if mask.ndim != 3 or not mask.any():
        raise SegTuneError("a template needs a non-empty 3D mask")
    return soft_template(mask)


def moments(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centroid, principal axes as columns sorted by decreasing spread, spread = std along each), index order."""
    points = np.argwhere(mask).astype(np.float64)
    if len(points) < 4:
        raise SegTuneError("a mask needs at least 4 voxels to be aligned")
    centroid = points.mean(0)
    covariance = np.cov((points - centroid).T)
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1]
    return centroid, vectors[:, order], np.sqrt(np.maximum(values[order], 1e-6))


def _orient_like(axes: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Flip the principal axes to point like the reference's, keeping a right-handed frame."""
    axes = axes * np.where(np.sum(axes * reference, axis=0) < 0, -1.0, 1.0)
    if np.linalg.det(axes) * np.linalg.det(reference) < 0:
        axes[:, 2] *= -1
    return axes


def align_to(mask: np.ndarray, centroid: np.ndarray, axes: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """The mask (soft, float32) moved so its moments become (centroid, axes, spread)."""
    own_centroid, own_axes, own_spread = moments(mask)
    own_axes = _orient_like(own_axes, axes)
    # output point x -> input point: own_c + own_axes·diag(own_spread / spread)·axesᵀ·(x − c)
    matrix = own_axes @ np.diag(own_spread / spread) @ axes.T
    offset = own_centroid - matrix @ centroid
    return ndimage.affine_transform(mask.astype(np.float32), matrix, offset, order=1, mode="constant")


def mean_template(labels: Sequence[np.ndarray]) -> np.ndarray:
    """Mean shape of masks aligned by moments, placed at their mean centroid, axes and spread."""
    masks = [np.asarray(label) > 0 for label in labels]
    if not masks:
        raise SegTuneError("a mean template needs at least one mask")
    if any(m.shape != masks[0].shape for m in masks):
        raise SegTuneError("the masks of a mean template must share one grid")
    frames = [moments(m) for m in masks]
    reference_axes = frames[0][1]
    centroid = np.mean([f[0] for f in frames], axis=0)
    spread = np.exp(np.mean([np.log(f[2]) for f in frames], axis=0))
    mean = np.mean([align_to(m, centroid, reference_axes, spread) for m in masks], axis=0)
    shape = mean >= 0.5
    components, count = ndimage.label(shape)
    if count == 0:
        raise SegTuneError("the aligned masks share no voxel: no mean shape")
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    shape = ndimage.binary_fill_holes(components == np.argmax(sizes))
    return soft_template(shape)


def build_template(kind: str, labels: Sequence[np.ndarray]) -> np.ndarray:
    """"mask": the first label alone; "mean": the mean shape of all of them."""
    if kind == "mask":
        return mask_template(labels[0])
    if kind == "mean":
        return mean_template(labels)
    raise SegTuneError(f"unknown template kind {kind!r} ({', '.join(KINDS)})")
