"""Samplers with one interface (see ``samplers.base``): grid, random, GP Bayesian optimisation.

``make_sampler(method, space, seed=0, **options)`` with method "grid", "random" or "bo"; the
options are the keyword arguments of ``GridSampler``, ``RandomSampler`` and ``BOSampler``.
Multi-fidelity methods ("hyperband", "hyperband-bo-thesis", "hyperband-bo-liar") are schedulers,
not samplers: ``HPOToolsLib.hyperband.make_scheduler``.
"""

from __future__ import annotations

from .base import Sampler
from .bo import BOSampler
from .grid import GridSampler
from .random import RandomSampler

SAMPLERS = {"grid": GridSampler, "random": RandomSampler, "bo": BOSampler}


def make_sampler(method: str, space, seed: int = 0, **options) -> Sampler:
    if method not in SAMPLERS:
        from ..hyperband import SCHEDULERS
        if method in SCHEDULERS:
            raise ValueError(f"{method!r} is multi-fidelity: use HPOToolsLib.hyperband.make_scheduler")
        raise ValueError(f"unknown method {method!r} (expected one of {sorted(SAMPLERS) + sorted(SCHEDULERS)})")
    try:
        return SAMPLERS[method](space, seed, **options)
    except TypeError as exc:
        raise ValueError(f"bad option for method {method!r}: {exc}") from None


__all__ = ["Sampler", "GridSampler", "RandomSampler", "BOSampler", "SAMPLERS", "make_sampler"]
