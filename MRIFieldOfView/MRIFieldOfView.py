"""MRI field of view: which body regions an axial MRI volume contains, and where (thesis §2.6).

Thin Slicer layer: the work is in MRIFieldOfViewLib (engine: no Slicer) and its logic.py (MRML).
Localization and training run in child processes (`python -m MRIFieldOfViewLib ...`) polled by
a QTimer, so the GUI never freezes and Cancel stops the whole process tree. torch is only
imported by those children and by the Logic when it runs in-process.
"""

import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from SegTuneCore.slicer_environment import child_environment, child_python, ensure_packages

from MRIFieldOfViewLib.decision import DEFAULT_SMOOTHING_MM
from MRIFieldOfViewLib.logic import FieldOfViewLogic

TASK = "MRIFieldOfView.slice-classifier"
DEFAULT_MODEL_LABEL = "default (active, else bundled)"


class MRIFieldOfView(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MRI Field of View"
        self.parent.categories = ["Segmentation.SegTune"]
        self.parent.dependencies = []
        self.parent.contributors = ["SegTune developers"]
        self.parent.helpText = """
Finds the body regions (legs, pelvis, abdomen, chest, head, or a spine examination) of an axial
MRI volume. Every axial slice is classified by a convolutional network; the probabilities are
smoothed along the patient axis and turned into contiguous regions in anatomical order by an
exact dynamic program. Outputs: a segmentation with one slab per region, a table of slice and
millimetre ranges, and the per-slice probability curves.
<br>Method: Bertrand, <i>Hyper-parameter optimization in deep learning and transfer learning:
applications to medical imaging</i>, PhD thesis, §2.6 (and Bertrand, Perrot et al., ISBI 2017).
"""
        self.parent.acknowledgementText = "Part of the SegTune extension."


@parameterNodeWrapper
class MRIFieldOfViewParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    modelName: str = ""
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    smoothingMm: Annotated[float, WithinRange(0.0, 100.0)] = DEFAULT_SMOOTHING_MM
    trainOnFolder: bool = False
    trainingFolder: Path = Path()
    trainingPhantoms: Annotated[int, WithinRange(4, 10000)] = 60
    trainingEpochs: Annotated[int, WithinRange(1, 1000)] = 10
    trainingDevice: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"


class MRIFieldOfViewWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._localizeJob = None   # (process, workdir, volume node)
        self._trainingJob = None   # (process, workdir)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MRIFieldOfView.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MRIFieldOfViewLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.showPlotButton.connect("clicked(bool)", self.onShowPlot)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self.onPoll)
        self.lastNodes = None
        self.initializeParameterNode()
        self.refreshModels()

    def cleanup(self):
        for job in (self._localizeJob, self._trainingJob):
            if job:
                job[0].cancel()
                shutil.rmtree(job[1], ignore_errors=True)
        self.timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self.refreshModels()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller, event):
        if self._localizeJob:  # its input is going away with the scene
            self.cancelLocalize("Cancelled: the scene was closed.")
        self.lastNodes = None  # its nodes go with the scene; a new node may get a chart's old ID
        self.ui.showPlotButton.enabled = False
        self.ui.resultsTableView.setMRMLTableNode(None)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()
            self.refreshModels()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self.updateButtons()

    def updateButtons(self, caller=None, event=None):
        running = self._localizeJob is not None
        self.ui.applyButton.text = "Cancel" if running else "Apply"
        self.ui.applyButton.enabled = running or bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.trainButton.text = "Cancel training" if self._trainingJob else "Train"
        self.ui.trainingFolderPathLineEdit.enabled = bool(self._parameterNode and self._parameterNode.trainOnFolder)
        self.ui.trainingPhantomsSpinBox.enabled = not self.ui.trainingFolderPathLineEdit.enabled

    # --- models -----------------------------------------------------------------------------

    def refreshModels(self):
        """Fill the model selector from the store: "" = the default resolution, else a version."""
        with slicer.util.tryWithErrorDisplay("Failed to list the installed models."):
            from SegTuneCore.models import ModelStore

            combo = self.ui.modelComboBox
            combo.blockSignals(True)
            combo.clear()
            combo.addItem(DEFAULT_MODEL_LABEL, "")
            for entry in ModelStore().list(TASK):
                combo.addItem(entry.label(), entry.version)
            current = self._parameterNode.modelName if self._parameterNode else ""
            combo.setCurrentIndex(max(0, combo.findData(current)))
            combo.blockSignals(False)

    def onModelChanged(self, index):
        if self._parameterNode:
            self._parameterNode.modelName = self.ui.modelComboBox.itemData(index) or ""

    # --- localize in a child process ----------------------------------------------------------

    def onApplyButton(self):
        if self._localizeJob:
            self.cancelLocalize("Cancelled.")
            return
        if not ensure_packages("MRI Field of View"):
            return
        with slicer.util.tryWithErrorDisplay("Failed to start the localization.", waitCursor=True):
            from SegTuneCore.process import PythonModuleProcess, work_folder

            params = self._parameterNode
            with work_folder("MRIFieldOfView-") as workdir:
                inputPath = self.logic.write_input(params.inputVolume, workdir)
                args = ["localize", str(inputPath), "--output", str(workdir / "regions.json"), "--progress", "json",
                        "--device", params.device, "--smoothing-mm", str(params.smoothingMm)]
                if params.modelName:
                    args += ["--model", params.modelName]
                process = PythonModuleProcess("MRIFieldOfViewLib", args, on_event=self.onLocalizeEvent,
                                              env=child_environment(), python=child_python()).start()
            self._localizeJob = (process, workdir, params.inputVolume)
            self.ui.progressBar.value = 0
            self.ui.progressBar.visible = True
            self.ui.statusLabel.text = "Starting..."
            self.timer.start()
            self.updateButtons()

    def onLocalizeEvent(self, event):
        if event["event"] == "progress":
            self.ui.progressBar.value = int(100 * event.get("fraction", 0.0))
            self.ui.statusLabel.text = event.get("message", "")

    def cancelLocalize(self, message):
        self._localizeJob[0].cancel()
        self.finishLocalize(message)

    def finishLocalize(self, message):
        process, workdir, _ = self._localizeJob
        self._localizeJob = None
        shutil.rmtree(workdir, ignore_errors=True)
        self.ui.progressBar.visible = False
        self.ui.statusLabel.text = message
        self.updateButtons()

    def onPoll(self):
        if self._localizeJob:
            self.pollLocalize()
        if self._trainingJob:
            self.pollTraining()
        if not self._localizeJob and not self._trainingJob:
            self.timer.stop()

    def pollLocalize(self):
        process, workdir, volumeNode = self._localizeJob
        process.poll()
        if process.running():
            return
        try:
            process.wait(timeout=10)
            document = self.logic.read_result(workdir / "regions.json")
            self.lastNodes = self.logic.show_result(volumeNode, document)
        except Exception as error:
            self.finishLocalize("Failed.")
            slicer.util.errorDisplay(f"Localization failed: {error}")
            return
        self.showResults(self.lastNodes)
        names = ", ".join(r["name"] for r in document["regions"]) or "no region"
        self.finishLocalize(f"Found: {names}.")

    def showResults(self, nodes):
        self.ui.resultsTableView.setMRMLTableNode(nodes.regions_table)
        self.ui.showPlotButton.enabled = True
        self.onShowPlot()

    def onShowPlot(self):
        if self.lastNodes:
            slicer.modules.plots.logic().ShowChartInLayout(self.lastNodes.chart)

    # --- training in a child process ------------------------------------------------------------

    def onTrainButton(self):
        if self._trainingJob:
            self._trainingJob[0].cancel()
            self.finishTraining("Training cancelled.")
            return
        if not ensure_packages("MRI Field of View"):
            return
        with slicer.util.tryWithErrorDisplay("Failed to start the training.", waitCursor=True):
            from SegTuneCore.process import PythonModuleProcess, work_folder

            params = self._parameterNode
            if params.trainOnFolder and str(params.trainingFolder) in ("", "."):  # "." is the unset path
                raise ValueError("choose the folder of training volumes first")
            with work_folder("MRIFieldOfView-training-") as workdir:
                source = (["--data", str(params.trainingFolder)] if params.trainOnFolder
                          else ["--phantoms", str(params.trainingPhantoms)])
                args = ["train", *source, "--epochs", str(params.trainingEpochs), "--device", params.trainingDevice,
                        "--output", str(workdir / "model"), "--progress", "json"]
                process = PythonModuleProcess("MRIFieldOfViewLib", args, on_event=self.onTrainingEvent,
                                              env=child_environment(), python=child_python()).start()
            self._trainingJob = (process, workdir)
            self.ui.trainingProgressBar.value = 0
            self.ui.trainingProgressBar.visible = True
            self.ui.trainingLogTextEdit.clear()
            self.timer.start()
            self.updateButtons()

    def onTrainingEvent(self, event):
        if event["event"] == "progress":
            self.ui.trainingProgressBar.value = int(100 * event.get("fraction", 0.0))
        if event.get("message"):
            self.ui.trainingLogTextEdit.appendPlainText(event["message"])

    def pollTraining(self):
        process, workdir = self._trainingJob
        process.poll()
        if process.running():
            return
        try:
            process.wait(timeout=10)
            entry = self.logic.install_model(workdir / "model")
        except Exception as error:
            self.finishTraining("Training failed.")
            slicer.util.errorDisplay(f"Training failed: {error}")
            return
        self.finishTraining(f"Installed and activated model {entry.version}.")
        self.refreshModels()

    def finishTraining(self, message):
        _, workdir = self._trainingJob
        self._trainingJob = None
        shutil.rmtree(workdir, ignore_errors=True)
        self.ui.trainingProgressBar.visible = False
        self.ui.trainingLogTextEdit.appendPlainText(message)
        self.updateButtons()


class MRIFieldOfViewLogic(ScriptedLoadableModuleLogic, FieldOfViewLogic):
    """The MRML logic of MRIFieldOfViewLib with the module's parameter node."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        FieldOfViewLogic.__init__(self)

    def getParameterNode(self):
        return MRIFieldOfViewParameterNode(super().getParameterNode())


class MRIFieldOfViewTest(ScriptedLoadableModuleTest):
    """Runs the scenarios of MRIFieldOfViewLib.selftest (pytest runs the same ones headless)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_scenarios()

    def test_scenarios(self):
        from MRIFieldOfViewLib import selftest

        if any(importlib.util.find_spec(name) is None for name in ("torch", "safetensors")):
            # installed on first use (ensure_packages); every scenario runs the classifier here
            self.delayDisplay("Skipped: torch and safetensors are not installed in Slicer's Python yet")
            return
        with tempfile.TemporaryDirectory() as workdir:
            for scenario in selftest.SCENARIOS:
                self.delayDisplay(f"Scenario: {scenario.__name__}")
                slicer.mrmlScene.Clear()
                scenario(slicer, Path(workdir))
        self.delayDisplay("MRIFieldOfView scenarios passed")
