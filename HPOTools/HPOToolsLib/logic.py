"""The MRML side of the HPOTools panel: a study's trials as a table node and a plot chart.

Reads the study database (read-only) and fills a vtkMRMLTableNode (one row per finished trial,
in the order results arrived) and a vtkMRMLPlotChartNode with the loss per trial and the running
best (thesis Fig. 2.15). Starting, cancelling, resuming and installing go through
HPOToolsLib.study, so the panel, the CLI and the tests share one implementation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .study.report import training_order
from .study.status import comparable, study_status
from .study.storage import StudyStore

TABLE_COLUMNS = ("trial", "state", "value", "best so far", "budget", "parameters", "error")
RUNNING_POLL_MS = 2000
# A study that is not running here may be resumed elsewhere (command line, another Slicer): the
# panel keeps looking, less often.
IDLE_POLL_MS = 10000
REVISION_ATTRIBUTE = "HPOTools.revision"


def read_study(folder: str | Path) -> tuple[dict, list]:
    """Status and finished trials (in training order) of a study, without writing to it."""
    store = StudyStore.open(folder, read_only=True)
    try:
        return study_status(store), training_order(store.trials())
    finally:
        store.close()


def running_best(trials: list) -> list[float]:
    """The best value so far after each trial, counting only the trials `status` and `install`
    choose the winner from (`status.comparable`)."""
    counted = {t.number for t in comparable(trials)}
    best, out = math.inf, []
    for trial in trials:
        if trial.number in counted and math.isfinite(trial.value):
            best = min(best, trial.value)
        out.append(best if math.isfinite(best) else math.nan)
    return out


def _set_table_column(table_node, name: str, values, kind: str) -> None:
    import vtk

    array = vtk.vtkDoubleArray() if kind == "double" else vtk.vtkStringArray()
    array.SetName(name)
    for value in values:
        if kind == "double":
            array.InsertNextValue(math.nan if value is None else float(value))
        else:
            array.InsertNextValue("" if value is None else str(value))
    table_node.AddColumn(array)


def update_trials_table(table_node, trials: list) -> None:
    """Replace the table's content with one row per finished trial."""
    values = [t.value for t in trials]
    table_node.RemoveAllColumns()
    _set_table_column(table_node, "trial", [t.number for t in trials], "double")
    _set_table_column(table_node, "state", [t.state.value for t in trials], "string")
    _set_table_column(table_node, "value", values, "double")
    _set_table_column(table_node, "best so far", running_best(trials), "double")
    _set_table_column(table_node, "budget", [t.budget for t in trials], "double")
    _set_table_column(table_node, "parameters", [json.dumps(t.params, sort_keys=True) for t in trials], "string")
    _set_table_column(table_node, "error", [t.error or "" for t in trials], "string")
    table_node.Modified()


def _series(scene, chart_node, table_node, name: str, y_column: str, color, line: bool):
    import slicer

    series = next((chart_node.GetNthPlotSeriesNode(i) for i in range(chart_node.GetNumberOfPlotSeriesNodes())
                   if chart_node.GetNthPlotSeriesNode(i).GetName() == name), None)
    if series is None:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name)
        chart_node.AddAndObservePlotSeriesNodeID(series.GetID())
    series.SetAndObserveTableNodeID(table_node.GetID())
    series.SetXColumnName("trial")
    series.SetYColumnName(y_column)
    series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
    series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone if line
                          else slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
    series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleSolid if line
                        else slicer.vtkMRMLPlotSeriesNode.LineStyleNone)
    series.SetColor(*color)
    return series


def update_study_nodes(folder: str | Path, table_node=None, chart_node=None) -> dict:
    """Fill (creating when None) the trials table and the loss-per-trial chart; return the status."""
    import slicer

    scene = slicer.mrmlScene
    status, trials = read_study(folder)
    revision = _revision(status, trials)
    if table_node is not None and chart_node is not None and table_node.GetAttribute(REVISION_ATTRIBUTE) == revision:
        status["table_node"], status["chart_node"] = table_node, chart_node  # unchanged: no redraw
        return status
    name = Path(folder).name
    if table_node is None:
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} trials")
    if chart_node is None:
        chart_node = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{name} loss per trial")
    update_trials_table(table_node, trials)
    _series(scene, chart_node, table_node, "loss", "value", (0.35, 0.55, 0.85), line=False)
    _series(scene, chart_node, table_node, "best so far", "best so far", (0.85, 0.28, 0.06), line=True)
    chart_node.SetTitle(f"{status['objective']} — {status['method']}")
    chart_node.SetXAxisTitle("trial (training order)")
    chart_node.SetYAxisTitle("loss")
    table_node.SetAttribute(REVISION_ATTRIBUTE, revision)
    status["table_node"], status["chart_node"] = table_node, chart_node
    return status


def _revision(status: dict, trials: list) -> str:
    """A digest of what the table and chart show."""
    import hashlib

    shown = [status["objective"], status["method"],
             [(t.number, t.state.value, t.value, t.budget, t.params, t.error) for t in trials]]
    return hashlib.sha256(json.dumps(shown, sort_keys=True, default=str).encode()).hexdigest()


def poll_interval_ms(status: dict | None) -> int:
    """How often the panel reads the study: often while it runs, seldom otherwise (None: unreadable)."""
    return RUNNING_POLL_MS if status and status["state"] == "running" else IDLE_POLL_MS


def table_column(table_node, name: str) -> np.ndarray | list:
    """A column of a table node (numbers as an array, strings as a list), for callers and tests."""
    array = table_node.GetTable().GetColumnByName(name)
    if array is None:
        raise KeyError(name)
    if hasattr(array, "GetValue") and array.GetClassName() == "vtkStringArray":
        return [array.GetValue(i) for i in range(array.GetNumberOfValues())]
    return np.array([array.GetValue(i) for i in range(array.GetNumberOfTuples())])


def available_actions(status: dict) -> dict:
    """Which panel buttons make sense for a study in this state (an interrupted study offers resume)."""
    state = status["state"]
    running = state == "running" and status.get("pid") is not None
    return {
        "cancel": running,
        "resume": not running and state != "finished",
        "install": status.get("best") is not None,
    }


def describe_status(status: dict) -> str:
    counts = status["trials"]
    text = (f"{status['state']}: {counts['complete']} complete, {counts['failed']} failed, "
            f"{counts['running']} running, {counts['queued']} queued")
    if status.get("best"):
        text += f"; best trial {status['best']['trial']} = {status['best']['value']:.6g}"
    if status["state"] == "interrupted":
        text += " — the runner stopped unexpectedly; press Resume to continue"
    return text
