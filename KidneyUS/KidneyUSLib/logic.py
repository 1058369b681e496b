"""MRML bridge of KidneyUS: an ultrasound volume node in, a "Kidney" segmentation node out.

Runs unchanged in the Slicer desktop app and in the headless runtime (SegTuneCore.runtime).
Two ways in, one way out:
- `segment(volume_node, ...)` runs the network in this process (tests, batch, headless);
- the module widget runs `python -m KidneyUSLib segment` in a child process on
  `write_input(volume_node, folder)` and hands the `.seg.nrrd` it wrote to `show_result`.
Both end in a segmentation node whose reference geometry is the input volume, with one segment
"Kidney" tagged with its terminology entry, placed next to the input in the subject hierarchy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Slicer's terminology entry for the kidney (SNOMED CT codes, as the 3D Slicer General Anatomy
# list has them): context~category~type~type modifier~anatomic context~region~region modifier.
KIDNEY_TERMINOLOGY = ("Segmentation category and type - 3D Slicer General Anatomy list"
                      "~SCT^123037004^Anatomical Structure~SCT^64033007^Kidney~^^"
                      "~Anatomic codes - DICOM master list~^^~^^")
TERMINOLOGY_TAG = "TerminologyEntry"


def terminology_entry(segment) -> str:
    """The terminology entry tag of a vtkSegment ("" when absent)."""
    import vtk

    value = vtk.mutable("")
    return str(value) if segment.GetTag(TERMINOLOGY_TAG, value) else ""


class KidneyUSLogic:
    """Usable without the GUI: `KidneyUSLogic().segment(volume_node)`; the module's Logic extends it."""

    def __init__(self):
        import slicer

        self.slicer = slicer
        self._segmenters: dict = {}
        self.last_network_info: dict = {}
        self.last_warnings: list[str] = []

    # --- the computation ------------------------------------------------------------------------

    def load_segmenter(self, model: str | None = None, method: str | None = None, device: str = "auto"):
        """The network for (model, method, device), loaded once (imports torch)."""
        from .segmentation import load_segmenter, resolve_model

        entry = resolve_model(model, method)
        key = (str(entry.path), device)
        if key not in self._segmenters:
            self._segmenters[key] = load_segmenter(entry, device)
        return self._segmenters[key]

    def segment(self, volume_node, *, model: str | None = None, method: str | None = None, device: str = "auto",
                segmenter=None, output_node=None, threshold: float = 0.5, largest_component: bool = True,
                progress=None):
        """Segment the kidney of a volume node; `segmenter` (cube -> probabilities) overrides the model."""
        from SegTuneCore.mrml import volume_from_node

        from .segmentation import segment_volume

        volume = volume_from_node(volume_node)
        segmenter = segmenter or self.load_segmenter(model, method, device)
        result = segment_volume(volume, segmenter, threshold, largest_component, progress=progress)
        self.last_network_info = result.network  # template: folded-voxel fraction, components, G
        self.last_warnings = result.warnings  # an empty or too small output, a template its own U-Net does not bear out
        return self.show_labels(volume_node, result.labels, output_node)

    @staticmethod
    def write_input(volume_node, folder: str | Path) -> Path:
        """The volume as an NRRD file for the child process (geometry kept exactly)."""
        from SegTuneCore.geometry import write_volume
        from SegTuneCore.mrml import volume_from_node

        return write_volume(volume_from_node(volume_node), Path(folder) / "input.nrrd")

    @staticmethod
    def segment_arguments(input_path: Path, output_path: Path, *, model: str | None = None, method: str | None = None,
                          device: str = "auto") -> list[str]:
        """Arguments of `python -m KidneyUSLib` for a child that segments input_path."""
        args = ["segment", str(input_path), "--output", str(output_path), "--device", device, "--progress", "json"]
        if model:
            args += ["--model", model]
        if method:
            args += ["--method", method]
        return args

    @staticmethod
    def resolve_base(model: str | None = None) -> Path:
        """Folder of the model that fine-tuning or transfer layers start from."""
        from .segmentation import resolve_model

        return resolve_model(model).path

    @staticmethod
    def install_model(folder: str | Path):
        """Install a trained model folder into the user's store and make it active."""
        from SegTuneCore.models import ModelStore

        return ModelStore().install(folder, activate=True)

    # --- the nodes --------------------------------------------------------------------------------

    def show_result(self, volume_node, segmentation_path: str | Path, output_node=None):
        """The segmentation node for a `.seg.nrrd` the child wrote on the input's grid."""
        from SegTuneCore.errors import SegTuneError
        from SegTuneCore.geometry import read_segmentation

        from SegTuneCore.mrml import ijk_to_ras_of, require_input_in_scene

        require_input_in_scene(volume_node)
        labels, segments = read_segmentation(segmentation_path)
        reference = self.slicer.util.arrayFromVolume(volume_node)
        if labels.array.shape != reference.shape:
            raise SegTuneError(f"{segmentation_path}: its grid {labels.array.shape} is not the input's {reference.shape}")
        matrix = ijk_to_ras_of(volume_node)
        if not np.allclose(labels.ijk_to_ras, matrix, atol=1e-3 * min(np.linalg.norm(matrix[:3, :3], axis=0))):
            raise SegTuneError(f"{segmentation_path}: its grid lies elsewhere in space than the input's")
        kidney = next((s for s in segments if s.name == "Kidney"), None)
        if kidney is None:
            raise SegTuneError(f"{segmentation_path}: no 'Kidney' segment")
        return self.show_labels(volume_node, (labels.array == kidney.label_value).astype(np.uint8), output_node)

    def show_labels(self, volume_node, labels: np.ndarray, output_node=None):
        """Segmentation node "<input> kidney" from a 0/1 array on the input's grid, next to the input.

        `output_node` is updated only if it is new or already the result of this input: the
        module keeps its last result selected, and another volume's result must survive."""
        from SegTuneCore.mrml import place_next_to, segmentation_node_from_labels

        from .segmentation import KIDNEY

        if output_node is not None:
            owner = output_node.GetNodeReference(output_node.GetReferenceImageGeometryReferenceRole())
            if owner is not None and owner is not volume_node:
                output_node = None
        name = output_node.GetName() if output_node is not None else f"{volume_node.GetName()} kidney"
        node = segmentation_node_from_labels(labels, [KIDNEY], volume_node, name, node=output_node)
        segmentation = node.GetSegmentation()
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(KIDNEY.name))
        segment.SetTag(TERMINOLOGY_TAG, KIDNEY_TERMINOLOGY)
        hierarchy = self.slicer.mrmlScene.GetSubjectHierarchyNode()
        if not hierarchy.GetItemByDataNode(node):  # the desktop app adds items itself, headless does not
            hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)
        place_next_to(node, volume_node)
        return node
