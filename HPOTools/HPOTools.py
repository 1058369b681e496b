"""HPOTools: hyper-parameter search for the SegTune networks (thin Slicer module).

The search engine, the studies and their background runner live in HPOToolsLib; this file only
wires the panel to them.
"""

import pathlib

import slicer
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


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
            "thesis sections 2.1-2.5 and Appendix A (incremental Cholesky)."
        )
        self.parent.acknowledgementText = (
            "Based on the hyper-parameter optimisation chapter of the PhD thesis SegTune is built on."
        )


@parameterNodeWrapper
class HPOToolsParameterNode:
    studyFolder: pathlib.Path


class HPOToolsWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/HPOTools.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = HPOToolsLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self):
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode and self._parameterNodeGuiTag:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode and self._parameterNodeGuiTag:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)


class HPOToolsLogic(ScriptedLoadableModuleLogic):
    def getParameterNode(self):
        return HPOToolsParameterNode(super().getParameterNode())


class HPOToolsTest(ScriptedLoadableModuleTest):
    def runTest(self):
        slicer.mrmlScene.Clear()
        self.test_parameter_node()

    def test_parameter_node(self):
        node = HPOToolsLogic().getParameterNode()
        node.studyFolder = pathlib.Path("/tmp/study")
        self.assertEqual(node.studyFolder, pathlib.Path("/tmp/study"))
