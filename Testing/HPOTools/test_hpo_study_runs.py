"""End-to-end tests of HPO studies through the real CLI: background runs killed with SIGKILL and
resumed, two workers on one study, cancel, install of the winner into the model store, report."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from SegTuneCore.models import ModelStore, verify_model
from SegTuneCore.process import PythonModuleProcess

pytestmark = pytest.mark.timeout(120)


def hpo(*args, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "HPOToolsLib", *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if check and result.returncode != 0:
        raise AssertionError(f"hpo {args} failed ({result.returncode}): {result.stderr}")
    return result


def status(study: Path) -> dict:
    return json.loads(hpo("status", study, "--json").stdout)


def wait_for(predicate, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    alive = []
    for process in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(process.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return alive


def trials_of(study: Path) -> list[dict]:
    return json.loads(hpo("export", study, "--json").stdout)


def write_spec(path: Path, **spec) -> Path:
    path.write_text(json.dumps(spec))
    return path


def param_keys(trials: list[dict]) -> list[tuple]:
    return [tuple(sorted(t["params"].items())) for t in trials]


def test_background_study_survives_sigkill_and_resumes(tmp_path):
    budget = 10
    spec = write_spec(tmp_path / "spec.json", objective="benchmark:quadratic-model", method="bo",
                      budget={"trials": budget}, seed=3, trial_sleep=0.4)
    study = tmp_path / "study"
    started = hpo("run", spec, "--study", study, "--background", "--json")
    info = json.loads(started.stdout)
    pid = info["pid"]
    assert os.getpgid(pid) == pid, "the background runner leads its own process group"
    assert os.getsid(pid) == pid, "the background runner runs in its own session"
    first = status(study)
    assert first["state"] == "running" and first["pid"] == pid

    wait_for(lambda: status(study)["trials"]["complete"] >= 3, what="3 completed trials")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not group_alive(pid), timeout=10, what="the runner's process group to die")
    before = {t["trial"]: t for t in trials_of(study) if t["state"] == "complete"}
    killed = status(study)
    assert killed["state"] == "interrupted" and killed["pid"] is None
    assert len(before) >= 3

    # resumed in the foreground as the Slicer panel would: SegTune's JSON-lines process protocol
    resumed = PythonModuleProcess("HPOToolsLib", ["resume", study, "--progress", "json"]).start()
    result = resumed.wait(timeout=90)
    assert {e["event"] for e in resumed.events} >= {"progress", "log", "result"}
    assert result["state"] == "finished" and result["stopped"] is None

    final = status(study)
    trials = trials_of(study)
    assert final["state"] == "finished" and final["pid"] is None
    assert final["trials"]["complete"] == budget == len(trials)
    assert sorted(t["trial"] for t in trials) == list(range(budget))
    assert len(set(param_keys(trials))) == budget, "no configuration evaluated twice"
    for number, trial in before.items():   # completed trials kept as they were
        after = next(t for t in trials if t["trial"] == number)
        assert (after["params"], after["value"], after["finished"]) == (trial["params"], trial["value"], trial["finished"])
    best = min(trials, key=lambda t: t["value"])
    assert final["best"]["trial"] == best["trial"] and final["best"]["value"] == best["value"]
    assert final["best"]["params"] == best["params"]
    for trial in trials:    # each value is the objective's at its parameters
        x, y = trial["params"]["x"], trial["params"]["y"]
        assert trial["value"] == pytest.approx((x - 0.3) ** 2 + (y + 0.2) ** 2, rel=1e-12)

    # the winner goes into the model store, verifiable, with its hyper-parameters and metrics
    installed = json.loads(hpo("install", study, "--activate", "--json").stdout)
    assert installed["trial"] == best["trial"] and installed["active"] and installed["recorded_in_study"]
    meta = verify_model(installed["path"], task="HPOTools.quadratic-model")
    assert meta["installed_from"] == str((study / best["artifact"]).resolve())   # not the deleted staging copy
    assert meta["hyperparameters"] == best["params"]
    assert meta["metrics"]["validation_loss"] == pytest.approx(best["value"])
    assert meta["hpo"]["trial"] == best["trial"] and meta["hpo"]["objective"] == "benchmark:quadratic-model"
    entry = ModelStore().resolve("HPOTools.quadratic-model")
    assert entry.version == installed["version"] and entry.active

    # a tampered artifact is refused and the store does not change
    other = next(t for t in trials if t["trial"] != best["trial"])
    weights = study / other["artifact"] / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    versions_before = [e.version for e in ModelStore().list("HPOTools.quadratic-model")]
    refused = hpo("install", study, "--trial", other["trial"], check=False)
    assert refused.returncode != 0 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "tampered" in refused.stderr
    assert [e.version for e in ModelStore().list("HPOTools.quadratic-model")] == versions_before

    # report: Fig. 2.15-style PNG + summary table
    report = json.loads(hpo("report", study, "--json").stdout)
    assert Path(report["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = Path(report["table"]).read_text()
    assert f"| 1 | {best['trial']} | {best['value']:.6g} |" in table


def test_two_workers_share_one_study(tmp_path):
    budget = 14
    spec = write_spec(tmp_path / "spec.json", objective="benchmark:quadratic-model", method="random",
                      budget={"trials": budget}, seed=5, trial_sleep=0.4)
    study = tmp_path / "study"
    hpo("run", spec, "--study", study, "--background")
    wait_for(lambda: status(study)["trials"]["complete"] >= 1, what="the first trial")
    hpo("resume", study, "--join", "--background")
    wait_for(lambda: status(study)["state"] == "finished", timeout=90, what="the study to finish")
    wait_for(lambda: not status(study)["workers"], timeout=15, what="both workers to stop")

    trials = trials_of(study)
    assert len(trials) == budget and all(t["state"] == "complete" for t in trials)
    assert len(set(param_keys(trials))) == budget
    assert sorted(t["trial"] for t in trials) == list(range(budget))
    workers = {t["worker"].split(":")[1] for t in trials}
    assert len(workers) == 2, "both worker processes evaluated trials"
    assert all(t["attempts"] == 1 for t in trials)
    log = (study / "runner.log").read_text()
    assert "database is locked" not in log and "Traceback" not in log


def test_cancel_stops_the_process_tree_and_study_resumes(tmp_path):
    budget = 8
    spec = write_spec(tmp_path / "spec.json", objective="benchmark:quadratic-model", method="random",
                      objective_options={"fail_above": 0.5}, budget={"trials": budget}, seed=11, trial_sleep=0.5)
    study = tmp_path / "study"
    pid = json.loads(hpo("run", spec, "--study", study, "--background", "--workers", "2", "--json").stdout)["pid"]
    wait_for(lambda: status(study)["trials"]["complete"] + status(study)["trials"]["failed"] >= 2,
             what="two finished trials")
    wait_for(lambda: len(group_alive(pid)) >= 3, timeout=10, what="the runner's trial processes")
    assert len(group_alive(pid)) >= 3     # runner + trial processes (+ resource tracker)

    start = time.monotonic()
    cancelled = hpo("cancel", study, "--json")
    wait_for(lambda: not group_alive(pid), timeout=5, what="the whole process tree to stop")
    assert time.monotonic() - start < 5.0
    assert pid in json.loads(cancelled.stdout)["stopped"]
    after = status(study)
    assert after["state"] == "cancelled" and after["pid"] is None and after["trials"]["running"] == 0
    finished_before = {t["trial"]: t for t in trials_of(study) if t["state"] not in ("queued", "running")}

    hpo("resume", study, "--progress", "quiet")
    trials = trials_of(study)
    final = status(study)
    assert final["state"] == "finished"
    assert len(trials) == budget and all(t["state"] in ("complete", "failed") for t in trials)
    assert final["trials"]["complete"] + final["trials"]["failed"] == budget
    for number, trial in finished_before.items():
        assert next(t for t in trials if t["trial"] == number)["value"] == trial["value"]
    failed = [t for t in trials if t["state"] == "failed"]
    assert failed and all(t["params"]["x"] > 0.5 and "fail_above" in t["error"] for t in failed)
    assert all(t["params"]["x"] <= 0.5 for t in trials if t["state"] == "complete")
    refused = hpo("install", study, "--trial", failed[0]["trial"], check=False)
    assert refused.returncode == 2 and "not complete" in refused.stderr and refused.stdout == ""


def runner_processes(study: Path) -> list[int]:
    """Live `resume STUDY` processes that are runners (not --join workers)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        command = process.info["cmdline"] or []
        if (process.info["status"] != psutil.STATUS_ZOMBIE and "resume" in command and str(study) in command
                and "--join" not in command):
            found.append(process.info["pid"])
    return found


