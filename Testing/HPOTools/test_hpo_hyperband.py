"""Hyperband (Li et al.) schedule, successive halving with resumes, Hyperband+BO variants, rebuild."""

import numpy as np
import pytest

from HPOToolsLib.benchmarks.functions import HARTMANN6_SPACE, mf_hartmann6
from HPOToolsLib.hyperband import bracket_schedule, make_scheduler
from HPOToolsLib.space import Float, Space
from HPOToolsLib.trials import Trial, TrialState


def test_bracket_schedule_r27_eta3_is_li_et_al_table():
    assert bracket_schedule(27, 3) == [
        [(27, 1), (9, 3), (3, 9), (1, 27)],
        [(12, 3), (4, 9), (1, 27)],
        [(6, 9), (2, 27)],
        [(4, 27)],
    ]
    # Li et al. (2018), Table 1: R = 81, eta = 3
    assert [rungs[0] for rungs in bracket_schedule(81, 3)] == [(81, 1), (34, 3), (15, 9), (8, 27), (5, 81)]
    with pytest.raises(ValueError, match="eta"):
        bracket_schedule(27, 1)
    # a budget in tiny units would sample millions of configurations before the first job
    assert bracket_schedule(3 ** 10, 3)[0][0][0] == 3 ** 10
    with pytest.raises(ValueError, match=r"first bracket of 4,782,969 configurations \(at most 100,000\)"):
        bracket_schedule(1e7, 3)


def run_to_end(scheduler, objective):
    jobs = []
    while (job := scheduler.next_job()) is not None:
        jobs.append(job)
        scheduler.report(job, objective(job.params, job.budget))
    return jobs


def test_one_iteration_runs_successive_halving_and_resumes_from_checkpoints():
    space = Space({"x": Float(0, 1)})
    scheduler = make_scheduler("hyperband", space, seed=0, max_budget=27, eta=3, max_iterations=1)
    trained_to = {}

    def objective(params, budget):
        return (params["x"] - 0.5) ** 2 + 1.0 / budget

    jobs = []
    while (job := scheduler.next_job()) is not None:
        assert job.resume_from == trained_to.get(job.config_id)     # resume where the last rung stopped
        trained_to[job.config_id] = job.budget
        jobs.append(job)
        scheduler.report(job, objective(job.params, job.budget))
    assert scheduler.finished
    per_rung = {}
    for job in jobs:
        per_rung.setdefault((job.bracket, job.rung), []).append(job)
    expected = [(n, r) for rungs in bracket_schedule(27, 3) for n, r in rungs]
    assert [(len(v), v[0].budget) for v in per_rung.values()] == expected
    # promoted configurations are the best of the previous rung
    for (bracket, rung), rung_jobs in per_rung.items():
        if rung == 0:
            continue
        previous = sorted(per_rung[(bracket, rung - 1)], key=lambda j: objective(j.params, j.budget))
        assert {j.config_id for j in rung_jobs} == {j.config_id for j in previous[:len(rung_jobs)]}
    # the resource actually trained: each configuration trained once up to its last budget
    assert sum(j.budget - (j.resume_from or 0) for j in jobs) == sum(trained_to.values())


def test_failed_jobs_are_not_promoted():
    space = Space({"x": Float(0, 1)})
    scheduler = make_scheduler("hyperband", space, seed=1, max_budget=9, eta=3, max_iterations=1)
    failed = set()
    while (job := scheduler.next_job()) is not None:
        assert job.config_id not in failed
        if job.params["x"] > 0.5:
            failed.add(job.config_id)
            trial = scheduler.report(job, float("nan"))
            assert trial.state == TrialState.FAILED
        else:
            scheduler.report(job, job.params["x"])
    assert failed and scheduler.finished


@pytest.mark.parametrize("method", ["hyperband-bo-thesis", "hyperband-bo-liar"])
def test_hyperband_bo_variants_run_and_improve_on_mf_hartmann6(method):
    scheduler = make_scheduler(method, HARTMANN6_SPACE, seed=0, max_budget=9, eta=3, max_iterations=2,
                               n_candidates=128, n_local=64)
    jobs = run_to_end(scheduler, mf_hartmann6)
    assert scheduler.finished and len(jobs) == 2 * sum(n for rungs in bracket_schedule(9, 3) for n, _ in rungs)
    best = scheduler.best_trial()
    assert best.budget == 9 and best.value < -1.0


def test_liar_selector_spreads_a_bracket():
    scheduler = make_scheduler("hyperband-bo-liar", Space({"x": Float(0, 1), "y": Float(0, 1)}), seed=0,
                               max_budget=9, eta=3, max_iterations=2, n_candidates=128, n_local=64)
    run_to_end(scheduler, lambda p, b: (p["x"] - 0.3) ** 2 + p["y"] + 1 / b)
    second_iteration = [t for t in scheduler.trials if t.bracket == 3 and t.rung == 0]
    X = np.array([[t.params["x"], t.params["y"]] for t in second_iteration])
    distances = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))[np.triu_indices(len(X), 1)]
    assert len(X) == 9 and distances.min() > 1e-3


def test_rebuild_from_trials_requeues_running_jobs_and_continues():
    space = Space({"x": Float(0, 1)})
    original = make_scheduler("hyperband", space, seed=4, max_budget=9, eta=3, max_iterations=1)
    running = []
    for _ in range(12):
        job = original.next_job()
        if len(running) < 2 and job.rung == 0:
            running.append(job)          # these two were running when the process was killed
        else:
            original.report(job, job.params["x"])
    stored = [Trial.from_dict(t.to_dict()) for t in original.trials]
    stored += [Trial(number=len(stored) + i, params=j.params, state=TrialState.RUNNING, budget=j.budget,
                     bracket=j.bracket, rung=j.rung, config_id=j.config_id) for i, j in enumerate(running)]
    rebuilt = make_scheduler("hyperband", space, seed=4, max_budget=9, eta=3, max_iterations=1)
    rebuilt.load_trials(stored)
    requeued = [rebuilt.next_job(), rebuilt.next_job()]
    assert {j.config_id for j in requeued} == {j.config_id for j in running}
    for job in requeued:
        rebuilt.report(job, job.params["x"])
    run_to_end(rebuilt, lambda p, b: p["x"])
    assert rebuilt.finished
    finals = [t for t in rebuilt.trials if t.budget == 9]
    assert len(finals) == sum(1 for rungs in bracket_schedule(9, 3) for n, r in rungs if r == 9 for _ in range(n))
