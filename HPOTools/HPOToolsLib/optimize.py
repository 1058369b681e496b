"""``minimize``: a small facade for scripts, in the spirit of ``skopt.gp_minimize``.

    from HPOToolsLib import minimize
    from HPOToolsLib.space import Float, Int, Categorical
    result = minimize(lambda p: (p["x"] - 0.3) ** 2, {"x": Float(0, 1)}, method="bo", n_trials=30, seed=0)
    result.best_value, result.best_params, result.trials

Single-fidelity methods ("bo", "random", "grid"): ``objective(params: dict) -> float`` (minimised);
``n_trials`` new evaluations, proposed ``batch_size`` at a time (BO batches: constant liar by
default, ``batch="sample"`` for normalised-EI sampling); ``initial`` is a list of
``(params, value)`` already evaluated (warm start, e.g. the hand-made baseline of §2.6.3), told
first and not counted in ``n_trials``.

Multi-fidelity methods ("hyperband", "hyperband-bo-thesis", "hyperband-bo-liar"):
``objective(params, budget) -> float`` where ``budget`` is the total resource (epochs, minutes) to
train to; an objective that also accepts a keyword ``job`` receives the ``hyperband.Job``, whose
``config_id`` names the configuration's checkpoint and ``resume_from`` the budget it was already
trained to (None: from scratch), so training can resume instead of restart. ``n_trials`` counts
jobs; ``total_budget`` (optional) stops once the resource actually spent, Σ (budget − resume_from),
reaches it. ``max_budget`` (R, default 27) and ``eta`` (default 3) set the brackets.

Failures: an objective that raises, or returns NaN/inf/a non-number, is recorded as FAILED
(``MemoryError`` as OOM, ``TimeoutError`` as TIMEOUT) with the error text, and the search goes
on. ``fits(params) -> bool`` (a static memory estimate) is checked before each evaluation; a
configuration that does not fit is recorded as OOM without calling the objective (and BO does not
propose such configurations at all). Extra keyword ``options`` go to the sampler / scheduler.

Returns ``OptimizeResult`` with ``best_value``, ``best_params``, ``best_trial``, ``trials`` (each a
``Trial`` with ``params``, ``value``, ``state``, ``error``, ``budget``), ``method``, ``seed``.
For multi-fidelity methods the best is taken at the largest budget reached.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from .hyperband import SCHEDULERS, make_scheduler
from .samplers import SAMPLERS, make_sampler
from .space import Space
from .trials import Trial, TrialState


@dataclass
class OptimizeResult:
    best_value: float | None
    best_params: dict | None
    best_trial: Trial | None
    trials: list[Trial]
    method: str
    seed: int
    space: Space = field(repr=False)


def evaluate(call: Callable[[], Any]) -> tuple[Any, TrialState, str | None]:
    """Run one evaluation; exceptions become failure states (KeyboardInterrupt propagates)."""
    try:
        return call(), TrialState.COMPLETE, None
    except MemoryError as exc:
        return None, TrialState.OOM, f"MemoryError: {exc}"
    except TimeoutError as exc:
        return None, TrialState.TIMEOUT, f"TimeoutError: {exc}"
    except Exception as exc:  # noqa: BLE001 — any objective failure is a failed trial, not a crash
        return None, TrialState.FAILED, f"{type(exc).__name__}: {exc}"


def minimize(objective: Callable[..., float], space: Space | Mapping, method: str = "bo", n_trials: int = 50,
             seed: int = 0, batch_size: int = 1, initial: Iterable[tuple[dict, float]] | None = None,
             fits: Callable[[dict], bool] | None = None, max_budget: float = 27, eta: float = 3,
             total_budget: float | None = None, callback: Callable[[Trial], None] | None = None,
             **options) -> OptimizeResult:
    space = Space.of(space)
    if n_trials < 0 or batch_size < 1:
        raise ValueError(f"need n_trials >= 0 and batch_size >= 1, got {n_trials} and {batch_size}")
    if method in SCHEDULERS:
        if initial:
            raise ValueError("initial (warm start) is not supported by multi-fidelity methods")
        return _minimize_multi_fidelity(objective, space, method, n_trials, seed, fits, max_budget, eta,
                                        total_budget, callback, options)
    if method not in SAMPLERS:
        raise ValueError(f"unknown method {method!r} (expected one of {sorted(SAMPLERS) + sorted(SCHEDULERS)})")
    if method == "bo" and fits is not None:
        options["fits"] = fits
    sampler = make_sampler(method, space, seed, **options)
    for params, value in initial or ():
        sampler.tell(space.validate(params), value)
    start = len(sampler.trials)
    while len(sampler.trials) - start < n_trials:
        configs = sampler.ask(min(batch_size, n_trials - (len(sampler.trials) - start)))
        if not configs:
            break
        for params in configs:
            if fits is not None and not fits(params):
                trial = sampler.tell(params, None, TrialState.OOM, error="static memory estimate: does not fit")
            else:
                value, state, error = evaluate(lambda: objective(dict(params)))
                trial = sampler.tell(params, value, state, error)
            if callback:
                callback(trial)
    done = [t for t in sampler.trials if t.state == TrialState.COMPLETE]
    best = min(done, key=lambda t: t.value) if done else None
    return OptimizeResult(best.value if best else None, dict(best.params) if best else None, best,
                          list(sampler.trials), method, seed, space)


def _accepts_job(objective) -> bool:
    try:
        parameters = inspect.signature(objective).parameters
    except (TypeError, ValueError):
        return False
    return "job" in parameters or any(p.kind == p.VAR_KEYWORD for p in parameters.values())


def _minimize_multi_fidelity(objective, space, method, n_trials, seed, fits, max_budget, eta, total_budget,
                             callback, options) -> OptimizeResult:
    scheduler = make_scheduler(method, space, seed, max_budget=max_budget, eta=eta, **options)
    pass_job = _accepts_job(objective)
    spent = 0.0
    while len(scheduler.trials) < n_trials and (total_budget is None or spent < total_budget):
        job = scheduler.next_job()
        if job is None:
            break
        if fits is not None and not fits(job.params):
            trial = scheduler.report(job, None, TrialState.OOM, error="static memory estimate: does not fit")
        else:
            call = ((lambda: objective(dict(job.params), job.budget, job=job)) if pass_job
                    else (lambda: objective(dict(job.params), job.budget)))
            value, state, error = evaluate(call)
            trial = scheduler.report(job, value, state, error)
            spent += job.budget - (job.resume_from or 0.0)
        if callback:
            callback(trial)
    best = scheduler.best_trial()
    return OptimizeResult(best.value if best else None, dict(best.params) if best else None, best,
                          list(scheduler.trials), method, seed, space)