def test_a_second_background_runner_is_refused_while_one_runs(tmp_path):
    # the module's resume started a second runner on a running study
    from HPOToolsLib.study.control import cancel_study, launch_background
    from HPOToolsLib.study.runner import create_study
    from SegTuneCore.errors import SegTuneError

    study = create_study(tmp_path / "study", {"objective": "benchmark:quadratic-model", "method": "random",
                                              "budget": {"trials": 30}, "seed": 0, "trial_sleep": 1.0})
    first = launch_background(study, [])
    joined = None
    try:
        wait_for(lambda: status(study)["trials"]["running"] >= 1, what="a running trial")
        with pytest.raises(SegTuneError, match=rf"already running \(pid {first['pid']} ") as refused:
            launch_background(study, [])
        assert "\n" not in str(refused.value)
        assert runner_processes(study) == [first["pid"]]
        joined = launch_background(study, [], join=True)     # a worker still joins the running study
        wait_for(lambda: joined["pid"] in [w["pid"] for w in status(study)["workers"]], what="the joined worker")
        assert runner_processes(study) == [first["pid"]]
    finally:
        cancel_study(study)
        pids = [first["pid"]] + ([joined["pid"]] if joined else [])
        wait_for(lambda: not any(group_alive(pid) for pid in pids), timeout=10, what="the processes to stop")


