"""Checks of sampler and scheduler options, run in their constructors.

A study builds its sampler when the spec is validated, so an option of the wrong type or range
is refused there, in one line, instead of crashing the study trials later. Each check raises
``ValueError`` naming the option and returns the value.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def integer(name: str, value: Any, minimum: int) -> int:
    # bool is an int in Python, but `true` is no count of candidates
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def number(name: str, value: Any, minimum: float = -math.inf, *, above: bool = False) -> float:
    """A finite number >= minimum (> minimum with ``above``)."""
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating))
            or not math.isfinite(value) or value < minimum or (above and value == minimum)):
        bound = f" {'>' if above else '>='} {minimum:g}" if minimum > -math.inf else ""
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r} (expected one of {list(choices)})")
    return value
