"""Samplers: coverage without repeats, batches, pending trials, failures, state rebuilt from trials."""

import math

import numpy as np
import pytest

from HPOToolsLib.samplers import BOSampler, make_sampler
from HPOToolsLib.space import Categorical, Float, Int, Ordinal, Space
from HPOToolsLib.trials import Trial, TrialState

FINITE = Space({"a": Int(0, 4), "b": Categorical(["x", "y"]), "c": Ordinal([1, 2, 4]),
                "d": Categorical(["u", "v"], condition=("b", ["x"]))})


def _loss(p):
    return (p["a"] - 2) ** 2 + (p["b"] == "y") + math.log2(p["c"]) + (p.get("d") == "v")


@pytest.mark.parametrize("method", ["grid", "random", "bo"])
def test_finite_space_covered_without_repeats(method):
    sampler = make_sampler(method, FINITE, seed=3)
    keys = []
    while True:
        batch = sampler.ask(4)
        if not batch:
            break
        for params in batch:
            FINITE.validate(params)
            keys.append(FINITE.key(params))
            sampler.tell(params, _loss(params))
    assert len(keys) == len(set(keys)) == FINITE.size == 45


def test_grid_discretises_floats_and_shuffles():
    space = Space({"x": Float(0, 1), "n": Int(1, 3)})
    ordered = make_sampler("grid", space, grid_points=3, shuffle=False).ask(9)
    assert ordered == [{"x": x, "n": n} for x in (0.0, 0.5, 1.0) for n in (1, 2, 3)]
    shuffled = make_sampler("grid", space, seed=1, grid_points=3).ask(20)
    assert len(shuffled) == 9 and shuffled != ordered
    assert sorted(map(str, shuffled)) == sorted(map(str, ordered))


def test_random_is_reproducible_and_pending_is_not_reproposed():
    space = Space({"x": Float(0, 1), "k": Int(0, 3)})
    a, b = make_sampler("random", space, seed=7), make_sampler("random", space, seed=7)
    assert a.ask(5) == b.ask(5)
    small = make_sampler("random", Space({"k": Int(0, 5)}), seed=0)
    first = small.ask(4)
    second = small.ask(4)              # nothing told yet: the 4 pending ones are not repeated
    assert len(second) == 2 and not {p["k"] for p in first} & {p["k"] for p in second}


def test_unknown_method_and_options():
    with pytest.raises(ValueError, match="unknown method"):
        make_sampler("tpe", FINITE)
    with pytest.raises(ValueError, match="multi-fidelity"):
        make_sampler("hyperband", FINITE)
    with pytest.raises(ValueError, match="bad option"):
        make_sampler("random", FINITE, kernel="se")
    with pytest.raises(ValueError, match="unknown batch"):
        make_sampler("bo", FINITE, batch="kriging")


def _quadratic(p):
    return (p["x"] - 0.3) ** 2 + (p["y"] - 0.7) ** 2


QUAD = Space({"x": Float(0, 1), "y": Float(0, 1)})


def test_bo_never_feeds_nan_inf_or_exceptions_to_the_gp():
    sampler = BOSampler(QUAD, seed=0, n_initial=3)
    bad_values = [float("nan"), float("inf"), -float("inf"), "oops", None]
    for i in range(20):
        params = sampler.ask()[0]
        trial = sampler.tell(params, bad_values[i % 5] if i % 3 == 0 else _quadratic(params))
        if i % 3 == 0:
            assert trial.state == TrialState.FAILED and trial.value is None and trial.error
    sampler.ask()                       # the GP catches up with the told trials at each ask
    assert np.all(np.isfinite(sampler.gp.y)) and sampler.gp.n == sum(t.state == TrialState.COMPLETE for t in sampler.trials)
    assert min(t.value for t in sampler.completed()) < 0.05


def test_bo_batch_liar_spreads_points_and_sample_draws_from_ei():
    sampler = BOSampler(QUAD, seed=1, n_initial=5)
    for params in sampler.ask(5):
        sampler.tell(params, _quadratic(params))
    batch = sampler.ask(6)
    X = QUAD.encode_many(batch)
    distances = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))[np.triu_indices(6, 1)]
    assert len(batch) == 6 and distances.min() > 1e-3          # the lies push the next points away
    assert sampler.gp.n == 5                                    # fantasies removed exactly
    assert len(sampler.pending) == 6
    sampling = BOSampler(QUAD, seed=1, n_initial=5, batch="sample")
    sampling.load_trials(sampler.trials)
    assert len(sampling.ask(4)) == 4


def test_bo_on_finite_space_proposes_only_untested_and_uses_pending_as_fantasies():
    sampler = BOSampler(FINITE, seed=2, n_initial=4)
    for params in sampler.ask(4):
        sampler.tell(params, _loss(params))
    pending = sampler.ask(3)
    more = sampler.ask(3)
    keys = [FINITE.key(p) for p in pending + more] + [FINITE.key(t.params) for t in sampler.trials]
    assert len(keys) == len(set(keys))


def test_failure_policies():
    space = Space({"x": Float(0, 1)})

    def objective(p):          # fails (out of memory) on the right third
        return None if p["x"] > 0.66 else (p["x"] - 0.6) ** 2

    failures = {}
    for policy in ("drop", "penalise", "feasibility"):
        sampler = BOSampler(space, seed=0, n_initial=4, failure_policy=policy, n_restarts=1)
        for _ in range(25):
            params = sampler.ask()[0]
            value = objective(params)
            sampler.tell(params, value, TrialState.COMPLETE if value is not None else TrialState.OOM)
        sampler.ask()
        failures[policy] = sum(t.state == TrialState.OOM for t in sampler.trials)
        if policy == "penalise":
            assert sampler.gp.n == 25 and np.all(np.isfinite(sampler.gp.y))
        else:
            assert sampler.gp.n == 25 - failures[policy]
    # the feasibility model learns where training fails; drop keeps going there (§2.6.3)
    assert failures["feasibility"] < failures["drop"]


def test_fits_hook_is_never_violated():
    def fits(p):
        return p["x"] + p["y"] < 1.2

    sampler = BOSampler(QUAD, seed=0, n_initial=3, fits=fits, n_restarts=1)
    for _ in range(15):
        for params in sampler.ask(2):
            assert fits(params)
            sampler.tell(params, _quadratic(params))


def test_rebuilding_from_trials_continues_identically():
    def run(sampler, n):
        for _ in range(n):
            params = sampler.ask()[0]
            sampler.tell(params, _quadratic(params))

    original = BOSampler(QUAD, seed=5, n_initial=3)
    run(original, 8)
    pending = original.ask(2)
    stored = [Trial.from_dict(t.to_dict()) for t in original.trials]
    stored += [Trial(number=len(stored) + i, params=p, state=TrialState.RUNNING) for i, p in enumerate(pending)]
    rebuilt = BOSampler(QUAD, seed=5, n_initial=3)
    rebuilt.load_trials(stored)
    assert rebuilt.pending == original.pending
    assert [t.to_dict() for t in rebuilt.trials] == [t.to_dict() for t in original.trials]
    # BO continues from the same data (its GP is refitted on all of it, so proposals may differ
    # from the uninterrupted run); the random initial design continues identically
    batch = rebuilt.ask(2)
    assert rebuilt.gp.n == 8 and len(batch) == 2
    random_a, random_b = make_sampler("random", QUAD, seed=2), make_sampler("random", QUAD, seed=2)
    run(random_a, 5)
    random_b.load_trials(random_a.trials)
    assert random_b.ask(3) == random_a.ask(3)
