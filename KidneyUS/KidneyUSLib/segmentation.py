"""Kidney segmentation of a 3D ultrasound volume: validate -> preprocess -> network -> postprocess.

Files and arrays in and out, no Slicer. The result always lies on the input's exact grid. torch is
imported only when a network is loaded (`load_network`), so validation and the file checks run
anywhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from SegTuneCore.errors import SegTuneError
from SegTuneCore.geometry import Segment, Volume, check_3d_shape

from .preprocessing import CUBE_SPACING, postprocess, preprocess

TASK = "KidneyUS.segmentation"
KIDNEY = Segment("Kidney", 1, (0.86, 0.55, 0.42))
# the architecture name in model.json for each --method
METHOD_ARCHITECTURES = {"unet": "unet3d", "transfer": "unet3d-transfer", "template": "template-deformation"}
# Largest input: 2^28 voxels (e.g. 645^3; 1 GiB as float32) and 2048 voxels along an axis. The
# pipeline holds a few float32 copies of the input, so this bounds memory to a few GiB.
MAX_VOXELS = 2**28
MAX_SIDE = 2048
MIN_EXTENT_MM = 2 * CUBE_SPACING  # thinner, no voxel of the network's grid may fall inside the input


def validate_volume(volume: Volume, name: str = "input") -> None:
    """Raise a one-line SegTuneError unless the volume is a finite, non-constant 3D scalar volume."""
    array = np.asarray(volume.array)
    check_3d_shape(name, array.shape[::-1])
    if array.size > MAX_VOXELS or max(array.shape) > MAX_SIDE:
        raise SegTuneError(f"{name}: {'x'.join(map(str, array.shape[::-1]))} voxels is beyond the limit "
                           f"({MAX_VOXELS} voxels, {MAX_SIDE} along an axis); crop or resample it first")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise SegTuneError(f"{name}: voxel type {array.dtype} is not a real scalar")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise SegTuneError(f"{name}: contains NaN or infinite voxels")
    if np.issubdtype(array.dtype, np.floating) and np.abs(array).max() > np.finfo(np.float32).max:
        raise SegTuneError(f"{name}: voxel values beyond the float32 range (|v| > 3.4e38); rescale the volume first")
    if array.min() == array.max():
        raise SegTuneError(f"{name}: is empty (every voxel is {array.flat[0]})")
    matrix = np.asarray(volume.ijk_to_ras, dtype=np.float64)
    if not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise SegTuneError(f"{name}: its voxel-to-RAS matrix is not invertible")
    cosines = volume.directions.T @ volume.directions
    if np.abs(cosines - np.eye(3)).max() > 1e-4:  # volumes and Slicer's volume nodes have perpendicular axes
        angle = np.degrees(np.arccos(np.clip(np.abs(cosines[~np.eye(3, dtype=bool)]).max(), 0, 1)))
        raise SegTuneError(f"{name}: its voxel axes are not perpendicular (a sheared grid, {angle:.2f}° between two "
                           f"axes); resample it onto a rectangular grid first")
    extent = np.asarray(volume.shape_ijk) * volume.spacing
    if extent.min() < MIN_EXTENT_MM:
        raise SegTuneError(f"{name}: its field of view is {' x '.join(f'{e:g}' for e in np.round(extent, 2))} mm; "
                           f"at least {MIN_EXTENT_MM:g} mm along every axis is needed")


def resolve_model(name: str | None = None, method: str | None = None, store=None):
    """The model store entry to use; refuses models of another task or another method.

    Without a name, a method picks the default of its own architecture: the active model if it is
    one, else the newest installed one, else a bundled one — so `--method template` finds the
    template model while the U-Net stays the active default.
    """
    from SegTuneCore.models import ModelStore, verify_model

    if method is not None and method not in METHOD_ARCHITECTURES:
        raise SegTuneError(f"unknown method {method!r} (use {' or '.join(METHOD_ARCHITECTURES)})")
    store = store or ModelStore()
    if name is None and method is not None:
        matching = [e for e in store.list(TASK) if e.meta["architecture"]["name"] == METHOD_ARCHITECTURES[method]]
        installed = [e for e in matching if not e.bundled]
        entry = (next((e for e in matching if e.active), None) or (installed[-1] if installed else None)
                 or next(iter(matching), None))
        if entry is None:
            raise SegTuneError(f"no {method} model installed or bundled for {TASK}: train one "
                               f"(train --method {method}) and install it, or choose one with --model")
        verify_model(entry.path, task=TASK)
    else:
        entry = store.resolve(TASK, name)
    if entry.meta.get("task") != TASK:
        raise SegTuneError(f"{entry.path}: a model for task {entry.meta.get('task')!r}, expected {TASK!r}")
    architecture = entry.meta["architecture"]["name"]
    if method is not None and architecture != METHOD_ARCHITECTURES[method]:
        raise SegTuneError(f"model {entry.version!r} is a {architecture!r} network, not a {method!r} one; "
                           f"choose a {method} model with --model")
    return entry


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks (non-zero voxels); two empty masks agree (1.0)."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


@dataclass
class SegmentationResult:
    labels: np.ndarray  # uint8 0/1 on the input grid
    volume_ml: float
    timings_s: dict = field(default_factory=dict)
    network: dict = field(default_factory=dict)  # what the segmenter reports, e.g. the template's folded_fraction
    warnings: list[str] = field(default_factory=list)  # what a reader of the result must check


# Below this Dice between a template model's output and its own U-Net, the kidney it drew is
# mostly the template's prior: the image may show no kidney, or only part of one.
MIN_UNET_AGREEMENT = 0.5
# Smaller than any whole kidney (a newborn's is about 10 mL): a false positive or a kidney cut by
# the field of view.
MIN_KIDNEY_ML = 5.0


def result_warnings(labels: np.ndarray, volume_ml: float, network_info: dict) -> list[str]:
    warnings = []
    if not labels.any():
        warnings.append("no kidney found: the segmentation is empty (is there a kidney in the image?)")
    elif volume_ml < MIN_KIDNEY_ML:
        warnings.append(f"the kidney found is {volume_ml:.2f} mL, smaller than any whole kidney (< {MIN_KIDNEY_ML:g} mL): "
                        "the image may show no kidney, or only part of one; check the result")
    agreement = network_info.get("unet_dice")
    if agreement is not None and agreement < MIN_UNET_AGREEMENT:
        warnings.append(f"the template's kidney and the model's own U-Net agree poorly (Dice {agreement:.2f} < "
                        f"{MIN_UNET_AGREEMENT}): the image may show no kidney, or only part of one; check the result")
    return warnings


def check_threshold(threshold: float) -> None:
    if not 0.0 < threshold < 1.0:  # also refuses NaN
        raise SegTuneError(f"the probability threshold must be between 0 and 1, got {threshold}")


def segment_volume(volume: Volume, segmenter, threshold: float = 0.5, largest_component: bool = True,
                   progress=None) -> SegmentationResult:
    """Run a `segmenter` (cube -> probability cube) on a validated volume."""
    report = progress or (lambda fraction, message: None)
    timings = {}
    start = time.perf_counter()
    check_threshold(threshold)
    validate_volume(volume)
    report(0.05, "pre-processing")
    cube, info = preprocess(volume)
    timings["preprocess"] = time.perf_counter() - start

    report(0.3, "network")
    start = time.perf_counter()
    output = segmenter(cube)  # a probability cube, or (cube, info) for the template segmenter
    probability, network_info = output if isinstance(output, tuple) else (output, {})
    probability = np.asarray(probability, dtype=np.float32)
    timings["network"] = time.perf_counter() - start

    report(0.7, "back to the input grid")
    start = time.perf_counter()
    labels = postprocess(probability, info, threshold=threshold, largest_component=largest_component)
    if network_info:  # the template's report: its pieces as written, on the input's grid
        network_info = {**network_info, "components": int(ndimage.label(labels)[1])}
    timings["postprocess"] = time.perf_counter() - start
    volume_ml = float(labels.sum() * np.prod(volume.spacing) / 1000.0)
    return SegmentationResult(labels, volume_ml, {k: round(v, 4) for k, v in timings.items()}, network_info,
                              result_warnings(labels, volume_ml, network_info))


def load_segmenter(entry, device: str = "auto"):
    """The networks engineer's loader (imports torch); the template segmenter for its models."""
    if entry.meta["architecture"]["name"] == METHOD_ARCHITECTURES["template"]:
        from .template_net import load_template_segmenter

        return load_template_segmenter(entry, device)
    from .inference import load_segmenter as load

    return load(entry, device)
