"""Study specs: parsing, validation, defaults.

The smallest useful spec is ``{"objective": "benchmark:hartmann6", "method": "bo",
"budget": {"trials": 40}, "seed": 0}``. All fields:

- ``objective`` (required): a registered objective (``HPOToolsLib.objectives``), e.g.
  "benchmark:hartmann6", "benchmark:quadratic-model", "MRIFieldOfView:classifier".
- ``objective_options``: keyword arguments of the objective's factory (data folder, epochs, ...).
- ``space``: a search space in the JSON form of ``space_from_spec``; default: the objective's.
- ``method``: "grid", "random", "bo" (samplers) or "hyperband", "hyperband-bo-thesis",
  "hyperband-bo-liar" (multi-fidelity schedulers); ``method_options``: their keyword options
  (for Hyperband ``max_budget`` defaults to the objective's, ``eta`` to 3).
- ``budget``: at least one of ``trials`` (finished trials, failures included), ``wall_time``
  (seconds of runner time, summed over resumes), ``epochs`` (multi-fidelity: total resource
  Σ (budget − resume_from) of finished jobs).
- ``seed`` (default 0).
- ``failure_policy``: what the GP does with failed trials: "drop", "penalise", "feasibility"
  (default: the method's own default).
- ``on_stale``: a trial left running by a dead worker is "requeue"d (default) or "fail"ed
  (recorded CRASHED); ``max_attempts`` (default 3) caps the re-queues of one trial.
- ``trial_timeout``: seconds; a longer trial is stopped and recorded TIMEOUT.
- ``resources``: ``{"cpus": 1, "gpus": 0}`` per trial (Ray task requirements; gpus > 0 also makes
  the local executor give each worker a CUDA device).
- ``heartbeat``: ``{"interval": 2, "stale_after": 60}`` seconds; the stale limit applies to
  workers on other machines (a dead local worker is recognised by its process at once).
- ``trial_sleep``: seconds each trial waits before evaluating (demos and crash tests).
- ``task``: model-store task of the models the trials save (default: the objective's
  ``model_task``; a different one is refused). The study stores it, and the runner and ``install``
  refuse a model of another task.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from SegTuneCore.errors import SegTuneError

from ..space import Space, SpaceError, reject_duplicates, space_from_spec

SAMPLER_METHODS = ("grid", "random", "bo")
SCHEDULER_METHODS = ("hyperband", "hyperband-bo-thesis", "hyperband-bo-liar")
FIELDS = {"objective", "objective_options", "space", "method", "method_options", "budget", "seed",
          "failure_policy", "on_stale", "max_attempts", "trial_timeout", "resources", "heartbeat",
          "trial_sleep", "task", "name", "description"}


class SpecError(SegTuneError, ValueError):
    """An invalid study spec."""


@dataclass
class StudySpec:
    raw: dict                  # the normalised spec, as stored in the study
    objective: str
    objective_options: dict
    space: Space
    method: str
    method_options: dict
    budget_trials: int | None
    budget_wall_time: float | None
    budget_epochs: float | None
    seed: int
    on_stale: str
    max_attempts: int
    trial_timeout: float | None
    cpus: float
    gpus: float
    heartbeat_interval: float
    stale_after: float
    trial_sleep: float
    task: str | None
    fits: Callable[[dict], bool] | None = None    # the objective's static memory estimate, if any

    @property
    def multi_fidelity(self) -> bool:
        return self.method in SCHEDULER_METHODS

    def make_proposer_engine(self):
        """A fresh sampler (ask/tell) or scheduler (next_job/report) for this spec."""
        if self.multi_fidelity:
            from ..hyperband import make_scheduler

            return make_scheduler(self.method, self.space, self.seed, **self.method_options)
        from ..samplers import make_sampler

        options = dict(self.method_options)
        if self.method == "bo" and self.fits is not None:
            options.setdefault("fits", self.fits)     # BO never proposes what cannot fit in memory
        return make_sampler(self.method, self.space, self.seed, **options)


def load_spec_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file" if not path.exists() else f"{path}: not a file")
    try:
        return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=reject_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"{path}: invalid JSON ({getattr(exc, 'msg', exc)})") from None
    except SpaceError as exc:
        raise SpecError(f"{path}: {exc}") from None


def _number(spec: dict, key: str, *, minimum: float = 0.0, integer: bool = False, where: str = "") -> Any:
    value = spec[key]
    name = f"{where}{key}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"spec: {name} must be a number, got {value!r}")
    if integer and int(value) != value:
        raise SpecError(f"spec: {name} must be an integer, got {value!r}")
    if value <= minimum:
        raise SpecError(f"spec: {name} must be > {minimum:g}, got {value!r}")
    return int(value) if integer else float(value)


def _object(spec: dict, key: str) -> dict:
    value = spec.get(key, {})
    if not isinstance(value, dict):
        raise SpecError(f"spec: {key} must be an object, got {value!r}")
    return value


def parse_spec(spec: Any) -> StudySpec:
    """Validate a spec (dict from JSON) completely, including the objective and the method's options."""
    if not isinstance(spec, dict):
        raise SpecError(f"spec must be a JSON object, got {type(spec).__name__}")
    unknown = set(spec) - FIELDS
    if unknown:
        raise SpecError(f"spec: unknown field(s) {sorted(unknown)} (known: {sorted(FIELDS)})")
    if "objective" not in spec:
        raise SpecError("spec: missing 'objective' (e.g. \"benchmark:hartmann6\")")
    objective_name = spec["objective"]
    if not isinstance(objective_name, str) or not objective_name:
        raise SpecError(f"spec: objective must be a name, got {objective_name!r}")
    objective_options = _object(spec, "objective_options")
    objective = resolve_objective(objective_name, objective_options)

    try:
        space = space_from_spec(spec["space"]) if "space" in spec else objective.space
    except SpaceError as exc:
        raise SpecError(f"spec: space: {exc}") from None
    _check_space_names(space, objective)

    method = spec.get("method", "bo")
    if method not in SAMPLER_METHODS + SCHEDULER_METHODS:
        raise SpecError(f"spec: unknown method {method!r} (expected one of {list(SAMPLER_METHODS + SCHEDULER_METHODS)})")
    method_options = dict(_object(spec, "method_options"))
    if method in SCHEDULER_METHODS:
        if not objective.multi_fidelity:
            raise SpecError(f"spec: method {method!r} needs a multi-fidelity objective; {objective_name!r} is not")
        if objective.max_budget is not None:
            method_options.setdefault("max_budget", objective.max_budget)
    if "failure_policy" in spec:
        method_options.setdefault("failure_policy", spec["failure_policy"])

    budget = _object(spec, "budget")
    unknown = set(budget) - {"trials", "wall_time", "epochs"}
    if unknown:
        raise SpecError(f"spec: unknown budget field(s) {sorted(unknown)} (trials, wall_time, epochs)")
    if not budget:
        raise SpecError("spec: budget needs 'trials', 'wall_time' (seconds) or 'epochs', e.g. {\"trials\": 40}")
    trials = _number(budget, "trials", integer=True, where="budget.") if "trials" in budget else None
    wall_time = _number(budget, "wall_time", where="budget.") if "wall_time" in budget else None
    epochs = _number(budget, "epochs", where="budget.") if "epochs" in budget else None
    if epochs is not None and method not in SCHEDULER_METHODS:
        raise SpecError("spec: budget.epochs applies to multi-fidelity methods only; use budget.trials")

    seed = spec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SpecError(f"spec: seed must be a non-negative integer, got {seed!r}")
    on_stale = spec.get("on_stale", "requeue")
    if on_stale not in ("requeue", "fail"):
        raise SpecError(f"spec: on_stale must be 'requeue' or 'fail', got {on_stale!r}")
    max_attempts = _number(spec, "max_attempts", integer=True) if "max_attempts" in spec else 3
    trial_timeout = _number(spec, "trial_timeout") if spec.get("trial_timeout") is not None else None
    resources = _object(spec, "resources")
    if set(resources) - {"cpus", "gpus"}:
        raise SpecError(f"spec: unknown resources field(s) {sorted(set(resources) - {'cpus', 'gpus'})} (cpus, gpus)")
    cpus = _number(resources, "cpus") if "cpus" in resources else 1.0
    gpus = _number(resources, "gpus", minimum=-1e-12) if "gpus" in resources else 0.0
    heartbeat = _object(spec, "heartbeat")
    if set(heartbeat) - {"interval", "stale_after"}:
        raise SpecError("spec: heartbeat has only 'interval' and 'stale_after'")
    interval = _number(heartbeat, "interval", where="heartbeat.") if "interval" in heartbeat else 2.0
    stale_after = _number(heartbeat, "stale_after", where="heartbeat.") if "stale_after" in heartbeat else 60.0
    if stale_after <= 2 * interval:
        raise SpecError(f"spec: heartbeat.stale_after ({stale_after:g} s) must exceed twice the interval ({interval:g} s)")
    trial_sleep = _number(spec, "trial_sleep", minimum=-1e-12) if "trial_sleep" in spec else 0.0
    task = spec.get("task")
    if task is not None and (not isinstance(task, str) or not task):
        raise SpecError(f"spec: task must be a model-store task name, got {task!r}")
    if task is not None and objective.model_task is not None and task != objective.model_task:
        raise SpecError(f"spec: task {task!r} differs from the task of the models {objective_name!r} saves "
                        f"({objective.model_task!r}); leave task out")
    task = task or objective.model_task
    for key in ("name", "description"):
        if key in spec and not isinstance(spec[key], str):
            raise SpecError(f"spec: {key} must be a string")

    raw = {
        **{k: spec[k] for k in ("name", "description") if k in spec},
        **({"task": task} if task else {}),   # stored, so install needs not resolve the objective
        "objective": objective_name, "objective_options": objective_options, "space": space.to_spec(),
        "method": method, "method_options": method_options,
        "budget": {k: v for k, v in (("trials", trials), ("wall_time", wall_time), ("epochs", epochs)) if v is not None},
        "seed": seed, "on_stale": on_stale, "max_attempts": max_attempts, "trial_timeout": trial_timeout,
        "resources": {"cpus": cpus, "gpus": gpus}, "heartbeat": {"interval": interval, "stale_after": stale_after},
        "trial_sleep": trial_sleep,
    }
    parsed = StudySpec(raw, objective_name, objective_options, space, method, method_options, trials, wall_time,
                       epochs, seed, on_stale, max_attempts, trial_timeout, cpus, gpus, interval, stale_after,
                       trial_sleep, task, getattr(objective, "fits", None))
    try:
        parsed.make_proposer_engine()     # refuses unknown or invalid method options now, not mid-study
    except (ValueError, TypeError) as exc:
        raise SpecError(f"spec: method {method!r}: {exc}") from None
    return parsed


def _check_space_names(space: Space, objective) -> None:
    """Refuse names the objective does not read (every trial would fail on them) and, where it
    reads them all, names left out."""
    if objective.space is None:
        return
    known = objective.space.names
    unknown = [name for name in space.names if name not in known]
    missing = [name for name in known if name not in space.names] if objective.requires_full_space else []
    if unknown or missing:
        problems = ([f"unknown parameter(s) {unknown}"] if unknown else []) + \
                   ([f"missing parameter(s) {missing}"] if missing else [])
        raise SpecError(f"spec: space: {' and '.join(problems)} for objective {objective.name!r} "
                        f"(its parameters: {known})")


def resolve_objective(name: str, options: dict):
    """The registered objective (the study's own test objectives are registered first)."""
    from . import model_objectives  # noqa: F401 — registers "benchmark:quadratic-model"
    from ..objectives import get_objective

    try:
        return get_objective(name, **options)
    except TypeError as exc:
        raise SpecError(f"spec: bad objective_options for {name!r}: {exc}") from None
    except SegTuneError as exc:
        raise SpecError(f"spec: {exc}") from None
