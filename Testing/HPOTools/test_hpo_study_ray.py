"""The Ray executor on a local Ray instance (2 CPUs) against the local executor, same spec."""

from __future__ import annotations

import json

import pytest

from HPOToolsLib.study.executors import ray_available
from HPOToolsLib.study.runner import create_study, run_study
from HPOToolsLib.study.storage import StudyStore
from SegTuneCore.models import verify_model

pytestmark = pytest.mark.timeout(170)

SPEC = {"objective": "benchmark:quadratic-model", "method": "random", "budget": {"trials": 6}, "seed": 4,
        "objective_options": {"fail_above": 0.6}, "resources": {"cpus": 1}}


def run(folder, **executor):
    create_study(folder, SPEC)
    summary = run_study(folder, **executor)
    store = StudyStore.open(folder)
    trials = store.trials()
    store.close()
    return summary, trials


@pytest.mark.skipif(not ray_available(), reason="ray is not installed (pip install 'ray>=2.9', the 'cluster' extra)")
def test_ray_executor_matches_local_executor(tmp_path):
    local_summary, local_trials = run(tmp_path / "local", workers=2)
    ray_summary, ray_trials = run(tmp_path / "ray", workers=2, ray_address="local", ray_num_cpus=2)

    for summary in (local_summary, ray_summary):
        assert summary["state"] == "finished" and summary["stopped"] is None
    assert len(ray_trials) == len(local_trials) == SPEC["budget"]["trials"]
    by_state = lambda trials: sorted(t.state.value for t in trials)   # noqa: E731
    assert by_state(ray_trials) == by_state(local_trials)
    assert {"complete"} <= set(by_state(ray_trials))
    for trial in ray_trials:
        x, y = trial.params["x"], trial.params["y"]
        if x > 0.6:
            assert trial.state.value == "failed" and "fail_above" in trial.error
            continue
        assert trial.value == pytest.approx((x - 0.3) ** 2 + (y + 0.2) ** 2, rel=1e-12)
        assert "@ray:" in trial.device
        # the artifacts came back through the driver and still verify
        meta = verify_model(tmp_path / "ray" / trial.artifact)
        assert meta["sha256"] == trial.artifact_sha256 and meta["hyperparameters"] == trial.params
    assert json.loads(json.dumps(ray_summary))["trials"]["total"] == 6
