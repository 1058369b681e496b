"""HPOTools: hyper-parameter search for the SegTune networks (thin Slicer module).

The search engine, the studies and their background runner live in HPOToolsLib; this file wires
the panel to them: a study runs detached (it survives Slicer closing), the panel attaches to it
and polls its database with a QTimer, so the GUI never blocks.
"""

import json
import pathlib
from typing import Annotated

import qt
import slicer
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

METHODS = ["bo", "random", "grid", "hyperband", "hyperband-bo-liar", "hyperband-bo-thesis"]
TASKS = ["MRIFieldOfView:classifier", "KidneyUS:unet", "benchmark:hartmann6", "benchmark:branin"]
TASKS_WITH_DATA_FOLDER = ["MRIFieldOfView:classifier"]


class HPOTools(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "HPO Tools"
        self.parent.categories = ["Segmentation.SegTune"]
        self.parent.dependencies = []
        self.parent.contributors = ["SegTune developers"]
        self.parent.helpText = (
            "Searches the hyper-parameters of the SegTune networks with random and grid search, "
            "Gaussian-process Bayesian optimisation with an incremental Cholesky update, Hyperband "
            "and Hyperband + Bayesian optimisation, in a background process that survives crashes, "
            "and installs the winning model where KidneyUS and MRIFieldOfView find it. Methods: "
            "thesis sections 2.1-2.5 and Appendix A (incremental Cholesky); the loss-per-trial plot "
            "follows Fig. 2.15. Command line: python -m HPOToolsLib --help."
        )
        self.parent.acknowledgementText = (
            "Based on the hyper-parameter optimisation chapter of the PhD thesis SegTune is built on."
        )


@parameterNodeWrapper
class HPOToolsParameterNode:
    task: Annotated[str, Choice(TASKS)] = "MRIFieldOfView:classifier"
    method: Annotated[str, Choice(METHODS)] = "bo"
    trials: Annotated[int, WithinRange(1, 100000)] = 20
    seed: int = 0
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    dataFolder: pathlib.Path
    studyFolder: pathlib.Path
    activateInstalled: bool = True


class HPOToolsWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._folder = None
        self._tableNode = None
        self._chartNode = None
        self._timer = qt.QTimer()  # its interval follows the study (refresh)
        self._timer.connect("timeout()", self.refresh)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/HPOTools.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = HPOToolsLogic()
        self.ui.taskComboBox.addItems(TASKS)
        self.ui.methodComboBox.addItems(METHODS)
        self.ui.deviceComboBox.addItems(["auto", "cpu", "cuda"])
        self.ui.taskComboBox.connect("currentTextChanged(QString)", self.onTaskChanged)
        self.ui.startButton.connect("clicked(bool)", self.onStart)
        self.ui.attachButton.connect("clicked(bool)", self.onAttach)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.resumeButton.connect("clicked(bool)", self.onResume)
        self.ui.installButton.connect("clicked(bool)", self.onInstall)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self.onTaskChanged(self._parameterNode.task)
        self.updateButtons(None)

    def cleanup(self):
        self._timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:  # the first tag is 0: test the node, not the tag
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event):
        self._timer.stop()
        self._tableNode = self._chartNode = None
        self.ui.statusLabel.setText("")
        self.updateButtons(None)  # the study stays as it is; Attach shows it again
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    # -- search set-up ---------------------------------------------------------------------

    def onTaskChanged(self, task):
        if not task:  # binding the parameter node clears the combo box first
            return
        with slicer.util.tryWithErrorDisplay("Could not read the default search space.", waitCursor=True):
            self.ui.spaceTextEdit.setPlainText(json.dumps(self.logic.defaultSpace(task), indent=2))

    def onStart(self):
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not start the study.", waitCursor=True):
            space = json.loads(self.ui.spaceTextEdit.toPlainText() or "{}")
            folder = self.logic.startStudy(
                node.studyFolder, task=node.task, method=node.method, trials=node.trials, seed=node.seed,
                space=space, data_folder=node.dataFolder, device=node.device)
            self.attach(folder)

    # -- attached study --------------------------------------------------------------------

    def onAttach(self):
        with slicer.util.tryWithErrorDisplay("Could not open the study.", waitCursor=True):
            self.attach(self._parameterNode.studyFolder)

    def attach(self, folder):
        folder = pathlib.Path(folder)
        if folder != self._folder:  # attaching the same study again (resume) keeps its table and chart
            self._tableNode = self._chartNode = None
        self._folder = folder
        self.refresh()
        self.ui.trialsTableView.setMRMLTableNode(self._tableNode)
        slicer.modules.plots.logic().ShowChartInLayout(self._chartNode)
        self._timer.start()

    def refresh(self):
        try:
            status = self.logic.updateNodes(self._folder, self._tableNode, self._chartNode)
        except Exception as exc:  # the study may be mid-write or deleted: say so, keep polling
            self.ui.statusLabel.setText(f"cannot read the study: {exc}")
            self._timer.setInterval(self.logic.pollInterval(None))
            return
        self._tableNode, self._chartNode = status["table_node"], status["chart_node"]
        self.ui.statusLabel.setText(self.logic.describe(status))
        self.updateButtons(status)
        self._timer.setInterval(self.logic.pollInterval(status))

    def updateButtons(self, status):
        actions = self.logic.actions(status) if status else {"cancel": False, "resume": False, "install": False}
        self.ui.cancelButton.enabled = actions["cancel"]
        self.ui.resumeButton.enabled = actions["resume"]
        self.ui.installButton.enabled = actions["install"]

    def onCancel(self):
        with slicer.util.tryWithErrorDisplay("Could not cancel the study.", waitCursor=True):
            self.logic.cancel(self._folder)
            self.refresh()

    def onResume(self):
        with slicer.util.tryWithErrorDisplay("Could not resume the study.", waitCursor=True):
            self.logic.resume(self._folder, device=self._parameterNode.device)
            self.attach(self._folder)

    def onInstall(self):
        with slicer.util.tryWithErrorDisplay("Could not install the best model.", waitCursor=True):
            entry = self.logic.installBest(self._folder, activate=self._parameterNode.activateInstalled)
            slicer.util.infoDisplay(f"Installed {entry.task} {entry.version}"
                                    + (" (active)" if entry.active else "") + f"\n{entry.path}")


