"""Registry of named objectives, each with its default search space.

    register_objective("benchmark:branin", factory)      # factory(**options) -> Objective
    objective = get_objective("benchmark:branin")        # Objective
    objective(params) or objective(params, budget)       # value to minimise

``Objective(name, function, space, multi_fidelity=False, max_budget=None, optimum=None,
description="", requires_full_space=False, model_task=None)``: ``function(params)`` (or
``function(params, budget)`` when ``multi_fidelity``) returns the value to minimise; ``space`` is its
default ``Space``; ``optimum`` the known minimum (benchmarks only). A study's own space may only use
names of ``space``; with ``requires_full_space`` it must name all of them (the function reads every
one; without it, the objective has defaults for those left out). ``model_task``: the model-store
task of the models its trials save (``context.model_folder``), None for objectives that save none;
a study checks every saved model, and the model it installs, against it.

Names are "<Module>:<name>" by convention. ``get_objective("X:name")`` first looks in the registry,
then imports ``XLib.hpo_objectives`` (if it exists), which registers the module's objectives
(e.g. "MRIFieldOfView:classifier"), and looks again.

Registered here: "benchmark:branin", "benchmark:hartmann6", "benchmark:mf-hartmann6" (max budget 27).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from SegTuneCore.errors import SegTuneError

from .space import Space


@dataclass
class Objective:
    name: str
    function: Callable[..., float]
    space: Space
    multi_fidelity: bool = False
    max_budget: float | None = None
    optimum: float | None = None
    description: str = ""
    requires_full_space: bool = False
    model_task: str | None = None

    def __call__(self, params: dict, *budget: Any) -> float:
        return self.function(params, *budget)


_REGISTRY: dict[str, Callable[..., Objective]] = {}


def register_objective(name: str, factory: Callable[..., Objective], *, replace: bool = False) -> None:
    if name in _REGISTRY and not replace and _REGISTRY[name] is not factory:
        raise SegTuneError(f"objective {name!r} is already registered")
    _REGISTRY[name] = factory


def list_objectives() -> list[str]:
    return sorted(_REGISTRY)


def get_objective(name: str, **options) -> Objective:
    if name not in _REGISTRY and ":" in name:
        module = name.split(":", 1)[0]
        try:
            importlib.import_module(f"{module}Lib.hpo_objectives")
        except ModuleNotFoundError as exc:
            if exc.name not in (f"{module}Lib", f"{module}Lib.hpo_objectives"):
                raise
    if name not in _REGISTRY:
        raise SegTuneError(f"unknown objective {name!r} (known: {', '.join(list_objectives())})")
    return _REGISTRY[name](**options)


def _register_benchmarks() -> None:
    from .benchmarks import functions as f

    register_objective("benchmark:branin", lambda: Objective(
        "benchmark:branin", f.branin, f.BRANIN_SPACE, optimum=f.BRANIN_OPTIMUM,
        description="Branin-Hoo, 2-D", requires_full_space=True))
    register_objective("benchmark:hartmann6", lambda: Objective(
        "benchmark:hartmann6", f.hartmann6, f.HARTMANN6_SPACE, optimum=f.HARTMANN6_OPTIMUM,
        description="Hartmann, 6-D", requires_full_space=True))
    register_objective("benchmark:mf-hartmann6", lambda max_budget=f.MF_HARTMANN6_MAX_BUDGET: Objective(
        "benchmark:mf-hartmann6", lambda params, budget: f.mf_hartmann6(params, budget, max_budget),
        f.MF_HARTMANN6_SPACE, multi_fidelity=True, max_budget=max_budget, optimum=f.MF_HARTMANN6_OPTIMUM,
        description="multi-fidelity Hartmann 6-D (Kandasamy et al. 2017); budget in (0, max_budget]",
        requires_full_space=True))


_register_benchmarks()
