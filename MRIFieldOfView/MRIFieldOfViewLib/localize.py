"""Localize body regions in a volume: axial slices -> classifier -> decision -> regions and slabs.

The engine behind the `localize` CLI, the MRML logic, the demo and the bench. Volumes are
`SegTuneCore.geometry.Volume`; nothing here imports Slicer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from SegTuneCore.errors import SegTuneError
from SegTuneCore.geometry import Segment, Volume, check_3d_shape

from .decision import DEFAULT_SMOOTHING_MM, Decision, decide
from .regions import REGION_COLORS, REGION_INDEX, REGIONS

# A slice is empty (no body: air above the head, below the feet) when fewer than
# EMPTY_FRACTION of its pixels are brighter than EMPTY_INTENSITY on the per-volume [0, 1] scale
# after a 5x5 mean filter (which keeps Rician background noise far below the threshold).
EMPTY_INTENSITY = 0.1
EMPTY_FRACTION = 0.005
EMPTY_FILTER = 5

Progress = Callable[[float, str], None]


@dataclass
class LoadedModel:
    classifier: object   # MRIFieldOfViewLib.classifier.SliceClassifier
    summary: dict        # task, version, path, bundled, sha256, architecture, metrics


def load_classifier(model=None, device: str = "auto", store=None) -> LoadedModel:
    """The slice classifier named `model` (version, bundled name or folder; None = active/bundled),
    or of a model-store entry already resolved."""
    from SegTuneCore.device import select_device
    from SegTuneCore.models import ModelEntry, ModelStore

    from .classifier import TASK, SliceClassifier

    import torch

    entry = model if isinstance(model, ModelEntry) else (store or ModelStore()).resolve(TASK, model)
    classifier = SliceClassifier.load(entry, select_device(device))
    # NHWC weights make the 2D convolutions 1.5-1.9x faster on the CPU, same outputs (bench localize).
    classifier.model.to(memory_format=torch.channels_last)
    summary = dict(entry.summary(), sha256=entry.meta.get("sha256"))
    return LoadedModel(classifier, summary)


@dataclass
class Localization:
    decision: Decision
    probabilities: np.ndarray   # [N, 6] raw network output, one row per slice index
    positions_mm: np.ndarray    # [N] S coordinate of each slice centre
    empty: np.ndarray           # [N] bool, slices without body signal
    slice_axis: int             # IJK axis of the slices (2 = k for axial acquisitions)
    smoothing_mm: float
    model: dict
    device: dict

    @property
    def regions(self):
        return self.decision.regions

    def to_json(self) -> dict:
        return {
            "regions": [region.to_dict() for region in self.decision.regions],
            "slice_probabilities": np.round(self.probabilities.astype(np.float64), 6).tolist(),
            "smoothed_probabilities": np.round(self.decision.smoothed, 6).tolist(),
            "classes": list(REGIONS),
            "slice_labels": self.decision.slice_labels,
            "slice_positions_mm": np.round(self.positions_mm, 4).tolist(),
            "empty_slices": np.flatnonzero(self.empty).tolist(),
            "slice_axis": "ijk"[self.slice_axis],
            "hypothesis": self.decision.hypothesis,
            "smoothing_mm": self.smoothing_mm,
            "model": self.model,
            "device": self.device,
        }


def empty_slices(images: np.ndarray) -> np.ndarray:
    """Slices (preprocessed, [N, H, W] in [0, 1]) with no body in them."""
    from scipy.ndimage import uniform_filter

    smoothed = uniform_filter(np.asarray(images, dtype=np.float32), size=(1, EMPTY_FILTER, EMPTY_FILTER))
    bright = (smoothed > EMPTY_INTENSITY).mean(axis=(1, 2))
    return bright < EMPTY_FRACTION


def localize(volume: Volume, model: LoadedModel, *, smoothing_mm: float = DEFAULT_SMOOTHING_MM,
             progress: Progress | None = None, batch_size: int = 32, bf16: bool = False) -> Localization:
    """Classify every axial slice of `volume` and decide its regions (bf16: autocast the network)."""
    from SegTuneCore.device import describe

    from .preprocessing import axial_slices

    if smoothing_mm < 0 or not np.isfinite(smoothing_mm):
        raise SegTuneError(f"smoothing must be a finite width >= 0 mm, got {smoothing_mm}")
    # read_volume's rule, for callers that bring an array (the MRML logic). Not in axial_slices,
    # which also prepares single training slices.
    check_3d_shape("the volume", np.shape(volume.array)[::-1])
    report = progress or (lambda fraction, message: None)
    report(0.0, "preparing slices")
    stack = axial_slices(volume)
    empty = empty_slices(stack.images)
    if empty.all():
        raise SegTuneError("the volume is empty: no slice contains any signal")
    classifier = model.classifier
    probabilities = np.empty((len(stack), len(REGIONS)), dtype=np.float32)
    for start in range(0, len(stack), batch_size):
        stop = min(start + batch_size, len(stack))
        probabilities[start:stop] = classifier.predict(stack.images[start:stop], batch_size=batch_size, bf16=bf16)
        report(0.05 + 0.9 * stop / len(stack), f"classified {stop}/{len(stack)} slices")
    slice_spacing = float(np.linalg.norm(np.asarray(volume.ijk_to_ras)[:3, stack.slice_axis]))
    decision = decide(probabilities, stack.positions_mm, stack.k_indices, empty=empty,
                      sigma_mm=smoothing_mm, single_thickness=slice_spacing)
    report(1.0, f"{len(decision.regions)} regions")
    device = dict(describe(classifier.device), precision="bf16" if bf16 else "fp32")
    return Localization(decision, probabilities, stack.positions_mm, empty, stack.slice_axis,
                        float(smoothing_mm), model.summary, device)


def region_segments(localization: Localization) -> list[Segment]:
    """One segment per found region; label value = class index + 1 (stable across volumes)."""
    return [Segment(r.name, REGION_INDEX[r.name] + 1, REGION_COLORS[r.name]) for r in localization.regions]


def region_labels(shape_kji: tuple[int, int, int], localization: Localization) -> np.ndarray:
    """uint8 label array on the input grid: each region a slab of whole slices."""
    labels = np.zeros(shape_kji, dtype=np.uint8)
    array_axis = 2 - localization.slice_axis  # arrays are [k, j, i]
    for region, segment in zip(localization.regions, region_segments(localization)):
        index = [slice(None)] * 3
        index[array_axis] = slice(region.first_slice, region.last_slice + 1)
        labels[tuple(index)] = segment.label_value
    return labels
