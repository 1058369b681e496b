"""What the Slicer module files share: first-use dependency install and child processes.

Used only inside the Slicer desktop (imports `slicer` lazily, never Qt). The rules of
SLICER_NOTES: ask before installing; torch through the PyTorch extension when it is there (it
picks a build that matches the GPU driver); never replace Slicer's own numpy, SimpleITK or VTK;
children run Slicer's Python with Slicer's module paths.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
from typing import Mapping

# import name -> pip requirement of what the engines need beyond Slicer's own packages
ENGINE_REQUIREMENTS = {"torch": "torch", "safetensors": "safetensors>=0.4", "psutil": "psutil>=5.9"}


def missing_packages(requirements: Mapping[str, str] = ENGINE_REQUIREMENTS) -> list[str]:
    return [name for name in requirements if importlib.util.find_spec(name) is None]


def ensure_packages(requester: str, requirements: Mapping[str, str] = ENGINE_REQUIREMENTS) -> bool:
    """True when every package imports, installing the missing ones after the user agreed."""
    import slicer

    missing = missing_packages(requirements)
    if not missing:
        return True
    if not slicer.util.confirmOkCancelDisplay(
            f"{requester} needs the Python packages {', '.join(missing)} (torch is several hundred MB). "
            "Install them now?"):
        return False
    if "torch" in missing and importlib.util.find_spec("PyTorchUtils") is not None:
        # The PyTorch extension installs a CUDA build matching the driver (or the CPU build).
        importlib.import_module("PyTorchUtils").PyTorchUtilsLogic().installTorch(askConfirmation=False)
        missing.remove("torch")
    pending = [requirements[name] for name in missing]
    if pending:
        try:  # Slicer >= 5.11: progress, constraints that keep Slicer's own packages
            pydeps = importlib.import_module("slicer.pydeps")
        except ImportError:
            slicer.util.pip_install(pending)
        else:
            from packaging.requirements import Requirement

            pydeps.pip_ensure([Requirement(r) for r in pending], requester=requester)
    importlib.invalidate_caches()
    return not missing_packages(requirements)


def child_environment() -> dict:
    """Environment for `python -m <Lib>` children: Slicer's module paths on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def child_python() -> str:
    """Slicer's own Python interpreter (inside Slicer, sys.executable may be the application)."""
    return shutil.which("PythonSlicer", path=os.path.dirname(sys.executable)) or sys.executable
