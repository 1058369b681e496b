"""A headless Slicer application on `slicer-core`, exposed the way the desktop exposes it.

Inside the Slicer desktop app `headless_slicer()` returns the real `slicer` module untouched.
Elsewhere it builds a scene, the application logic and the module logics, and sets
`slicer.mrmlScene` and `slicer.modules.<name>.logic()` so that `logic.py` code and
`slicer.util` helpers (`getNode`, `addVolumeFromArray`, `arrayFromSegmentBinaryLabelmap`, ...)
run unchanged.

Order matters (measured): the application logic first; each module logic gets
`SetMRMLApplicationLogic` before `SetMRMLScene` and is registered with the application logic
by name. Node classes are registered by their logics, so every logic whose nodes a scene may
contain is created. The terminologies logic is left out: slicer-core ships no `.term.json`.
"""

from __future__ import annotations

import contextlib
import types
from typing import Iterator

# name used by slicer.modules.<name> -> class in slicer-core, in registration order
# (slicer.modules.<name>, module name the application logic knows it by, slicer-core class),
# in registration order; other logics look each other up by module name (e.g. "Colors").
MODULE_LOGICS = (
    ("colors", "Colors", "vtkSlicerColorLogic"),
    ("subjecthierarchy", "SubjectHierarchy", "vtkSlicerSubjectHierarchyModuleLogic"),
    ("transforms", "Transforms", "vtkSlicerTransformLogic"),
    ("volumes", "Volumes", "vtkSlicerVolumesLogic"),
    ("segmentations", "Segmentations", "vtkSlicerSegmentationsModuleLogic"),
    ("markups", "Markups", "vtkSlicerMarkupsLogic"),
    ("tables", "Tables", "vtkSlicerTablesLogic"),
    ("plots", "Plots", "vtkSlicerPlotsLogic"),
    ("sequences", "Sequences", "vtkSlicerSequencesLogic"),
)


class _ModuleHandle:
    """What `slicer.modules.<name>` is on the desktop, as far as logic code uses it."""

    def __init__(self, name: str, logic):
        self.name = name
        self._logic = logic

    def logic(self):
        return self._logic


class HeadlessSlicer:
    """The scene, application logic and module logics of one headless session."""

    def __init__(self):
        import slicer

        self.slicer = slicer
        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.logics = {}
        with vtk_log_silenced():
            for name, module_name, class_name in MODULE_LOGICS:
                logic = getattr(slicer, class_name)()
                logic.SetMRMLApplicationLogic(self.app_logic)
                logic.SetMRMLScene(self.scene)
                self.app_logic.SetModuleLogic(module_name, logic)
                self.logics[name] = logic
        self._previous: dict = {}
        import vtk

        @vtk.calldata_type(vtk.VTK_OBJECT)
        def on_node_added(scene, event, node):
            self._add_hierarchy_item(scene, node)

        self._node_added_tag = self.scene.AddObserver(slicer.vtkMRMLScene.NodeAddedEvent, on_node_added)

    def _add_hierarchy_item(self, scene, node) -> None:
        """Give new data nodes a subject-hierarchy item, as the desktop's plugins do."""
        if node is None or node.GetHideFromEditors() or not any(
                node.IsA(c) for c in ("vtkMRMLDisplayableNode", "vtkMRMLTableNode", "vtkMRMLPlotChartNode")):
            return
        hierarchy = scene.GetSubjectHierarchyNode()
        if hierarchy is not None and not hierarchy.GetItemByDataNode(node):
            hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)

    def install(self):
        """Expose this session as `slicer.mrmlScene` / `slicer.modules` (like the desktop)."""
        for attribute in ("mrmlScene", "modules", "applicationLogic"):
            self._previous[attribute] = getattr(self.slicer, attribute, _MISSING)
        self.slicer.mrmlScene = self.scene
        self.slicer.applicationLogic = self.app_logic
        self.slicer.modules = types.SimpleNamespace(
            **{name: _ModuleHandle(name, logic) for name, logic in self.logics.items()})
        return self.slicer

    def uninstall(self) -> None:
        for attribute, value in self._previous.items():
            if value is _MISSING:
                with contextlib.suppress(AttributeError):
                    delattr(self.slicer, attribute)
            else:
                setattr(self.slicer, attribute, value)
        self._previous = {}

    def close(self) -> None:
        self.uninstall()
        self.scene.RemoveObserver(self._node_added_tag)
        with vtk_log_silenced():  # detaching logics warns about the missing scene
            for logic in reversed(list(self.logics.values())):
                logic.SetMRMLScene(None)
            self.logics.clear()
            self.scene.Clear(True)


_MISSING = object()


def in_slicer_app() -> bool:
    """True inside the Slicer desktop application (which has `slicer.app`)."""
    try:
        import slicer
    except ImportError:
        return False
    return hasattr(slicer, "app") and not isinstance(getattr(slicer, "modules", None), types.SimpleNamespace)


@contextlib.contextmanager
def headless_slicer() -> Iterator:
    """Yield the `slicer` module with a ready scene; inside Slicer, the app's own objects."""
    if in_slicer_app():
        import slicer

        yield slicer
        return
    session = HeadlessSlicer()
    try:
        yield session.install()
    finally:
        session.close()


@contextlib.contextmanager
def vtk_log_silenced() -> Iterator[None]:
    """Silence VTK's log for a block: start-up noise, or C++ messages a caller turns into one
    clear SegTuneError (the colour logic, for one, looks for colour files a wheel lacks)."""
    import vtk

    previous = vtk.vtkLogger.GetCurrentVerbosityCutoff()
    vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_OFF)
    try:
        yield
    finally:
        vtk.vtkLogger.SetStderrVerbosity(previous)
