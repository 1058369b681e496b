"""The MRML bridge: Volume <-> scalar volume node, labels <-> segmentation node, node files.

Only what exists both in the Slicer desktop and in the headless runtime is used: the volumes
logic (`AddArchetypeVolume`), storage nodes, the segmentations logic and `slicer.util` array
helpers (which need `slicer.mrmlScene`; see SegTuneCore.runtime).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from SegTuneCore.errors import SegTuneError
from SegTuneCore.geometry import (VOLUME_SUFFIXES, Segment, Volume, check_input_file, check_segmentation_output_name,
                                  check_volume_header, check_volume_output_name)
from SegTuneCore.runtime import vtk_log_silenced


def _slicer():
    import slicer

    if getattr(slicer, "mrmlScene", None) is None:
        raise SegTuneError("no Slicer scene: run inside Slicer or within SegTuneCore.runtime.headless_slicer()")
    return slicer


def _matrix_to_numpy(vtk_matrix) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _numpy_to_matrix(array: np.ndarray):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[list[str]]:
    """Collect what C++ readers (MetaIO, teem) print straight on the process's stderr (fd 2).

    A failed read must end as one clear error line, so the caller decides: use the captured lines
    as the reason of its error, or hand them back with `_reemit` after a successful read.
    """
    import sys
    import tempfile

    captured: list[str] = []
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.extend(line.rstrip() for line in sink.read().decode(errors="replace").splitlines() if line.strip())


def _reemit(lines: list[str]) -> None:
    if lines:
        os.write(2, ("\n".join(lines) + "\n").encode())


def _reason(lines: list[str]) -> str:
    # The C++ readers print a source location, then the description; keep the most telling line.
    plain = [line.strip() for line in lines if "\x1b" not in line and line.strip()]
    telling = [line for line in plain if re.search(r"error|couldn't|cannot|not read", line, re.IGNORECASE)]
    text = (telling or plain or [""])[-1][:200]
    return f" ({text})" if text else ""


# --- volumes --------------------------------------------------------------------------------

def require_input_in_scene(volume_node) -> None:
    """A background run can finish after its input was deleted or the scene closed: its result
    nodes would land, orphaned, in whatever scene is open now."""
    if volume_node is None or not _slicer().mrmlScene.IsNodePresent(volume_node):
        raise SegTuneError("the input volume is no longer in the scene (deleted, or the scene was closed)")


def ijk_to_ras_of(node) -> np.ndarray:
    """The volume node's 4x4 IJK-to-RAS (its own grid, parent transforms not applied)."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return _matrix_to_numpy(matrix)


def volume_from_node(node) -> Volume:
    """A copy of the node's voxels with its IJK-to-RAS (its own grid: parent transforms are not
    applied; `place_next_to` puts results under the same transform)."""
    slicer = _slicer()
    if node is None or node.GetImageData() is None:
        raise SegTuneError("the volume node has no image data")
    return Volume(np.array(slicer.util.arrayFromVolume(node)), ijk_to_ras_of(node))


def node_from_volume(volume: Volume, name: str, *, node=None, class_name: str = "vtkMRMLScalarVolumeNode"):
    """Create (or update) a scalar volume node holding a copy of the volume."""
    slicer = _slicer()
    if node is None:
        node = slicer.mrmlScene.AddNewNodeByClass(class_name, name)
        node.CreateDefaultDisplayNodes()
    node.SetIJKToRASMatrix(_numpy_to_matrix(volume.ijk_to_ras))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array))
    return node


def load_volume_node(path: str | os.PathLike, name: str | None = None):
    """Load a volume file through the MRML volumes logic; one-line error on failure."""
    slicer = _slicer()
    path = Path(path)
    check_input_file(path)
    check_volume_header(path)
    logic = slicer.modules.volumes.logic()
    with vtk_log_silenced(), _native_stderr_captured() as messages:
        node = logic.AddArchetypeVolume(str(path), name or _base_name(path))
    if node is None or node.GetImageData() is None:
        raise SegTuneError(f"{path}: not a readable volume{_reason(messages)}")
    _reemit(messages)
    dims = node.GetImageData().GetDimensions()
    if min(dims) < 2:
        slicer.mrmlScene.RemoveNode(node)
        raise SegTuneError(f"{path}: is a {'x'.join(map(str, dims))} image, expected a 3D volume")
    if node.GetImageData().GetNumberOfScalarComponents() != 1:
        slicer.mrmlScene.RemoveNode(node)
        raise SegTuneError(f"{path}: not a scalar volume")
    return node


def _base_name(path: Path) -> str:
    name = path.name
    for suffix in (".seg.nrrd",) + VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def save_node(node, path: str | os.PathLike) -> Path:
    """Write a volume or segmentation node through its storage node, atomically."""
    from SegTuneCore.process import atomic_write

    path = Path(path)
    if node.IsA("vtkMRMLSegmentationNode"):
        check_segmentation_output_name(path)
    else:
        check_volume_output_name(path)
    storage = node.CreateDefaultStorageNode()
    if storage is None:
        raise SegTuneError(f"{node.GetName()}: this node cannot be written to a file")
    if not storage.SupportedFileType(str(path)):
        raise SegTuneError(f"{path}: file type not supported for {node.GetClassName()}")
    with atomic_write(path) as tmp:
        storage.SetFileName(str(tmp))
        storage.SetUseCompression(True)
        with vtk_log_silenced(), _native_stderr_captured() as messages:
            ok = storage.WriteData(node)
        if not ok:
            raise SegTuneError(f"{path}: could not be written{_reason(messages)}")
        _reemit(messages)
    return path


