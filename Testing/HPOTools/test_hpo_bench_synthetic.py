"""`bench synthetic` at toy scale: problem definitions, regret traces, the comparison counts, the CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest

from HPOToolsLib.benchmarks import synthetic


def test_bbob_problem_optimum_is_reached_at_its_argmin():
    from cocoex.bare_problem import BareProblem

    problem = synthetic.make_problem("f07", seed=3, dimension=5)
    bare = BareProblem("bbob", 7, 5, 4)   # seed 3 -> instance 1 + 3 % 15
    assert problem.optimum == bare.best_value()
    assert problem.evaluate(bare.best_parameter()) == pytest.approx(problem.optimum, abs=1e-9)
    assert np.all(problem.lower == -5) and np.all(problem.upper == 5)


def test_named_problems_use_the_engine_functions():
    branin = synthetic.make_problem("branin", 0, 5)
    assert branin.evaluate(np.array([np.pi, 2.275])) == pytest.approx(branin.optimum, abs=1e-6)
    hartmann = synthetic.make_problem("hartmann6", 0, 5)
    assert len(hartmann.lower) == 6
    x = np.array([0.20168952, 0.15001069, 0.47687398, 0.27533243, 0.31165162, 0.65730054])
    assert hartmann.evaluate(x) == pytest.approx(hartmann.optimum, abs=1e-6)


@pytest.mark.parametrize("method", ["random", "bo", "tpe"])
def test_regret_trace_is_a_best_so_far_curve(method):
    run = synthetic.run_one("branin", method, seed=1, n_evals=12, dimension=5)
    regret = np.array(run["regret"])
    assert len(regret) == 12 and np.all(regret >= 0) and np.all(np.diff(regret) <= 0)
    assert run["seconds"] >= 0


def test_summary_counts_wins_and_ties():
    def runs(final):
        return [{"regret": [10.0, f], "seconds": 0.1} for f in final]

    results = {
        "f01": {"bo": runs([1, 2, 3]), "tpe": runs([5, 5, 5]), "gp": runs([2, 2, 2])},   # beats both
        "f02": {"bo": runs([4, 4, 4]), "tpe": runs([1, 2, 3]), "gp": runs([4, 4, 4])},   # loses to TPE, ties GP
        "f03": {"bo": runs([1e-9] * 3), "tpe": runs([0.0] * 3), "gp": runs([1e-3] * 3)},  # both at target: no win
    }
    out = synthetic.summarise(results, ["f01", "f02", "f03"], ["bo", "tpe", "gp"], 2)
    assert out["per_function"]["f01"]["bo"]["median"] == 2
    assert out["summary"]["bo_beats_tpe"]["functions"] == ["f01"]
    assert out["summary"]["bo_no_worse_than_gp"]["functions"] == ["f01", "f02", "f03"]


def test_cli_json_and_bad_input(tmp_path):
    cmd = [sys.executable, "-m", "HPOToolsLib", "bench", "synthetic", "--functions", "f01,branin",
           "--methods", "random,tpe", "--seeds", "2", "--n-evals", "5", "--cache", str(tmp_path / "c.json"), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out["per_function"]) == {"f01", "branin"}
    assert out["per_function"]["f01"]["tpe"]["runs"] == 2
    assert out["device"]["device"] == "cpu" and out["seeds"] == [0, 1]
    assert len(json.loads((tmp_path / "c.json").read_text())["runs"]) == 8   # cached for resuming
    bad = subprocess.run(cmd[:5] + ["--functions", "f99"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().startswith("error:") and len(bad.stderr.strip().splitlines()) == 1