def test_trial_timeout_is_recorded(tmp_path):
    spec = write_spec(tmp_path / "spec.json", objective="benchmark:quadratic-model", method="random",
                      budget={"trials": 2}, seed=0, trial_sleep=5, trial_timeout=0.5)
    study = tmp_path / "study"
    hpo("run", spec, "--study", study, "--progress", "quiet")
    trials = trials_of(study)
    assert [t["state"] for t in trials] == ["timeout", "timeout"]
    assert all("trial_timeout" in t["error"] for t in trials)
    assert status(study)["best"] is None
    with sqlite3.connect(study / "study.db") as connection:
        kinds = [row[0] for row in connection.execute("SELECT kind FROM events")]
    assert "worker-started" in kinds


def test_hyperband_study_resumes_after_sigkill_without_repeating_jobs(tmp_path):
    budget = 16
    spec = write_spec(tmp_path / "spec.json", objective="benchmark:mf-hartmann6", method="hyperband",
                      method_options={"max_budget": 9}, budget={"trials": budget}, seed=1, trial_sleep=0.3)
    study = tmp_path / "study"
    pid = json.loads(hpo("run", spec, "--study", study, "--background", "--workers", "2", "--json").stdout)["pid"]
    wait_for(lambda: status(study)["trials"]["complete"] >= 5, what="5 completed jobs")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not group_alive(pid), timeout=10, what="the runner's process group to die")
    before = {t["trial"]: t for t in trials_of(study) if t["state"] == "complete"}
    hpo("resume", study, "--workers", "2", "--progress", "quiet")

    trials = trials_of(study)
    assert len(trials) == budget and all(t["state"] == "complete" for t in trials)
    for number, trial in before.items():
        assert next(t for t in trials if t["trial"] == number)["value"] == trial["value"]
    rows = sqlite3.connect(study / "study.db").execute(
        "SELECT number, bracket, rung, config_id, budget, resume_from, params FROM trials").fetchall()
    assert len({row[1:4] for row in rows}) == budget, "each (bracket, rung, configuration) job ran once"
    assert len({(row[6], row[4]) for row in rows}) == budget
    by_job = {row[1:4]: row for row in rows}
    for number, bracket, rung, config, job_budget, resume_from, params in rows:
        if rung > 0:    # a promotion continues the same configuration from the previous rung's budget
            previous = by_job[(bracket, rung - 1, config)]
            assert resume_from == previous[4] and params == previous[6] and job_budget > resume_from
        else:
            assert resume_from is None