# --- segmentations --------------------------------------------------------------------------

def segmentation_node_from_labels(labels: np.ndarray, segments: Sequence[Segment], reference_volume_node,
                                  name: str, *, node=None):
    """Segments from a label array on the reference volume's grid; names, colours, label values
    and order kept; segment IDs are the names. Voxels of labels without a segment stay empty."""
    slicer = _slicer()
    labels = np.asarray(labels)
    ref_shape = slicer.util.arrayFromVolume(reference_volume_node).shape
    if labels.shape != ref_shape:
        raise SegTuneError(f"label array shape {labels.shape} does not match the reference volume {ref_shape}")
    values = [int(segment.label_value) for segment in segments]
    if len(set(values)) != len(values) or any(v <= 0 or v > 65535 for v in values):
        raise SegTuneError("segment label values must be distinct integers in 1..65535")
    if node is None:
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.CreateDefaultDisplayNodes()
    else:
        node.GetSegmentation().RemoveAllSegments()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    segmentation = node.GetSegmentation()
    # All segments in one shared labelmap holding the label values themselves (as Slicer does
    # when it imports a labelmap). Importing each segment's mask instead would put every segment
    # in a layer of its own with label value 1, and the original values would be lost.
    for segment in segments:
        segment_id = segmentation.AddEmptySegment(segment.name, segment.name, list(segment.color))
        segmentation.GetSegment(segment_id).SetLabelValue(int(segment.label_value))
    if not segments:
        return node
    kept = np.where(np.isin(labels, values), labels, 0).astype(np.uint8 if max(values) <= 255 else np.uint16)
    # a labelmap node outside the scene: in it, a temporary node would leave its display node and
    # (headless) a stale subject-hierarchy item behind
    labelmap_node = slicer.vtkMRMLLabelMapVolumeNode()
    labelmap_node.SetIJKToRASMatrix(_numpy_to_matrix(ijk_to_ras_of(reference_volume_node)))
    slicer.util.updateVolumeFromArray(labelmap_node, np.ascontiguousarray(kept))
    image = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(labelmap_node)
    representation = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    shared = segmentation.GetSegment(segmentation.GetNthSegmentID(0)).GetRepresentation(representation)
    if segmentation.GetNumberOfLayers() != 1 or shared is None:
        raise SegTuneError("could not create a shared labelmap for the segments")
    shared.DeepCopy(image)
    shared.Modified()
    segmentation.Modified()
    return node


def labels_from_segmentation_node(node, reference_volume_node) -> tuple[np.ndarray, list[Segment]]:
    """A label array on the reference grid (uint8; uint16 when a label value exceeds 255) and the
    segments (label value, name, colour)."""
    slicer = _slicer()
    segmentation = node.GetSegmentation()
    shape = slicer.util.arrayFromVolume(reference_volume_node).shape
    labels = np.zeros(shape, dtype=np.uint8)
    segments = []
    used: set[int] = set()
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        value = int(segment.GetLabelValue()) if hasattr(segment, "GetLabelValue") else 0
        if value <= 0 or value in used:
            value = max(used, default=0) + 1
        used.add(value)
        if value > np.iinfo(labels.dtype).max:
            labels = labels.astype(np.uint16)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, reference_volume_node)
        labels[mask > 0] = value
        segments.append(Segment(segment.GetName(), value, tuple(float(c) for c in segment.GetColor())))
    return labels, segments


def load_segmentation_node(path: str | os.PathLike, name: str | None = None):
    slicer = _slicer()
    path = Path(path)
    check_input_file(path)
    _check_itk_readable(path)
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or _base_name(path))
    storage = node.CreateDefaultStorageNode()  # not in the scene: nothing to remove on failure
    storage.SetFileName(str(path))
    with vtk_log_silenced(), _native_stderr_captured() as messages:
        ok = storage.ReadData(node)
    if not ok or node.GetSegmentation().GetNumberOfSegments() == 0:
        slicer.mrmlScene.RemoveNode(node)
        raise SegTuneError(f"{path}: not a readable segmentation{_reason(messages)}")
    _reemit(messages)
    node.CreateDefaultDisplayNodes()
    return node


def _check_itk_readable(path: Path) -> None:
    # The segmentation storage node lets ITK's exception for a truncated or corrupt NRRD escape
    # as a C++ exception, which aborts the whole process (the Slicer app too): read it with
    # SimpleITK first, where the same failure is a Python error.
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.Execute()
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise SegTuneError(f"{path}: not a readable segmentation ({lines[-1] if lines else 'unknown reason'})") from None


def place_next_to(node, reference_node) -> None:
    """Put `node` in the same subject-hierarchy folder/study as `reference_node` and under its
    parent transform (where `node` can have one: not tables or charts): results are computed on
    the volume's own grid (`volume_from_node`), so they stay on it wherever a transform, linear or
    not, moves the volume in the world."""
    slicer = _slicer()
    if node.IsA("vtkMRMLTransformableNode"):
        node.SetAndObserveTransformNodeID(reference_node.GetTransformNodeID())
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    if hierarchy is None:
        return
    reference_item = hierarchy.GetItemByDataNode(reference_node)
    if not reference_item:
        return
    parent = hierarchy.GetItemParent(reference_item)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:  # headless, no subject-hierarchy plugin creates items for new nodes
        hierarchy.CreateItem(parent, node)
