"""Scenarios shared by the module's Slicer self-test and the headless pytest suite.

Each scenario builds its own study in a temporary folder, needs no network and no GPU, and
asserts what the HPOTools panel shows: the trials table, the running best, the buttons offered.
"""

from __future__ import annotations

import math
import os
import signal
import tempfile
import time
from pathlib import Path

from .logic import (IDLE_POLL_MS, RUNNING_POLL_MS, available_actions, poll_interval_ms, read_study, table_column,
                    update_study_nodes)
from .study.control import launch_background
from .study.runner import create_study, run_study


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def study_table_and_plot() -> None:
    """A finished study fills one table row per trial and a loss + running-best chart."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = create_study(Path(tmp) / "branin", {"objective": "benchmark:branin", "method": "random",
                                                    "budget": {"trials": 6}, "seed": 3})
        run_study(folder)
        status = update_study_nodes(folder)
        table, chart = status["table_node"], status["chart_node"]
        values = table_column(table, "value")
        best = table_column(table, "best so far")
        assert len(values) == 6 and status["trials"]["complete"] == 6, status["trials"]
        assert all(best[i] == min(values[: i + 1]) for i in range(6)), (values, best)
        assert math.isclose(best[-1], status["best"]["value"])
        assert chart.GetNumberOfPlotSeriesNodes() == 2
        actions = available_actions(status)
        assert actions == {"cancel": False, "resume": False, "install": True}, actions


def multi_fidelity_best_counts_only_the_largest_budget() -> None:
    """In a Hyperband study the running best is the winner's kind: values at the largest budget."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = create_study(Path(tmp) / "mf", {"objective": "benchmark:mf-hartmann6", "method": "hyperband",
                                                "objective_options": {"max_budget": 9},
                                                "method_options": {"max_budget": 9, "eta": 3},
                                                "budget": {"trials": 13}, "seed": 1})
        run_study(folder)
        status = update_study_nodes(folder)
        table = status["table_node"]
        budgets, values = table_column(table, "budget"), table_column(table, "value")
        best = table_column(table, "best so far")
        top = max(budgets)
        assert budgets[0] < top, "the first results are cheap rungs, or this checks nothing"
        expected, so_far = [], math.inf
        for value, budget in zip(values, budgets):
            so_far = min(so_far, value) if budget == top else so_far
            expected.append(so_far)
        assert all(b == e or (math.isinf(e) and math.isnan(b)) for b, e in zip(best, expected)), (best, expected)
        assert math.isclose(best[-1], status["best"]["value"])


def interrupted_study_offers_resume() -> None:
    """A runner killed with SIGKILL shows as interrupted, offers resume, and resuming finishes it;
    the panel's nodes stay as drawn while the study is idle and follow the resumed run."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = create_study(Path(tmp) / "killed", {"objective": "benchmark:branin", "method": "random",
                                                    "budget": {"trials": 8}, "seed": 5, "trial_sleep": 0.3})
        runner = launch_background(folder, [])
        _wait_for(lambda: read_study(folder)[0]["trials"]["complete"] >= 2, 60, "two completed trials")
        os.killpg(runner["pid"], signal.SIGKILL)
        status = _wait_for(lambda: (s := read_study(folder)[0])["state"] == "interrupted" and s, 10,
                           "the study to show as interrupted")
        assert status["pid"] is None
        assert available_actions(status)["resume"] and not available_actions(status)["cancel"]
        # the panel keeps reading an idle study, seldom, and redraws only what changed
        shown = update_study_nodes(folder)
        table, chart = shown["table_node"], shown["chart_node"]
        drawn, rows = table.GetMTime(), table.GetNumberOfRows()
        assert poll_interval_ms(shown) == IDLE_POLL_MS > RUNNING_POLL_MS
        assert update_study_nodes(folder, table, chart)["state"] == "interrupted" and table.GetMTime() == drawn
        launch_background(folder, [])  # resumed elsewhere: the command line, another Slicer
        running = _wait_for(lambda: (s := read_study(folder)[0])["state"] == "running" and s, 30, "the resumed run")
        assert poll_interval_ms(running) == RUNNING_POLL_MS
        status = _wait_for(lambda: (s := read_study(folder)[0])["state"] == "finished" and s, 90,
                           "the resumed study to finish")
        assert status["trials"]["complete"] == 8, status["trials"]
        assert update_study_nodes(folder, table, chart)["table_node"] is table and table.GetMTime() > drawn
        assert table.GetNumberOfRows() > rows and len(table_column(table, "value")) == len(read_study(folder)[1])
        numbers = [t.number for t in read_study(folder)[1] if t.state.value == "complete"]
        assert len(numbers) == len(set(numbers)) == 8


SCENARIOS = (study_table_and_plot, multi_fidelity_best_counts_only_the_largest_budget, interrupted_study_offers_resume)
