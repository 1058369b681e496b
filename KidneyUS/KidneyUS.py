"""Kidney segmentation in 3D ultrasound, for adults and children (thesis §3).

Thin Slicer layer: the work is in KidneyUSLib (engine: no Slicer) and its logic.py (MRML).
Segmentation and training run in child processes (`python -m KidneyUSLib ...`) polled by a
QTimer, so the GUI never freezes and Cancel stops the whole process tree. torch is only imported
by those children and by the Logic when it segments in-process.
"""

import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from SegTuneCore.slicer_environment import child_environment, child_python, ensure_packages

from KidneyUSLib.logic import KidneyUSLogic as EngineLogic

TASK = "KidneyUS.segmentation"
DEFAULT_MODEL_LABEL = "default (active, else bundled)"
# installed on first use after a confirmation; Slicer's own numpy, SimpleITK and vtk are never touched


class KidneyUS(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Kidney US"
        self.parent.categories = ["Segmentation.SegTune"]
        self.parent.dependencies = []
        self.parent.contributors = ["SegTune developers"]
        self.parent.helpText = """
Segments the kidney capsule in a 3D ultrasound volume with a 3D U-Net. The volume is brought to
the network's frame (canonical orientation, 4 mm voxels, centred 80<sup>3</sup> cube, normalised
intensities) and the result is mapped back onto the input's own grid as a "Kidney" segment.
Models trained on healthy adults can be adapted to children by small <i>transfer layers</i>
(a predicted geometric transform at the input and a per-feature-map intensity modulation at the
lowest level) while the adult network stays frozen. The Training section trains a U-Net,
fine-tunes one, or trains transfer layers in the background and installs the new model.
<br>Method: Bertrand, <i>Hyper-parameter optimization in deep learning and transfer learning:
applications to medical imaging</i>, PhD thesis, chapter 3 (and Bertrand et al., ISBI 2018).
"""
        self.parent.acknowledgementText = "Part of the SegTune extension. Shapes seeded by TotalSegmentator test data (CC BY 4.0)."


@parameterNodeWrapper
class KidneyUSParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    method: Annotated[str, Choice(["auto", "unet", "transfer", "template"])] = "auto"
    modelName: str = ""
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    threshold: Annotated[float, WithinRange(0.05, 0.95)] = 0.5
    largestComponent: bool = True
    outputSegmentation: vtkMRMLSegmentationNode
    trainingMethod: Annotated[str, Choice(["unet", "finetune", "transfer", "template"])] = "unet"
    trainingAdultsFolder: Path = Path()
    trainingChildrenFolder: Path = Path()
    trainingAdults: Annotated[int, WithinRange(0, 10000)] = 40
    trainingChildren: Annotated[int, WithinRange(0, 10000)] = 12
    trainingEpochs: Annotated[int, WithinRange(1, 1000)] = 20
    trainingDevice: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"


def populationArguments(option, folder, count):
    """`--adults DIR` or `--adults N`; nothing when neither is given."""
    if str(folder) not in ("", "."):
        return [option, str(folder)]
    return [option, str(count)] if count > 0 else []


class KidneyUSWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._segmentJob = None   # (process, workdir, volume node)
        self._trainingJob = None  # (process, workdir)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/KidneyUS.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = KidneyUSLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self.onPoll)
        self.initializeParameterNode()
        self.refreshModels()

    def cleanup(self):
        for job in (self._segmentJob, self._trainingJob):
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
        if self._segmentJob:  # its input is going away with the scene
            self.cancelSegment("Cancelled: the scene was closed.")
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
        running = self._segmentJob is not None
        self.ui.applyButton.text = "Cancel" if running else "Apply"
        self.ui.applyButton.enabled = running or bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.trainButton.text = "Cancel training" if self._trainingJob else "Train"

    # --- models -------------------------------------------------------------------------------

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

    # --- segmentation in a child process --------------------------------------------------------

    def onApplyButton(self):
        if self._segmentJob:
            self.cancelSegment("Cancelled.")
            return
        if not ensure_packages("KidneyUS"):
            return
        with slicer.util.tryWithErrorDisplay("Failed to start the segmentation.", waitCursor=True):
            from SegTuneCore.process import PythonModuleProcess, work_folder

            params = self._parameterNode
            with work_folder("KidneyUS-") as workdir:
                inputPath = self.logic.write_input(params.inputVolume, workdir)
                args = self.logic.segment_arguments(inputPath, workdir / "kidney.seg.nrrd",
                                                    model=params.modelName or None,
                                                    method=None if params.method == "auto" else params.method,
                                                    device=params.device)
                args += ["--threshold", str(params.threshold)] + ([] if params.largestComponent else ["--all-components"])
                process = PythonModuleProcess("KidneyUSLib", args, on_event=self.onSegmentEvent,
                                              env=child_environment(), python=child_python()).start()
            self._segmentJob = (process, workdir, params.inputVolume)
            self.ui.progressBar.value = 0
            self.ui.progressBar.visible = True
            self.ui.statusLabel.text = "Starting..."
            self.timer.start()
            self.updateButtons()

    def onSegmentEvent(self, event):
        if event["event"] == "progress":
            self.ui.progressBar.value = int(100 * event.get("fraction", 0.0))
            self.ui.statusLabel.text = event.get("message", "")

    def cancelSegment(self, message):
        self._segmentJob[0].cancel()
        self.finishSegment(message)

    def finishSegment(self, message):
        _, workdir, _ = self._segmentJob
        self._segmentJob = None
        shutil.rmtree(workdir, ignore_errors=True)
        self.ui.progressBar.visible = False
        self.ui.statusLabel.text = message
        self.updateButtons()

    def onPoll(self):
        if self._segmentJob:
            self.pollSegment()
        if self._trainingJob:
            self.pollTraining()
        if not self._segmentJob and not self._trainingJob:
            self.timer.stop()

    def pollSegment(self):
        process, workdir, volumeNode = self._segmentJob
        process.poll()
        if process.running():
            return
        try:
            result = process.wait(timeout=10)
            node = self.logic.show_result(volumeNode, workdir / "kidney.seg.nrrd", self._parameterNode.outputSegmentation)
        except Exception as error:
            self.finishSegment("Failed.")
            slicer.util.errorDisplay(f"Segmentation failed: {error}")
            return
        self._parameterNode.outputSegmentation = node
        slicer.util.setSliceViewerLayers(background=volumeNode)
        template = result.get("template")
        folding = (f" Folded voxels {100 * template['folded_fraction']:.3f} %, {template['components']} component(s)."
                   if template else "")
        warnings = "".join(f" Warning: {warning}." for warning in result.get("warnings", []))
        self.finishSegment(f"Kidney: {result['volume_ml']:.1f} mL ({result['model']['version']}, "
                           f"{result['device']['device']}, {result['timings_s']['total']:.1f} s).{folding}{warnings}")

    # --- training in a child process ------------------------------------------------------------

    def onTrainButton(self):
        if self._trainingJob:
            self._trainingJob[0].cancel()
            self.finishTraining("Training cancelled.")
            return
        if not ensure_packages("KidneyUS"):
            return
        with slicer.util.tryWithErrorDisplay("Failed to start the training.", waitCursor=True):
            from SegTuneCore.process import PythonModuleProcess, work_folder

            params = self._parameterNode
            with work_folder("KidneyUS-training-") as workdir:
                args = ["train", "--method", params.trainingMethod, "--epochs", str(params.trainingEpochs),
                        "--device", params.trainingDevice, "--output", str(workdir / "model"), "--progress", "json"]
                if params.trainingMethod in ("unet", "template"):
                    args += populationArguments("--adults", params.trainingAdultsFolder, params.trainingAdults)
                else:  # fine-tuning and transfer layers adapt the selected model to children (§3.3.3, §3.4)
                    args += ["--base", str(self.logic.resolve_base(params.modelName or None))]
                args += populationArguments("--children", params.trainingChildrenFolder, params.trainingChildren)
                process = PythonModuleProcess("KidneyUSLib", args, on_event=self.onTrainingEvent,
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


class KidneyUSLogic(ScriptedLoadableModuleLogic, EngineLogic):
    """The MRML logic of KidneyUSLib with the module's parameter node."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        EngineLogic.__init__(self)

    def getParameterNode(self):
        return KidneyUSParameterNode(super().getParameterNode())


class KidneyUSTest(ScriptedLoadableModuleTest):
    """Runs the scenarios of KidneyUSLib.selftest (pytest runs the same ones headless)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_scenarios()

    def test_scenarios(self):
        from KidneyUSLib import selftest

        with tempfile.TemporaryDirectory() as workdir:
            for scenario in selftest.SCENARIOS:
                if scenario in selftest.NEEDS_TORCH and importlib.util.find_spec("torch") is None:
                    self.delayDisplay(f"Skipped {scenario.__name__}: torch is not installed in Slicer's Python")
                    continue
                self.delayDisplay(f"Scenario: {scenario.__name__}")
                slicer.mrmlScene.Clear()
                scenario(slicer, Path(workdir))
        self.delayDisplay("KidneyUS scenarios passed")