class HPOToolsLogic(ScriptedLoadableModuleLogic):
    """Usable without the GUI; every call goes to HPOToolsLib (imported lazily: numpy/scipy only)."""

    def getParameterNode(self):
        return HPOToolsParameterNode(super().getParameterNode())

    def defaultSpace(self, task):
        from HPOToolsLib.objectives import get_objective

        return get_objective(task).space.to_spec()

    def startStudy(self, folder, *, task, method, trials, seed, space, data_folder=None, device="auto"):
        from HPOToolsLib.study.runner import create_study

        spec = {"objective": task, "method": method, "budget": {"trials": int(trials)}, "seed": int(seed)}
        if space:
            spec["space"] = space
        if data_folder and str(data_folder) not in ("", "."):
            if task not in TASKS_WITH_DATA_FOLDER:
                raise ValueError(f"{task} searches run on generated data; leave the training data folder empty")
            spec["objective_options"] = {"data": str(data_folder)}
        created = create_study(folder, spec)
        self.resume(created, device)
        return created

    def updateNodes(self, folder, tableNode=None, chartNode=None):
        from HPOToolsLib.logic import update_study_nodes

        return update_study_nodes(folder, tableNode, chartNode)

    def pollInterval(self, status):
        from HPOToolsLib.logic import poll_interval_ms

        return poll_interval_ms(status)

    def describe(self, status):
        from HPOToolsLib.logic import describe_status

        return describe_status(status)

    def actions(self, status):
        from HPOToolsLib.logic import available_actions

        return available_actions(status)

    def cancel(self, folder):
        from HPOToolsLib.study.control import cancel_study

        return cancel_study(folder)

    def resume(self, folder, device="auto"):
        from HPOToolsLib.study.control import launch_background
        from SegTuneCore.slicer_environment import child_environment, child_python

        return launch_background(folder, ["--device", device] if device != "auto" else [],
                                 python=child_python(), env=child_environment())

    def installBest(self, folder, activate=True):
        from HPOToolsLib.study.install import install_trial

        entry, _, _ = install_trial(folder, activate=activate)
        return entry


class HPOToolsTest(ScriptedLoadableModuleTest):
    """Runs the scenarios of HPOToolsLib.selftest, which the pytest suite also runs headless."""

    def runTest(self):
        slicer.mrmlScene.Clear()
        from HPOToolsLib import selftest

        for scenario in selftest.SCENARIOS:
            self.delayDisplay(f"HPOTools: {scenario.__name__}")
            scenario()
        self.delayDisplay("HPOTools self-test passed")
