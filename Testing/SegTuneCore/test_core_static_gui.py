"""Static checks of the Slicer module layer (the desktop app cannot run here, DESIGN.md §9).

- every `self.ui.<name>` a module file uses exists in its `.ui`, and every widget's
  `SlicerParameterName` names a parameter of the module's `@parameterNodeWrapper` class;
- every `.py` file of a module folder is listed in its CMakeLists.txt (and every listed file exists);
- module files stay thin (< 700 lines) and do not import torch when Slicer loads them (not even
  through the engine modules they import at top level);
- engines (`<Module>Lib/**.py` except `logic.py`) never import slicer, qt, ctk or vtk.
They run on whichever module folders exist, so modules written later are checked too.
"""

from __future__ import annotations

import ast
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = ("KidneyUS", "MRIFieldOfView", "HPOTools")
EXISTING = [m for m in MODULES if (REPO / m).is_dir()]
WITH_GUI = [m for m in EXISTING if (REPO / m / f"{m}.py").is_file() and (REPO / m / "Resources" / "UI" / f"{m}.ui").is_file()]
GUI_TOOLKITS = {"slicer", "qt", "ctk", "vtk", "vtkmodules", "mrml", "qSlicerBaseQTCore"}
MAX_MODULE_LINES = 700


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# --- .ui and parameter node -----------------------------------------------------------------

def ui_object_names(ui_file: Path) -> set[str]:
    """Names `slicer.util.childWidgetVariables` can return: widgets, layouts, actions, button groups."""
    root = ET.parse(ui_file).getroot()
    return {element.get("name") for element in root.iter() if element.tag in ("widget", "layout", "action", "buttongroup")
            and element.get("name")}


def ui_parameter_names(ui_file: Path) -> dict[str, str]:
    """widget name -> its SlicerParameterName."""
    names = {}
    for widget in ET.parse(ui_file).getroot().iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                names[widget.get("name")] = "".join(prop.itertext()).strip()
    return names


def used_ui_names(tree: ast.Module) -> set[str]:
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
            and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}


def _decorator_name(decorator: ast.expr) -> str:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")


def _annotation_class(annotation: ast.expr) -> str | None:
    """The class name an annotation refers to, looking through Annotated[...]."""
    if isinstance(annotation, ast.Subscript) and _decorator_name(annotation.value) == "Annotated":
        first = annotation.slice.elts[0] if isinstance(annotation.slice, ast.Tuple) else annotation.slice
        return _annotation_class(first)
    if isinstance(annotation, ast.Name):
        return annotation.id
    if isinstance(annotation, ast.Attribute):
        return annotation.attr
    return None


def parameter_classes(tree: ast.Module) -> tuple[list[dict[str, str | None]], dict[str, dict[str, str | None]]]:
    """(@parameterNodeWrapper classes, @parameterPack classes by name); each maps parameter -> annotation class."""
    wrappers, packs = [], {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        fields = {item.target.id: _annotation_class(item.annotation) for item in node.body
                  if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)}
        decorators = {_decorator_name(d) for d in node.decorator_list}
        if "parameterNodeWrapper" in decorators:
            wrappers.append(fields)
        if "parameterPack" in decorators:
            packs[node.name] = fields
    return wrappers, packs


def names_a_parameter(name: str, fields: dict[str, str | None], packs: dict[str, dict[str, str | None]]) -> bool:
    """`name` or `pack.member` (parameter packs) is a declared parameter."""
    head, _, rest = name.partition(".")
    if head not in fields:
        return False
    if not rest:
        return True
    pack = packs.get(fields[head] or "")
    return pack is not None and names_a_parameter(rest, pack, packs)


@pytest.mark.parametrize("module", WITH_GUI)
def test_module_uses_only_widgets_of_its_ui(module):
    ui_file = REPO / module / "Resources" / "UI" / f"{module}.ui"
    missing = used_ui_names(parse(REPO / module / f"{module}.py")) - ui_object_names(ui_file)
    assert not missing, f"{module}.py uses self.ui.{{{', '.join(sorted(missing))}}} that {ui_file.name} lacks"


@pytest.mark.parametrize("module", WITH_GUI)
def test_slicer_parameter_names_match_the_parameter_node(module):
    ui_file = REPO / module / "Resources" / "UI" / f"{module}.ui"
    bound = ui_parameter_names(ui_file)
    wrappers, packs = parameter_classes(parse(REPO / module / f"{module}.py"))
    if not bound:
        return
    assert wrappers, f"{ui_file.name} binds widgets to parameters but {module}.py has no @parameterNodeWrapper class"
    fields = {name: kind for wrapper in wrappers for name, kind in wrapper.items()}
    wrong = {widget: name for widget, name in bound.items() if not names_a_parameter(name, fields, packs)}
    assert not wrong, f"{ui_file.name}: SlicerParameterName names no parameter of {module}.py: {wrong}"


