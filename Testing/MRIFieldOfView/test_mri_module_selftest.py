"""The Slicer module: its self-test scenarios run headless, and static checks of the GUI files
(the Slicer desktop cannot run here, so the .ui, the module file and CMake are checked as text)."""

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from MRIFieldOfViewLib import selftest
from SegTuneCore.errors import SegTuneError

MODULE = Path(__file__).resolve().parents[2] / "MRIFieldOfView"
MODULE_FILE = MODULE / "MRIFieldOfView.py"
UI_FILE = MODULE / "Resources" / "UI" / "MRIFieldOfView.ui"


def default_model_or_skip():
    from SegTuneCore.models import ModelStore

    try:
        return ModelStore().resolve("MRIFieldOfView.slice-classifier")
    except SegTuneError as error:
        pytest.skip(f"no bundled slice classifier yet: {error}")


@pytest.mark.parametrize("scenario", selftest.SCENARIOS, ids=lambda s: s.__name__)
def test_selftest_scenario_with_the_default_model(scenario, slicer_runtime, tmp_path):
    default_model_or_skip()
    scenario(slicer_runtime, tmp_path)  # exactly what MRIFieldOfViewTest runs inside Slicer


def ui_widgets():
    root = ET.parse(UI_FILE).getroot()
    assert root.tag == "ui" and root.get("version") == "4.0"
    return {w.get("name"): w for w in root.iter("widget")}, root


def module_tree():
    return ast.parse(MODULE_FILE.read_text())


def test_every_ui_attribute_used_by_the_module_exists_in_the_ui_file():
    widgets, _ = ui_widgets()
    used = {node.attr for node in ast.walk(module_tree())
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}
    assert used, "the module uses no ui widget?"
    assert used <= set(widgets), f"missing in the .ui: {sorted(used - set(widgets))}"


def test_every_slicer_parameter_name_is_a_parameter_of_the_parameter_node():
    widgets, _ = ui_widgets()
    bound = {}
    for name, widget in widgets.items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.find("string").text
    parameter_class = next(node for node in module_tree().body
                           if isinstance(node, ast.ClassDef) and node.name == "MRIFieldOfViewParameterNode")
    parameters = {statement.target.id for statement in parameter_class.body if isinstance(statement, ast.AnnAssign)}
    assert bound and set(bound.values()) <= parameters, (bound, parameters)
    assert len(set(bound.values())) == len(bound), "two widgets bound to one parameter"


def test_custom_widgets_are_declared_and_scene_is_passed_to_mrml_widgets():
    widgets, root = ui_widgets()
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in widgets.values()}
    assert {c for c in used if not c.startswith("Q")} <= declared
    connected = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    mrml = {name for name, w in widgets.items() if w.get("class", "").startswith("qMRML") and w.get("class") != "qMRMLWidget"}
    assert mrml <= connected, f"MRML widgets without a scene: {mrml - connected}"


def test_module_file_is_thin_and_imports_no_torch_at_module_level():
    text = MODULE_FILE.read_text()
    assert len(text.splitlines()) < 400
    tree = module_tree()
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {alias.name.split(".")[0] for n in top_level for alias in n.names} | \
        {n.module.split(".")[0] for n in top_level if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"torch", "numpy", "SimpleITK", "scipy"}, names
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes == ["MRIFieldOfView", "MRIFieldOfViewParameterNode", "MRIFieldOfViewWidget",
                       "MRIFieldOfViewLogic", "MRIFieldOfViewTest"]
    assert "thesis" in text and "§2.6" in text


def test_closing_the_scene_cancels_a_running_localization():
    # The widget needs the desktop app's Qt; check its wiring in the source. What a late result
    # does to the scene is tested on the headless runtime (test_mri_logic).
    widget = next(n for n in module_tree().body if isinstance(n, ast.ClassDef) and n.name == "MRIFieldOfViewWidget")
    methods = {n.name: n for n in widget.body if isinstance(n, ast.FunctionDef)}
    setup = ast.unparse(methods["setup"])
    assert "StartCloseEvent, self.onSceneStartClose" in setup

    def called(method):
        return {n.func.attr for n in ast.walk(methods[method]) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}

    assert "cancelLocalize" in called("onSceneStartClose")
    assert {"cancel", "finishLocalize"} <= called("cancelLocalize")


def test_cmake_lists_every_python_file_and_resource():
    cmake = (MODULE / "CMakeLists.txt").read_text()
    listed = set(cmake.split())
    python_files = {str(p.relative_to(MODULE)) for p in (MODULE / "MRIFieldOfViewLib").rglob("*.py")
                    if "__pycache__" not in p.parts}
    assert python_files <= listed, f"not in CMakeLists.txt: {sorted(python_files - listed)}"
    assert {"${MODULE_NAME}.py", "Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui"} <= listed
    for model_file in (MODULE / "Resources" / "Models").rglob("*"):
        if model_file.is_file() and model_file.name in ("model.json", "weights.safetensors"):
            assert str(model_file.relative_to(MODULE)) in listed
    assert "WITH_GENERIC_TESTS" in cmake and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in cmake


def test_icon_is_a_small_png():
    icon = MODULE / "Resources" / "Icons" / "MRIFieldOfView.png"
    assert icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and icon.stat().st_size < 50_000
