"""MRML bridge of MRIFieldOfView: a volume node in; segmentation, table and plot nodes out.

Runs unchanged in the Slicer desktop app and in the headless runtime (SegTuneCore.runtime).
Two ways in, one way out:
- `run(volume_node, ...)` localizes in this process (tests, batch, headless);
- the module widget runs `python -m MRIFieldOfViewLib localize` in a child process on
  `write_input(volume_node, folder)` and hands the JSON it wrote to `show_result`.
Both end in `show_result(volume_node, document)`, which builds the nodes from the regions JSON
document (the format of `Localization.to_json`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .regions import REGION_COLORS, REGION_INDEX, REGIONS

TABLE_COLUMNS = ("Region", "First slice", "Last slice", "Inferior (mm)", "Superior (mm)", "Slices")


@dataclass
class LocalizationNodes:
    segmentation: object     # vtkMRMLSegmentationNode, one slab segment per region
    regions_table: object    # vtkMRMLTableNode, one row per region
    probabilities_table: object  # vtkMRMLTableNode, one row per slice
    chart: object            # vtkMRMLPlotChartNode, raw and smoothed probability per class
    document: dict           # the regions JSON document


class FieldOfViewLogic:
    """Usable without the GUI: `FieldOfViewLogic().run(volume_node)`; the module's Logic extends it."""

    def __init__(self):
        import slicer

        self.slicer = slicer
        self._models: dict = {}

    # --- the computation ----------------------------------------------------------------------

    def load_model(self, model: str | None = None, device: str = "auto"):
        """The classifier, loaded once per model file. The name is resolved on every call: a model
        activated meanwhile (an HPO install in another process) is used at once."""
        from SegTuneCore.models import ModelStore

        from .classifier import TASK
        from .localize import load_classifier

        entry = ModelStore().resolve(TASK, model)
        key = (str(entry.path), entry.meta.get("sha256"), device)
        if key not in self._models:
            self._models[key] = load_classifier(entry, device)
        return self._models[key]

    def run(self, volume_node, *, model: str | None = None, device: str = "auto",
            smoothing_mm: float | None = None, progress=None) -> LocalizationNodes:
        from SegTuneCore.mrml import volume_from_node

        from .localize import DEFAULT_SMOOTHING_MM, localize

        volume = volume_from_node(volume_node)
        result = localize(volume, self.load_model(model, device),
                          smoothing_mm=DEFAULT_SMOOTHING_MM if smoothing_mm is None else smoothing_mm,
                          progress=progress)
        return self.show_result(volume_node, result.to_json())

    @staticmethod
    def write_input(volume_node, folder: str | Path) -> Path:
        """The volume as an NRRD file for the child process (geometry kept exactly)."""
        from SegTuneCore.geometry import write_volume
        from SegTuneCore.mrml import volume_from_node

        return write_volume(volume_from_node(volume_node), Path(folder) / "input.nrrd")

    @staticmethod
    def read_result(path: str | Path) -> dict:
        """The regions document the `localize` child wrote."""
        return json.loads(Path(path).read_text())

    @staticmethod
    def install_model(folder: str | Path):
        """Install a trained model folder into the user's store and make it active."""
        from SegTuneCore.models import ModelStore

        return ModelStore().install(folder, activate=True)

    # --- the nodes ------------------------------------------------------------------------------

    def show_result(self, volume_node, document: dict) -> LocalizationNodes:
        """Segmentation, tables and chart for a regions document, next to the input node."""
        from SegTuneCore.mrml import place_next_to, require_input_in_scene

        require_input_in_scene(volume_node)
        name = volume_node.GetName()
        nodes = LocalizationNodes(
            segmentation=self._segmentation(volume_node, document, f"{name} regions"),
            regions_table=self._regions_table(document, f"{name} regions table"),
            probabilities_table=self._probabilities_table(document, f"{name} slice probabilities"),
            chart=None,
            document=document,
        )
        nodes.chart = self._chart(nodes.probabilities_table, f"{name} slice probabilities")
        hierarchy = self.slicer.mrmlScene.GetSubjectHierarchyNode()
        for node in (nodes.segmentation, nodes.regions_table, nodes.probabilities_table, nodes.chart):
            if not hierarchy.GetItemByDataNode(node):  # the desktop app adds items itself, headless does not
                hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)
            place_next_to(node, volume_node)
        return nodes

    def _segmentation(self, volume_node, document: dict, name: str):
        from SegTuneCore.geometry import Segment
        from SegTuneCore.mrml import segmentation_node_from_labels

        shape_kji = self.slicer.util.arrayFromVolume(volume_node).shape[:3]
        array_axis = 2 - "ijk".index(document.get("slice_axis", "k"))
        labels = np.zeros(shape_kji, dtype=np.uint8)
        segments = []
        for region in document["regions"]:
            segment = Segment(region["name"], REGION_INDEX[region["name"]] + 1, REGION_COLORS[region["name"]])
            index = [slice(None)] * 3
            index[array_axis] = slice(region["first_slice"], region["last_slice"] + 1)
            labels[tuple(index)] = segment.label_value
            segments.append(segment)
        return segmentation_node_from_labels(labels, segments, volume_node, name)

    def _new_table(self, name: str, columns):
        table_node = self.slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name)
        for column_name, array_class in columns:
            column = array_class()
            column.SetName(column_name)
            table_node.AddColumn(column)
        self._show_column_names(table_node)
        return table_node

    @staticmethod
    def _show_column_names(table_node) -> None:
        for index in range(table_node.GetNumberOfColumns()):
            name = table_node.GetColumnName(index)
            table_node.SetColumnTitle(name, name)
        table_node.SetUseColumnTitleAsColumnHeader(True)

    def _regions_table(self, document: dict, name: str):
        import vtk

        types = (vtk.vtkStringArray, vtk.vtkIntArray, vtk.vtkIntArray, vtk.vtkDoubleArray, vtk.vtkDoubleArray, vtk.vtkIntArray)
        table_node = self._new_table(name, zip(TABLE_COLUMNS, types))
        table = table_node.GetTable()
        for region in document["regions"]:
            row = table_node.AddEmptyRow()
            values = (region["name"], region["first_slice"], region["last_slice"],
                      round(region["inferior_mm"], 2), round(region["superior_mm"], 2),
                      region["last_slice"] - region["first_slice"] + 1)
            for column, value in enumerate(values):
                table.GetColumn(column).SetVariantValue(row, vtk.vtkVariant(value))
        table.Modified()
        return table_node

    def _probabilities_table(self, document: dict, name: str):
        """Per slice: index, S position, raw and smoothed probability of every class."""
        raw = np.asarray(document["slice_probabilities"], dtype=np.float64)
        smoothed = np.asarray(document["smoothed_probabilities"], dtype=np.float64)
        positions = np.asarray(document["slice_positions_mm"], dtype=np.float64)
        order = np.argsort(positions, kind="stable")
        columns = [np.arange(len(raw), dtype=np.float64)[order], positions[order]]
        names = ["Slice", "Position (mm)"]
        for index, region in enumerate(REGIONS):
            columns += [raw[order, index], smoothed[order, index]]
            names += [f"{region} raw", region]
        table_node = self.slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name)
        self.slicer.util.updateTableFromArray(table_node, np.stack(columns, axis=1), names)
        self._show_column_names(table_node)
        return table_node

    def _chart(self, probabilities_table, name: str):
        scene = self.slicer.mrmlScene
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
        chart.SetTitle("Slice probabilities (raw: dashed, smoothed: solid)")
        chart.SetXAxisTitle("Position along the patient axis S (mm)")
        chart.SetYAxisTitle("Probability")
        for region in REGIONS:
            for column, dashed in ((region, False), (f"{region} raw", True)):
                series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {column}")
                series.SetAndObserveTableNodeID(probabilities_table.GetID())
                series.SetXColumnName("Position (mm)")
                series.SetYColumnName(column)
                series.SetPlotType(series.PlotTypeScatter)
                series.SetMarkerStyle(series.MarkerStyleNone)
                series.SetLineStyle(series.LineStyleDash if dashed else series.LineStyleSolid)
                series.SetLineWidth(1 if dashed else 3)
                series.SetColor(*REGION_COLORS[region])
                chart.AddAndObservePlotSeriesNodeID(series.GetID())
        return chart
