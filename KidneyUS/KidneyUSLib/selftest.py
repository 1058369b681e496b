"""Scenarios shared by the Slicer self-test (KidneyUSTest) and pytest on the headless runtime.

Each scenario is `scenario(slicer, workdir, model=None)`: `slicer` has a scene and the module
logics (the desktop app or SegTuneCore.runtime), `model` is what `ModelStore.resolve` accepts
(None = the active model, else the bundled one). A failed check raises AssertionError. Data are
generated phantoms with seeds far from the training seeds: no network access, no GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from SegTuneCore.errors import SegTuneError
from SegTuneCore.geometry import Volume

from .segmentation import dice

SELFTEST_SEED = 80_000_001  # held out: training uses small seeds
# a small native grid (anisotropic, about 150 x 170 x 140 mm) keeps every scenario at a few seconds
SELFTEST_SIZE = (110, 130, 100)
SELFTEST_SPACING = (1.4, 1.3, 1.45)
MIN_ROUND_TRIP_DICE = 0.97
MIN_BUNDLED_MODEL_DICE = 0.8


def phantom(population: str = "child", seed: int = SELFTEST_SEED, oblique: bool = True) -> tuple[Volume, Volume]:
    from .phantom import generate_phantom

    return generate_phantom(population, seed, spacing=SELFTEST_SPACING, size=SELFTEST_SIZE, oblique=oblique)


def flipped_ij(volume: Volume) -> Volume:
    """The same voxels in space stored with i and j reversed (LPS-like storage of a RAS-like one)."""
    _, nj, ni = volume.array.shape
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = ni - 1, nj - 1
    return Volume(np.ascontiguousarray(volume.array[:, ::-1, ::-1]), volume.ijk_to_ras @ flip)


class TruthSegmenter:
    """A stand-in network that answers the phantom's true label in the cube frame (no torch)."""

    def __init__(self, label: Volume):
        self.label = label

    def __call__(self, cube: np.ndarray) -> np.ndarray:
        from .preprocessing import PreprocessInfo, cube_geometry, resample_to_cube

        shape = self.label.array.shape
        info = PreprocessInfo(shape, self.label.ijk_to_ras, cube_geometry(shape, self.label.ijk_to_ras), (0.0, 1.0))
        return resample_to_cube(self.label.array, info)


def bright_region_segmenter(cube: np.ndarray) -> np.ndarray:
    """A stand-in network whose answer depends on the image content only (no torch)."""
    smooth = ndimage.gaussian_filter(cube, 1.5)
    return (smooth > np.percentile(smooth, 97)).astype(np.float32)


def _node(slicer, volume: Volume, name: str):
    from SegTuneCore.mrml import node_from_volume

    node = node_from_volume(volume, name)
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    if not hierarchy.GetItemByDataNode(node):
        study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Subject"), "Study")
        hierarchy.CreateItem(study, node)
    return node


def check_segmentation_node(slicer, segmentation_node, volume_node) -> np.ndarray:
    """The checks every result passes; returns the kidney mask on the input's grid."""
    from SegTuneCore.mrml import labels_from_segmentation_node

    from .logic import KIDNEY_TERMINOLOGY, terminology_entry

    segmentation = segmentation_node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1, "expected exactly one segment"
    segment = segmentation.GetNthSegment(0)
    assert segment.GetName() == "Kidney", segment.GetName()
    assert terminology_entry(segment) == KIDNEY_TERMINOLOGY, "missing terminology entry"
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    parent = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(segmentation_node))
    assert parent == hierarchy.GetItemParent(hierarchy.GetItemByDataNode(volume_node)), "not next to the input"
    labels, segments = labels_from_segmentation_node(segmentation_node, volume_node)
    assert labels.shape == slicer.util.arrayFromVolume(volume_node).shape
    return (labels == segments[0].label_value).astype(np.uint8)


def scenario_truth_round_trip(slicer, workdir: Path, model=None) -> float:
    """Oblique anisotropic child phantom -> cube -> the true label -> back: Dice >= 0.97 on the input grid."""
    from .logic import KidneyUSLogic

    volume, label = phantom("child")
    volume_node = _node(slicer, volume, "child phantom")
    node = KidneyUSLogic().segment(volume_node, segmenter=TruthSegmenter(label))
    mask = check_segmentation_node(slicer, node, volume_node)
    score = dice(mask, label.array)
    assert score >= MIN_ROUND_TRIP_DICE, f"round trip Dice {score:.3f} < {MIN_ROUND_TRIP_DICE}"
    return score


def scenario_storage_order_invariance(slicer, workdir: Path, model=None) -> float:
    """The same voxels stored RAS-like or LPS-like give the same segmentation in space."""
    from .logic import KidneyUSLogic

    volume, _ = phantom("adult", oblique=False)
    logic = KidneyUSLogic()
    first_node = _node(slicer, volume, "adult phantom")
    second_node = _node(slicer, flipped_ij(volume), "adult phantom flipped")
    first = check_segmentation_node(slicer, logic.segment(first_node, segmenter=bright_region_segmenter), first_node)
    second = check_segmentation_node(slicer, logic.segment(second_node, segmenter=bright_region_segmenter), second_node)
    assert first.any(), "empty segmentation"
    score = dice(first, second[:, ::-1, ::-1])
    assert score >= 0.99, f"storage order changed the result: Dice {score:.3f}"
    return score


def scenario_bad_input(slicer, workdir: Path, model=None) -> None:
    """A constant volume is refused with a clear error and leaves no segmentation behind."""
    from .logic import KidneyUSLogic

    volume, label = phantom("adult", oblique=False)
    node = _node(slicer, volume.with_array(np.zeros_like(volume.array)), "empty")
    before = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    try:
        KidneyUSLogic().segment(node, segmenter=TruthSegmenter(label))
    except SegTuneError as error:
        assert "empty" in str(error), str(error)
    else:
        raise AssertionError("a constant volume was accepted")
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == before


def scenario_network(slicer, workdir: Path, model=None) -> float:
    """The real network on a held-out adult phantom: a Kidney segment on the input grid; the
    bundled model must also find the kidney (Dice >= 0.8)."""
    from .logic import KidneyUSLogic
    from .segmentation import resolve_model

    entry = resolve_model(model)
    volume, label = phantom("adult", SELFTEST_SEED + 1)
    volume_node = _node(slicer, volume, "adult phantom")
    node = KidneyUSLogic().segment(volume_node, model=str(entry.path), device="cpu")
    score = dice(check_segmentation_node(slicer, node, volume_node), label.array)
    if entry.bundled:
        assert score >= MIN_BUNDLED_MODEL_DICE, f"bundled model Dice {score:.3f} < {MIN_BUNDLED_MODEL_DICE}"
    return score


SCENARIOS = (scenario_truth_round_trip, scenario_storage_order_invariance, scenario_bad_input, scenario_network)
NEEDS_TORCH = (scenario_network,)  # the others use stand-in networks