def test_checks_catch_a_broken_ui(tmp_path):
    """The checks above fail on a module whose .ui and code disagree."""
    ui = tmp_path / "M.ui"
    ui.write_text('<ui version="4.0"><widget class="QWidget" name="M"><layout class="QVBoxLayout" name="lay">'
                  '<item><widget class="QSpinBox" name="epochsSpinBox"><property name="SlicerParameterName" stdset="0">'
                  '<string>epoch</string></property></widget></item></layout></widget></ui>')
    code = ast.parse("@parameterNodeWrapper\nclass P:\n    epochs: Annotated[int, WithinRange(1, 9)] = 3\n"
                     "    pack: Inputs\n@parameterPack\nclass Inputs:\n    volume: vtkMRMLScalarVolumeNode\n"
                     "class W:\n    def setup(self):\n        self.ui.epochsSpinBox.value = 1\n        self.ui.applyButton.enabled = 0\n")
    assert used_ui_names(code) - ui_object_names(ui) == {"applyButton"}
    wrappers, packs = parameter_classes(code)
    assert wrappers == [{"epochs": "int", "pack": "Inputs"}]
    assert not names_a_parameter(ui_parameter_names(ui)["epochsSpinBox"], wrappers[0], packs)
    assert names_a_parameter("pack.volume", wrappers[0], packs) and not names_a_parameter("pack.mask", wrappers[0], packs)


# --- CMake lists ----------------------------------------------------------------------------

def cmake_listed_scripts(cmake_file: Path, keyword: str = "SCRIPTS") -> set[str]:
    """Files passed as SCRIPTS (or RESOURCES) to slicerMacroBuildScriptedModule / ctkMacroCompilePythonScript."""
    text = re.sub(r"#[^\n]*", "", cmake_file.read_text(encoding="utf-8"))
    variables: dict[str, list[str]] = {}
    for name, body in re.findall(r"\bset\s*\(\s*(\w+)\s+([^)]*)\)", text, flags=re.IGNORECASE):
        variables[name] = body.replace('"', " ").split()

    def expand(tokens: list[str], depth: int = 0) -> list[str]:
        out = []
        for token in tokens:
            whole = re.fullmatch(r"\$\{(\w+)\}", token)
            if whole and depth < 10:
                out += expand(variables.get(whole.group(1), []), depth + 1)
            else:
                out.append(re.sub(r"\$\{(\w+)\}", lambda m: " ".join(variables.get(m.group(1), [])), token))
        return out

    listed: set[str] = set()
    for body in re.findall(r"\b(?:slicerMacroBuildScriptedModule|ctkMacroCompilePythonScript)\s*\(([^)]*)\)", text):
        tokens = body.replace('"', " ").split()
        if keyword in tokens:
            after = tokens[tokens.index(keyword) + 1:]
            ending = next((i for i, t in enumerate(after) if re.fullmatch(r"[A-Z_]+", t)), len(after))
            listed.update(expand(after[:ending]))
    return listed


CMAKE_FOLDERS = EXISTING + (["SegTuneCore"] if (REPO / "SegTuneCore").is_dir() else [])


@pytest.mark.parametrize("folder", CMAKE_FOLDERS)
def test_every_python_file_is_listed_in_cmake(folder):
    cmake = REPO / folder / "CMakeLists.txt"
    assert cmake.is_file(), f"{folder}/CMakeLists.txt is missing (the top-level CMakeLists adds this folder)"
    listed = cmake_listed_scripts(cmake)
    present = {p.relative_to(REPO / folder).as_posix() for p in python_files(REPO / folder)}
    assert not present - listed, f"{folder}/CMakeLists.txt does not list {sorted(present - listed)}"
    assert not listed - present, f"{folder}/CMakeLists.txt lists missing files {sorted(listed - present)}"


@pytest.mark.parametrize("folder", EXISTING)
def test_every_data_file_of_a_module_library_is_packaged(folder):
    # the installed extension has only what CMake lists: a data file left out breaks a default path
    tracked = subprocess.run(["git", "ls-files", folder], cwd=REPO, capture_output=True, text=True, check=True)
    data = {Path(p).relative_to(folder).as_posix() for p in tracked.stdout.split()
            if "/data/" in p and not p.endswith(".py")}
    missing = data - cmake_listed_scripts(REPO / folder / "CMakeLists.txt", "RESOURCES")
    assert not missing, f"{folder}/CMakeLists.txt does not package {sorted(missing)}"


def test_top_level_cmake_adds_every_module():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    added = set(re.findall(r"add_subdirectory\s*\(\s*(\w+)\s*\)", text))
    assert set(CMAKE_FOLDERS) <= added


def test_cmake_parser_on_a_known_file(tmp_path):
    cmake = tmp_path / "CMakeLists.txt"
    cmake.write_text("set(MODULE_NAME Foo)\n# set(X ignored.py)\nset(MODULE_PYTHON_SCRIPTS\n  ${MODULE_NAME}.py\n"
                     "  FooLib/a.py # comment\n  FooLib/sub/b.py\n  )\nslicerMacroBuildScriptedModule(\n"
                     "  NAME ${MODULE_NAME}\n  SCRIPTS ${MODULE_PYTHON_SCRIPTS}\n  RESOURCES ${R}\n  WITH_GENERIC_TESTS\n  )\n")
    assert cmake_listed_scripts(cmake) == {"Foo.py", "FooLib/a.py", "FooLib/sub/b.py"}


