"""One trial's evaluation, as run inside a worker's trial process or a Ray task.

An objective function is called as ``function(params)`` (``function(params, budget)`` for
multi-fidelity objectives). If it accepts these keywords it also gets:

- ``context``: a ``TrialContext`` — ``number``, ``folder`` (the trial's artifact folder),
  ``model_folder`` (where to ``SegTuneCore.models.save_model`` a trained model so ``install`` can
  find it), ``device`` ("cpu", "cuda:0", ...), ``seed`` (per trial), ``budget``/``resume_from``/
  ``config_id``/``checkpoint_folder`` (multi-fidelity: save the configuration's checkpoint
  there; ``checkpoint_to_resume()`` gives it back when a trial continues it from ``resume_from``),
  and ``report(step, value)`` for intermediate values (per epoch or rung);
- ``job``: the ``hyperband.Job`` (multi-fidelity), as ``minimize`` passes it.

It returns the value to minimise, or a dict ``{"value": v, "metrics": {...}}``. Exceptions become
failure states: ``MemoryError`` and "out of memory" errors OOM, ``TimeoutError`` TIMEOUT, others
FAILED; a non-finite value is FAILED. The process running this is not trusted to stay alive:
crashes and timeouts are recorded by the executor.
"""

from __future__ import annotations

import inspect
import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..trials import TrialState, clean_value


@dataclass
class TrialContext:
    number: int
    folder: Path
    device: str
    seed: int
    budget: float | None = None
    resume_from: float | None = None
    config_id: int | None = None
    checkpoint_folder: Path | None = None
    reporter: Callable[[float, float], None] | None = None

    @property
    def model_folder(self) -> Path:
        return self.folder / "model"

    def checkpoint_to_resume(self) -> tuple[Path | None, int]:
        """(the configuration's checkpoint, a model folder, and the budget it was trained to) when
        this trial continues one; (None, 0) for a fresh start, or when the earlier trial never
        wrote it (a crash): then train from scratch."""
        folder = self.checkpoint_folder
        if self.resume_from and folder is not None and (folder / "model.json").is_file():
            return folder, int(self.resume_from)
        return None, 0

    def report(self, step: float, value: float) -> None:
        """An intermediate value (validation loss after an epoch, at a rung)."""
        if self.reporter is not None:
            self.reporter(float(step), float(value))


def trial_seed(study_seed: int, number: int) -> int:
    return (int(study_seed) * 100_003 + int(number)) % (2 ** 31)


def _accepts(function: Callable, name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def classify(exc: BaseException) -> TrialState:
    text = str(exc).lower()
    if isinstance(exc, MemoryError) or "out of memory" in text:
        return TrialState.OOM
    if isinstance(exc, TimeoutError):
        return TrialState.TIMEOUT
    return TrialState.FAILED


def evaluate_trial(objective, task: dict, reporter: Callable[[float, float], None] | None = None) -> dict:
    """Evaluate ``task`` (see ``executors``) with ``objective``; never raises for objective errors."""
    started = time.time()
    intermediate: list[list[float]] = []

    def report(step: float, value: float) -> None:
        if math.isfinite(value):
            intermediate.append([step, value])
            if reporter is not None:
                reporter(step, value)

    folder = Path(task["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = task.get("checkpoint_folder")
    context = TrialContext(number=task["number"], folder=folder, device=task.get("device") or "cpu",
                           seed=task["seed"], budget=task.get("budget"), resume_from=task.get("resume_from"),
                           config_id=task.get("config_id"), checkpoint_folder=Path(checkpoint) if checkpoint else None,
                           reporter=report)
    if task.get("sleep"):
        time.sleep(task["sleep"])
    args: list[Any] = [dict(task["params"])]
    kwargs: dict[str, Any] = {}
    if objective.multi_fidelity:
        # Grid, random and BO train every configuration with the objective's full budget.
        budget = task.get("budget")
        args.append(objective.max_budget if budget is None else budget)
        if task.get("config_id") is not None and _accepts(objective.function, "job"):
            from ..hyperband import Job

            kwargs["job"] = Job(task["number"], task["config_id"], dict(task["params"]), task["budget"],
                                task.get("resume_from"), task["bracket"], task["rung"])
    if _accepts(objective.function, "context"):
        kwargs["context"] = context
    metrics: dict = {}
    try:
        returned = objective.function(*args, **kwargs)
        if isinstance(returned, dict):
            metrics = dict(returned.get("metrics") or {})
            returned = returned.get("value")
        value, error = clean_value(returned)
        state = TrialState.COMPLETE if value is not None else TrialState.FAILED
    except Exception as exc:  # noqa: BLE001 — any objective failure is a failed trial, not a crash
        state, value = classify(exc), None
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
        error = f"{type(exc).__name__}: {exc}{where}"
    return {"state": state.value, "value": value, "error": error, "metrics": metrics,
            "intermediate": intermediate, "duration": time.time() - started}
