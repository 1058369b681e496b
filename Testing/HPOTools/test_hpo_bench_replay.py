"""Replay benchmark (Table 2.3): goal sets, draws-to-goal, and random search against its exact law."""

import math

import numpy as np
import pytest

from HPOToolsLib.benchmarks import replay


def test_goal_masks_on_a_known_table():
    losses = np.array([1.0, 1.004, 1.03, 1.2, 2.0] + [3.0] * 95)  # 100 models
    masks = replay.goal_masks(losses)
    assert masks["best model"].sum() == 1
    assert masks["within 1%"].sum() == 2      # 1.0 and 1.004
    assert masks["within 5%"].sum() == 3      # + 1.03
    assert masks["within 10%"].sum() == 3
    assert masks["top 1%"].sum() == 1         # ceil(1 model)
    assert masks["top 5%"].sum() == 5
    assert masks["top 10%"].sum() == 100      # the 10th best is 3.0, tied with every other 3.0


def test_draws_to_goals_counts_the_successful_draw():
    masks = {"best model": np.array([False, False, True, False])}
    assert replay.draws_to_goals(np.array([2, 0, 1, 3]), masks) == {"best model": 1}
    assert replay.draws_to_goals(np.array([3, 1, 0, 2]), masks) == {"best model": 4}
    assert replay.draws_to_goals(np.array([3, 1]), masks) == {"best model": None}


def test_random_orders_match_the_analytic_expectation():
    rng = np.random.default_rng(1)
    losses = rng.permutation(np.linspace(0.1, 1.0, 200))  # N = 200 distinct losses
    masks = replay.goal_masks(losses)
    runs = replay.random_runs(losses, masks, n_runs=4000, seed=3)
    for goal, k in (("best model", 1), ("top 5%", 10), ("top 10%", 20)):
        assert masks[goal].sum() == k
        draws = np.array([r[goal] for r in runs], dtype=float)
        mean, std = replay.random_expectation(200, k)
        assert mean == pytest.approx(201 / (k + 1))
        # Independent check of the law: P(X > n) = C(N-n, k) / C(N, k), so E[X] = sum_n P(X > n).
        expected = sum(math.comb(200 - n, k) / math.comb(200, k) for n in range(0, 200))
        assert mean == pytest.approx(expected, rel=1e-12)
        assert draws.mean() == pytest.approx(mean, abs=4 * std / math.sqrt(len(draws)))
        assert draws.std() == pytest.approx(std, rel=0.08)


def test_statistics_flag_censored_runs():
    runs = [{g: 3 for g in replay.GOALS}, {g: None for g in replay.GOALS}]
    stats = replay.statistics(runs, cap=10)
    assert stats["best model"] == {"mean": 6.5, "std": 3.5, "worst": 10, "median": 6.5, "censored": 1}