# --- thin module files, engines without GUI toolkits ----------------------------------------

def import_time_imports(tree: ast.Module) -> list[tuple[str, list[str], int]]:
    """(module, imported names, level) of every import executed when the file is imported:
    module level and class bodies, not function bodies; `if TYPE_CHECKING:` blocks skipped."""
    found = []

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.Import):
                found.extend((alias.name, [], 0) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                found.append((node.module or "", [alias.name for alias in node.names], node.level))
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, []) or [])

    visit(tree.body)
    return found


def resolve_project_module(name: str, roots: dict[str, Path]) -> list[Path]:
    """Files Python executes for `import name` of a project package (its __init__ chain included)."""
    parts = name.split(".")
    if parts[0] not in roots:
        return []
    files, folder = [], roots[parts[0]]
    for index, part in enumerate(parts):
        folder = folder / part
        if (folder / "__init__.py").is_file():
            files.append(folder / "__init__.py")
        elif index == len(parts) - 1 and folder.with_suffix(".py").is_file():
            files.append(folder.with_suffix(".py"))
    return files


def package_of(path: Path) -> str:
    parts, folder = [], path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts)


def torch_import_chain(start: Path, roots: dict[str, Path]) -> list[str] | None:
    """The chain of files through which importing `start` imports torch, or None."""
    queue, seen = [(start, [start.name])], {start}
    while queue:
        path, chain = queue.pop(0)
        package = package_of(path)
        for module, names, level in import_time_imports(parse(path)):
            if level:  # relative import inside a project package
                base = package.split(".")[: len(package.split(".")) - level + 1]
                module = ".".join(base + ([module] if module else []))
            if module.split(".")[0] == "torch":
                return chain + [f"import {module}"]
            targets = resolve_project_module(module, roots)
            for alias in names:  # `from package import submodule`
                targets += resolve_project_module(f"{module}.{alias}", roots)
            for target in targets:
                if target not in seen:
                    seen.add(target)
                    shown = target.relative_to(REPO).as_posix() if target.is_relative_to(REPO) else str(target)
                    queue.append((target, chain + [shown]))
    return None


@pytest.mark.parametrize("module", [m for m in EXISTING if (REPO / m / f"{m}.py").is_file()])
def test_module_file_is_thin_and_imports_no_torch(module):
    path = REPO / module / f"{module}.py"
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines < MAX_MODULE_LINES, f"{module}.py has {lines} lines (keep the GUI layer thin, logic in {module}Lib)"
    roots = {f"{m}Lib": REPO / m for m in EXISTING} | {"SegTuneCore": REPO}
    chain = torch_import_chain(path, roots)
    assert chain is None, f"loading {module}.py imports torch: {' -> '.join(chain)}"


def test_torch_chain_detection(tmp_path):
    (tmp_path / "M.py").write_text("import os\nfrom MLib.engine import run\ndef f():\n    import torch\n")
    (tmp_path / "MLib").mkdir()
    (tmp_path / "MLib" / "__init__.py").write_text("")
    (tmp_path / "MLib" / "engine.py").write_text("from . import helpers\n")
    (tmp_path / "MLib" / "helpers.py").write_text("from .net import Net\n")
    (tmp_path / "MLib" / "net.py").write_text("try:\n    import torch.nn\nexcept ImportError:\n    pass\n")
    roots = {"MLib": tmp_path}
    chain = torch_import_chain(tmp_path / "M.py", roots)
    assert chain is not None and chain[-1] == "import torch.nn"
    (tmp_path / "MLib" / "net.py").write_text("def build():\n    import torch\n")
    assert torch_import_chain(tmp_path / "M.py", roots) is None


def gui_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """Every import (at any depth, also inside functions) of a GUI toolkit or MRML."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] in GUI_TOOLKITS]
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] in GUI_TOOLKITS:
            found.append((node.lineno, node.module))
    return found


ENGINE_FILES = [p for m in EXISTING for p in python_files(REPO / m / f"{m}Lib") if p.relative_to(REPO / m).as_posix()
                != f"{m}Lib/logic.py"]


@pytest.mark.parametrize("path", ENGINE_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_engines_import_no_gui_toolkit(path):
    found = gui_imports(parse(path))
    assert not found, f"{path.relative_to(REPO)} imports {found} (only {path.parent.name}/logic.py may use MRML)"


def test_gui_import_detection():
    tree = ast.parse("import numpy\nfrom vtk.util import numpy_support\ndef f():\n    import slicer\n    import qt as q\n")
    assert gui_imports(tree) == [(2, "vtk.util"), (4, "slicer"), (5, "qt")]
