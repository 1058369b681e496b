"""minimize() end to end, failure handling through the facade, the objectives registry."""

import numpy as np
import pytest

import HPOToolsLib
from HPOToolsLib.benchmarks.functions import (BRANIN_OPTIMUM, BRANIN_SPACE, HARTMANN6_ARGMIN, HARTMANN6_OPTIMUM,
                                              branin, hartmann6, mf_hartmann6)
from HPOToolsLib.objectives import Objective, get_objective, list_objectives, register_objective
from HPOToolsLib.space import Categorical, Float, Int
from HPOToolsLib.trials import TrialState
from SegTuneCore.errors import SegTuneError


def test_benchmark_functions_at_their_optima():
    for x1, x2 in [(-np.pi, 12.275), (np.pi, 2.275), (9.42478, 2.475)]:
        assert branin({"x1": x1, "x2": x2}) == pytest.approx(BRANIN_OPTIMUM, abs=1e-5)
    argmin = {f"x{i + 1}": v for i, v in enumerate(HARTMANN6_ARGMIN)}
    assert hartmann6(argmin) == pytest.approx(HARTMANN6_OPTIMUM, abs=1e-6)
    assert mf_hartmann6(argmin, 27) == hartmann6(argmin)
    assert mf_hartmann6(argmin, 3) > hartmann6(argmin)          # lower fidelity is biased up here


def test_bo_beats_random_on_branin_with_the_same_budget():
    regrets = {"bo": [], "random": []}
    for seed in range(3):
        for method in regrets:
            result = HPOToolsLib.minimize(branin, BRANIN_SPACE, method=method, n_trials=25, seed=seed,
                                          n_restarts=1) if method == "bo" else \
                HPOToolsLib.minimize(branin, BRANIN_SPACE, method=method, n_trials=25, seed=seed)
            assert len(result.trials) == 25
            regrets[method].append(result.best_value - BRANIN_OPTIMUM)
    assert np.median(regrets["bo"]) < 0.05 and np.median(regrets["bo"]) < np.median(regrets["random"]) / 5


def test_warm_start_failures_and_batches():
    space = {"x": Float(-2, 2), "kind": Categorical(["a", "b"]), "n": Int(1, 4)}
    calls = []

    def objective(p):
        calls.append(p)
        if p["n"] == 4:
            raise RuntimeError("diverged")
        if p["n"] == 3:
            return float("nan")
        return (p["x"] - 1) ** 2 + (p["kind"] == "b") + p["n"]

    baseline = {"x": 0.0, "kind": "a", "n": 1}
    result = HPOToolsLib.minimize(objective, space, method="bo", n_trials=16, seed=0, batch_size=4,
                                  initial=[(baseline, 2.0)], n_restarts=1)
    assert len(result.trials) == 17 and len(calls) == 16 and result.trials[0].params == baseline
    states = {t.state for t in result.trials}
    assert TrialState.FAILED in states
    failed = [t for t in result.trials if t.state == TrialState.FAILED]
    assert all(t.value is None and t.error for t in failed)
    assert any("RuntimeError: diverged" in t.error for t in failed)
    assert result.best_value == min(t.value for t in result.trials if t.state == TrialState.COMPLETE)
    assert result.best_value < 2.0


def test_fits_hook_records_oom_without_training():
    trained = []

    def objective(p):
        trained.append(p)
        return p["width"]

    fits = lambda p: p["width"] <= 6
    result = HPOToolsLib.minimize(objective, {"width": Int(1, 10)}, method="grid", n_trials=10, fits=fits)
    assert all(p["width"] <= 6 for p in trained)
    oom = [t for t in result.trials if t.state == TrialState.OOM]
    assert len(oom) == 4 and all("does not fit" in t.error for t in oom)
    assert result.best_params == {"width": 1}


def test_multi_fidelity_objective_gets_budget_and_job():
    seen = []

    def objective(params, budget, job):
        assert job.budget == budget and job.params == params
        seen.append((job.config_id, job.resume_from, budget))
        return mf_hartmann6(params, budget, 9)

    result = HPOToolsLib.minimize(objective, HPOToolsLib.benchmarks.functions.HARTMANN6_SPACE,
                                  method="hyperband", n_trials=40, seed=0, max_budget=9, eta=3)
    assert len(result.trials) == 40 and result.best_trial.budget == 9
    assert any(resume is not None for _, resume, _ in seen)
    spent = HPOToolsLib.minimize(lambda p, b: mf_hartmann6(p, b, 9), HPOToolsLib.benchmarks.functions.HARTMANN6_SPACE,
                                 method="hyperband", n_trials=1000, total_budget=30, max_budget=9, eta=3)
    assert sum(t.budget - (t.resume_from or 0) for t in spent.trials) >= 30 > sum(
        t.budget - (t.resume_from or 0) for t in spent.trials[:-1])


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown method"):
        HPOToolsLib.minimize(branin, BRANIN_SPACE, method="anneal")
    with pytest.raises(ValueError, match="warm start"):
        HPOToolsLib.minimize(lambda p, b: 0.0, BRANIN_SPACE, method="hyperband", initial=[({"x1": 0, "x2": 0}, 1.0)])
    with pytest.raises(ValueError, match="outside"):
        HPOToolsLib.minimize(branin, BRANIN_SPACE, method="random", n_trials=1, initial=[({"x1": 99, "x2": 0}, 1.0)])


def test_objectives_registry():
    assert {"benchmark:branin", "benchmark:hartmann6", "benchmark:mf-hartmann6"} <= set(list_objectives())
    branin_objective = get_objective("benchmark:branin")
    assert branin_objective.space.names == ["x1", "x2"] and branin_objective.optimum == pytest.approx(BRANIN_OPTIMUM)
    mf = get_objective("benchmark:mf-hartmann6", max_budget=9)
    assert mf.multi_fidelity and mf.max_budget == 9
    argmin = {f"x{i + 1}": v for i, v in enumerate(HARTMANN6_ARGMIN)}
    assert mf(argmin, 9) == pytest.approx(HARTMANN6_OPTIMUM, abs=1e-6)
    register_objective("test:constant", lambda: Objective("test:constant", lambda p: 1.0, BRANIN_SPACE))
    assert get_objective("test:constant")({"x1": 0, "x2": 0}) == 1.0
    with pytest.raises(SegTuneError, match="already registered"):
        register_objective("test:constant", lambda: None)
    with pytest.raises(SegTuneError, match="unknown objective 'Nowhere:thing'"):
        get_objective("Nowhere:thing")
