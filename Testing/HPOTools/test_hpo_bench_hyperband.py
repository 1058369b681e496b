"""`bench hyperband` at toy scale: resource accounting, the incumbent curve, the table-backed objective."""

import numpy as np
import pytest

from HPOToolsLib.benchmarks import hyperband_bench as hb


def test_hyperband_run_accounts_resumed_training():
    run = hb.run_one("mf-hartmann6", "hyperband", seed=0, total=4)
    spent, budgets = np.array(run["spent"]), np.array(run["budget"])
    assert np.all(np.diff(spent) > 0) and spent[-1] >= 4
    # The first bracket of R=27, eta=3 starts 27 configurations at 1 epoch, then 9 resumed to 3.
    assert list(budgets[:27]) == [1] * 27 and list(budgets[27:36]) == [3] * 9
    assert spent[26] == pytest.approx(27 / 27)
    assert spent[35] == pytest.approx((27 + 9 * 2) / 27)       # promotion 1 -> 3 costs 2
    assert np.all(np.array(run["regret"])[budgets == 27] >= 0)


def test_full_budget_methods_and_the_incumbent():
    run = hb.run_one("mf-hartmann6", "bo", seed=2, total=5)
    assert run["spent"] == [1, 2, 3, 4, 5] and run["budget"] == [27] * 5
    curve = hb.incumbent(run, np.array([0.5, 1, 2.5, 5, 9]))
    assert np.isnan(curve[0])
    assert curve[1] == run["regret"][0]
    assert curve[3] == min(run["regret"]) == curve[4]


def test_incumbent_ignores_partial_trainings():
    run = {"spent": [0.1, 0.2, 1.2], "budget": [1, 3, 27], "regret": [0.01, 0.02, 0.5]}
    assert np.isnan(hb.incumbent(run, np.array([0.15]))[0])
    assert hb.incumbent(run, np.array([1.2]))[0] == 0.5


def test_digits_table_problem_replays_curves():
    problem = hb.Problem("digits")
    run = hb.run_one("digits", "hyperband-bo-liar", seed=1, total=3)
    assert run["spent"][-1] >= 3
    assert np.all(np.array(run["regret"])[np.array(run["budget"]) == 27] >= 0)
    config = problem.space.members[0]
    assert problem.regret(config, 27) >= 0


def test_summary_and_ranking():
    runs = {"mf-hartmann6": {m: [hb.run_one("mf-hartmann6", m, s, 3) for s in range(2)]
                             for m in ("random", "hyperband")}}
    out = hb.summarise(runs, 3)["mf-hartmann6"]
    assert out["checkpoints"] == [3] and set(out["ranking_at_end"]) == {"random", "hyperband"}
    assert out["methods"]["random"]["at"]["3"]["runs_with_a_full_training"] == 2
    w = out["wins_against_hyperband"]["random"]
    assert w["better"] + w["worse"] + w["ties"] <= 2
