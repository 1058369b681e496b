"""Starting a detached background runner, and cancelling a study's local processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from SegTuneCore.process import kill_process_tree

from .runner import check_can_run
from .storage import StudyStore, hostname, local_process_alive, process_started

LOG_NAME = "runner.log"


def launch_background(folder: Path, runner_args: list[str], *, join: bool = False, python: str | None = None,
                      env: dict | None = None) -> dict:
    """Start ``python -m HPOToolsLib resume FOLDER ...`` in a new session (its pid is its process
    group id), logging JSON lines to the study's runner.log; return at once. Refuses a second
    runner while one is alive (``join`` adds a worker to it instead). Inside Slicer, pass Slicer's
    Python and module paths (SegTuneCore.slicer_environment)."""
    folder = Path(folder).resolve()
    command = [python or sys.executable, "-u", "-m", "HPOToolsLib", "resume", str(folder), "--progress", "json",
               "--detached", *runner_args] + (["--join"] if join else [])
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    store = StudyStore.open(folder)
    try:
        # check, start and register under the write lock: two launches cannot both find no runner
        with store.write() as connection:
            check_can_run(store, join=join)
            with open(folder / LOG_NAME, "ab") as log:
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           cwd=folder, env=env, start_new_session=True, close_fds=True)
            if not join:
                StudyStore.put(connection, "runner", {"pid": process.pid, "host": hostname(),
                                                      "pid_started": process_started(process.pid),
                                                      "started": time.time(), "worker": None})
                StudyStore.put(connection, "state", "running")
    finally:
        store.close()
    return {"study": str(folder), "pid": process.pid, "log": str(folder / LOG_NAME)}


def _signal_group_or_process(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)


def cancel_study(folder: Path, *, grace_s: float = 3.0) -> dict:
    """Mark the study cancelled (remote workers stop at their next claim), stop every local runner
    and worker with its whole process tree (SIGTERM, SIGKILL after ``grace_s``), and put the
    trials they were running back in the queue so ``resume`` redoes them."""
    store = StudyStore.open(folder)
    try:
        with store.write() as connection:
            if store.get("state", connection=connection) != "finished":
                StudyStore.put(connection, "state", "cancelled")
            StudyStore.event(connection, "cancel", message=f"cancel requested from pid {os.getpid()}")
        targets: dict[int, float | None] = {}
        runner = store.get("runner") or {}
        if runner.get("host") == hostname() and local_process_alive(runner.get("pid"), runner.get("pid_started")):
            targets[runner["pid"]] = runner.get("pid_started")
        for worker in store.workers():
            if (not worker["stopped"] and worker["host"] == hostname()
                    and local_process_alive(worker["pid"], worker["pid_started"])):
                targets[worker["pid"]] = worker["pid_started"]
        targets.pop(os.getpid(), None)
        for pid in targets:
            _signal_group_or_process(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(local_process_alive(p, s) for p, s in targets.items()):
            time.sleep(0.05)
        killed = [pid for pid, started in targets.items() if local_process_alive(pid, started)]
        for pid in killed:
            _signal_group_or_process(pid, signal.SIGKILL)
            kill_process_tree(pid, timeout=1.0)
        spec = store.spec()
        with store.write() as connection:
            requeued = store.release_stale(connection, stale_after=spec["heartbeat"]["stale_after"], on_stale="requeue",
                                           max_attempts=spec["max_attempts"], force_requeue=True)
            for worker in store.workers(connection):
                if worker["host"] == hostname() and not worker["stopped"] and not local_process_alive(
                        worker["pid"], worker["pid_started"]):
                    connection.execute("UPDATE workers SET stopped=? WHERE id=?", (time.time(), worker["id"]))
        return {"study": str(store.folder), "state": store.get("state"), "stopped": sorted(targets),
                "force_killed": killed, "requeued": requeued}
    finally:
        store.close()
