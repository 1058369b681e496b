"""HPOTools engine (no Slicer imports): search spaces, samplers (grid, random, GP-BO with the
incremental Cholesky), Hyperband and Hyperband + BO, failure handling, and ``minimize``.

Public API (see each module's docstring):

- ``HPOToolsLib.space``: ``Float``, ``Int``, ``Categorical``, ``Ordinal``, ``Space``,
  ``space_from_spec``, ``SpaceError``.
- ``HPOToolsLib.trials``: ``TrialState``, ``Trial``.
- ``HPOToolsLib.samplers``: ``make_sampler(method, space, seed=0, **options)``; ``ask(n)``,
  ``tell(params, value, state, error)``, ``load_trials(trials)``.
- ``HPOToolsLib.hyperband``: ``make_scheduler(method, space, seed=0, **options)``; ``next_job()``,
  ``report(job, value, state, error)``, ``load_trials(trials)``; ``bracket_schedule(R, eta)``.
- ``HPOToolsLib.gp``, ``kernels``, ``incremental_cholesky``, ``acquisition``, ``failures``.
- ``HPOToolsLib.objectives``: ``register_objective``, ``get_objective``, ``Objective``.
- ``HPOToolsLib.minimize(objective, space, method=..., n_trials=..., seed=..., ...)``
  (``HPOToolsLib.optimize``).
"""

from __future__ import annotations


def __getattr__(name):
    # ``minimize`` and ``OptimizeResult`` are imported on first use so that
    # ``python -m HPOToolsLib --help`` does not pay for scipy.
    if name in ("minimize", "OptimizeResult"):
        from . import optimize
        return getattr(optimize, name)
    raise AttributeError(f"module 'HPOToolsLib' has no attribute {name!r}")
