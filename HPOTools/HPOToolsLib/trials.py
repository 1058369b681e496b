"""Trials: one evaluation of one configuration (at one budget for multi-fidelity methods).

``TrialState``: QUEUED (created, not started), RUNNING, COMPLETE (finite value), PRUNED (stopped by
Hyperband at a lower rung: its value is the one at ``budget``), and the failure states of §2.6.3:
FAILED (objective raised or returned NaN/inf), CRASHED (worker process died), OOM (out of memory,
also used when the static ``fits(params)`` estimate refuses a configuration), TIMEOUT.

``Trial`` is a plain dataclass that round-trips through JSON (``to_dict`` / ``Trial.from_dict``) so a
study store can persist it. Samplers and schedulers rebuild their state from a list of trials.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from typing import Any


class TrialState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"
    CRASHED = "crashed"
    OOM = "oom"
    TIMEOUT = "timeout"

    @property
    def is_finished(self) -> bool:
        return self not in (TrialState.QUEUED, TrialState.RUNNING)

    @property
    def is_failure(self) -> bool:
        return self in FAILURE_STATES

    @property
    def has_value(self) -> bool:
        return self in (TrialState.COMPLETE, TrialState.PRUNED)


FAILURE_STATES = frozenset({TrialState.FAILED, TrialState.CRASHED, TrialState.OOM, TrialState.TIMEOUT})


@dataclass
class Trial:
    """One evaluation. ``value`` is the (minimised) objective, finite or None.

    ``budget`` is the resource the value was measured at (None for single-fidelity methods);
    ``intermediate`` maps budgets to values reported along the way (rungs, epochs).
    ``bracket``, ``rung`` and ``config_id`` locate a Hyperband job (see hyperband.Job).
    """

    number: int
    params: dict
    state: TrialState = TrialState.QUEUED
    value: float | None = None
    error: str | None = None
    budget: float | None = None
    intermediate: dict = field(default_factory=dict)
    bracket: int | None = None
    rung: int | None = None
    config_id: int | None = None
    resume_from: float | None = None

    def __post_init__(self):
        self.state = TrialState(self.state)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        d["intermediate"] = [[b, v] for b, v in self.intermediate.items()]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trial":
        d = dict(d)
        d["intermediate"] = {float(b): v for b, v in d.get("intermediate", [])}
        return cls(**d)


def clean_value(value: Any) -> tuple[float | None, str | None]:
    """(float value, None) for a finite number, else (None, reason) so the caller records FAILED."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None, f"objective returned a non-number: {value!r}"
    if not math.isfinite(number):
        return None, f"objective returned {number}"
    return number, None


def finished_outcome(value: Any, state: "TrialState | str", error: str | None, what: str) -> tuple:
    """(state, value, error) of a finished trial: a COMPLETE trial without a finite value becomes
    FAILED, failure states carry no value; `what` names the caller in the error for unfinished states."""
    state = TrialState(state)
    if state.has_value:
        value, reason = clean_value(value)
        if value is None:
            state, error = TrialState.FAILED, error or reason
    else:
        value = None
    if not state.is_finished:
        raise ValueError(f"{what} records finished trials, got state {state.value!r}")
    return state, value, error