def test_crashing_trial_processes_and_wall_time_budget(tmp_path):
    from HPOToolsLib.study.runner import create_study, run_study

    crashing = create_study(tmp_path / "crash", {
        "objective": "benchmark:quadratic-model", "method": "random", "budget": {"trials": 6}, "seed": 2,
        "objective_options": {"crash_above": 0.0}})
    summary = run_study(crashing)
    trials = trials_of(crashing)
    assert summary["state"] == "finished" and len(trials) == 6
    crashed = [t for t in trials if t["state"] == "crashed"]
    assert crashed and all(t["params"]["y"] > 0 and "SIGKILL" in t["error"] for t in crashed)
    assert all(t["state"] == "complete" for t in trials if t["params"]["y"] <= 0)

    timed = create_study(tmp_path / "wall", {
        "objective": "benchmark:quadratic-model", "method": "random", "budget": {"wall_time": 1.0}, "seed": 0,
        "trial_sleep": 0.3, "heartbeat": {"interval": 0.1, "stale_after": 5}})
    summary = run_study(timed)
    assert summary["finish_reason"] == "wall-time budget spent"
    assert 1 <= summary["trials"]["complete"] <= 6 and summary["trials"]["total"] == summary["trials"]["complete"]


def test_bo_on_a_multi_fidelity_objective_trains_with_the_full_budget(tmp_path):
    from HPOToolsLib.objectives import get_objective
    from HPOToolsLib.study.runner import create_study, run_study
    from HPOToolsLib.study.storage import StudyStore

    folder = create_study(tmp_path / "mf", {"objective": "benchmark:mf-hartmann6", "method": "bo",
                                           "budget": {"trials": 3}, "seed": 1})
    summary = run_study(folder)
    assert summary["trials"]["complete"] == 3
    objective = get_objective("benchmark:mf-hartmann6")
    store = StudyStore.open(folder)
    try:
        for trial in store.trials():
            assert trial.value == pytest.approx(objective(trial.params, objective.max_budget))
    finally:
        store.close()


def test_bo_proposer_takes_results_that_finish_out_of_order_without_a_rebuild():
    from HPOToolsLib.study.runner import Proposer
    from HPOToolsLib.study.spec import parse_spec
    from HPOToolsLib.study.storage import StoredTrial
    from HPOToolsLib.trials import TrialState

    spec = parse_spec({"objective": "benchmark:branin", "method": "bo", "budget": {"trials": 14}, "seed": 3,
                       "method_options": {"n_initial": 3}})
    value = lambda p: (p["x1"] - 2.0) ** 2 + (p["x2"] - 5.0) ** 2  # noqa: E731
    proposer, trials, engines = Proposer(spec), [], []
    running = []
    for number in range(14):  # two workers: after every odd claim the newer trial finishes first
        proposal = proposer.propose(trials)
        engines.append(proposer.engine)  # kept alive: a rebuilt one can never reuse its address
        trials.append(StoredTrial(number, proposal["params"], TrialState.RUNNING))
        running.append(trials[-1])
        if len(running) == 2:
            done = running.pop(-1 if number % 2 else 0)
            done.state, done.value = TrialState.COMPLETE, value(done.params)
    assert [t.number for t in running] == [12]  # 13 finished before 12 (and 1 before 0, ...)
    running[0].state, running[0].value = TrialState.COMPLETE, value(running[0].params)
    assert all(engine is engines[0] for engine in engines)  # before, each out-of-order result rebuilt the sampler and refitted its GP
    proposer.propose(trials)
    told = {json.dumps(t.params, sort_keys=True): t.value for t in proposer.engine.trials}
    assert told == {json.dumps(t.params, sort_keys=True): t.value for t in trials}
    # the GP holds every result once, whatever the order they came in
    np.testing.assert_allclose(sorted(proposer.engine.gp.y), sorted(t.value for t in trials))
