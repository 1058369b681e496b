"""What a study looks like from outside: state, runner, trial counts, best trial."""

from __future__ import annotations

import time

from ..trials import TrialState
from .storage import StoredTrial, StudyStore, hostname, local_process_alive

FAILED = {TrialState.FAILED, TrialState.CRASHED, TrialState.OOM, TrialState.TIMEOUT}


def counts(trials: list[StoredTrial]) -> dict:
    by_state = {state.value: 0 for state in TrialState}
    for trial in trials:
        by_state[trial.state.value] += 1
    return {"complete": by_state["complete"], "running": by_state["running"],
            "failed": sum(by_state[s.value] for s in FAILED), "queued": by_state["queued"],
            "pruned": by_state["pruned"], "total": len(trials), "by_state": by_state}


def comparable(trials: list[StoredTrial]) -> list[StoredTrial]:
    """The complete trials whose values compete for the best: in a multi-fidelity study only
    those at the largest budget reached (a loss after 1 epoch is no rival for one after 27)."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    budgets = [t.budget for t in done if t.budget is not None]
    if budgets:
        top = max(budgets)
        done = [t for t in done if t.budget == top]
    return done


def best_trial(trials: list[StoredTrial]) -> StoredTrial | None:
    """Lowest value among the `comparable` trials."""
    done = comparable(trials)
    return min(done, key=lambda t: (t.value, t.number)) if done else None


def runner_alive(runner: dict | None, workers: list[dict]) -> bool:
    """The runner on this machine is alive while its process is; elsewhere while it heartbeats."""
    if not runner:
        return False
    if runner.get("host") == hostname():
        return local_process_alive(runner.get("pid"), runner.get("pid_started"))
    return any(w["id"] == runner.get("worker") for w in workers)


def live_workers(store: StudyStore, stale_after: float) -> list[dict]:
    now = time.time()
    return [w for w in store.workers() if StudyStore.worker_alive(w, stale_after, now)]


def study_status(store: StudyStore) -> dict:
    meta = store.meta()
    spec = meta["spec"]
    stale_after = spec["heartbeat"]["stale_after"]
    trials = store.trials()
    workers = live_workers(store, stale_after)
    runner = meta.get("runner")
    alive = runner_alive(runner, workers)
    state = meta["state"]
    if state == "running" and not workers and not alive:
        state = "interrupted"     # the runner died (kill -9, reboot): resume continues it
    best = best_trial(trials)
    return {
        "study": str(store.folder), "state": state, "pid": runner["pid"] if alive else None,
        "host": runner.get("host") if runner else None,
        "objective": spec["objective"], "method": spec["method"], "budget": spec["budget"], "seed": spec["seed"],
        "trials": counts(trials),
        "best": None if best is None else {"trial": best.number, "value": best.value, "params": best.params,
                                           "budget": best.budget},
        "workers": [{"id": w["id"], "host": w["host"], "pid": w["pid"], "role": w["role"],
                     "executor": w["executor"]} for w in workers],
        "elapsed_s": meta.get("elapsed_s", 0.0), "created": meta.get("created"),
        "finish_reason": meta.get("finish_reason"), "log": str(store.folder / "runner.log"),
    }
