"""`python -m HPOToolsLib bench ...`: dispatch, --json, errors without traceback; Table 2.2."""

import json
import subprocess
import sys

import pytest
from scipy.stats import hypergeom

from HPOToolsLib.benchmarks.random_bound import THESIS_TABLE, draws_needed


def test_table_2_2_against_the_hypergeometric_distribution():
    for fraction, thesis in THESIS_TABLE.items():
        good = int(fraction * 100_000)
        for p, expected in zip((0.5, 0.95, 0.99), thesis):
            n = draws_needed(100_000, fraction, p)
            assert n == expected
            # independent check: P(no good one in n draws without replacement) = hypergeom pmf at 0
            assert 1 - hypergeom.pmf(0, 100_000, good, n) > p >= 1 - hypergeom.pmf(0, 100_000, good, n - 1)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "HPOToolsLib", *args], capture_output=True, text=True, timeout=120)


def test_random_bound_json():
    result = run_cli("bench", "random-bound", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert [row["draws"]["0.99"] for row in payload["rows"]] == [458, 90, 44]
    assert all(row["matches_thesis"] for row in payload["rows"])
    assert payload["environment"]["device"] == "cpu" and "numpy" in payload["environment"]


@pytest.mark.parametrize("args,message", [
    (("bench", "random-bound", "--size", "3"), "error: --size must be at least 10"),
    (("bench", "latency", "--sizes", "5", "--methods", "incremental"), "error: bad --methods"),
])
def test_bad_input_is_one_line_error(args, message):
    result = run_cli(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(message) and "Traceback" not in result.stderr


def test_unknown_bench_is_usage_error():
    result = run_cli("bench", "nope")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_latency_smoke():
    result = run_cli("bench", "latency", "--sizes", "40", "--methods", "incremental,full", "--suggestions", "2", "--json")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)["results"][0]
    assert row["n"] == 40 and row["incremental"]["median"] > 0 and row["full"]["median"] > 0
