"""Where trials run: local trial processes (one per device) or Ray tasks.

Both executors have the same small interface, driven by ``runner.Runner``::

    executor.start()
    executor.free_slots() -> list of slot devices that can take a trial now
    executor.submit(task, device)              # task: see below
    executor.wait(timeout) -> [(number, outcome)]   # finished trials (outcome as evaluate_trial's)
    executor.kill_all()                        # stop every running trial at once
    executor.close()

A task is a dict: number, params, folder (trial artifact folder), seed, budget, resume_from,
bracket, rung, config_id, checkpoint_folder, sleep, timeout. The driver (the runner) does every
database write; executors only evaluate.

- ``LocalExecutor``: one long-lived child process per slot (``multiprocessing`` spawn), so a
  trial that crashes (segfault, OOM killer) or hangs is recorded CRASHED/TIMEOUT instead of
  taking the runner down. Children ignore SIGINT/SIGTERM (the runner decides what stops) and die
  with the runner (Linux parent-death signal; elsewhere they poll their parent).
- ``RayExecutor``: each trial a Ray task with ``num_cpus``/``num_gpus`` from the spec; the task
  writes artifacts in a temporary folder on its node and returns them as bytes, which the driver
  writes into the study folder — no shared file system needed.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from pathlib import Path

from SegTuneCore.errors import SegTuneError

from ..trials import TrialState


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)      # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:             # the parent died before prctl took effect
        os._exit(1)


def _child_main(connection, objective_name: str, objective_options: dict, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from .evaluate import evaluate_trial
    from .spec import resolve_objective

    objective, fatal = None, None
    try:
        objective = resolve_objective(objective_name, objective_options)
    except Exception as exc:  # noqa: BLE001 — reported per trial below
        fatal = f"{type(exc).__name__}: {exc}"
    while True:
        if not connection.poll(1.0):
            if os.getppid() != parent_pid:
                return
            continue
        try:
            task = connection.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        number = task["number"]
        if fatal:
            outcome = {"state": TrialState.FAILED.value, "value": None, "error": fatal, "metrics": {},
                       "intermediate": [], "duration": 0.0}
        else:
            outcome = evaluate_trial(objective, task,
                                     reporter=lambda step, value: connection.send(("report", number, step, value)))
        connection.send(("done", number, outcome))


def _failure(state: TrialState, error: str, started: float) -> dict:
    return {"state": state.value, "value": None, "error": error, "metrics": {}, "intermediate": None,
            "duration": time.time() - started}


class _TrialProcess:
    def __init__(self, context, objective_name: str, objective_options: dict, device: str):
        self.context, self.objective_name, self.objective_options = context, objective_name, objective_options
        self.device = device
        self.process = None
        self.connection = None
        self.task: dict | None = None
        self.started = 0.0

    def ensure_started(self) -> None:
        if self.process is not None and self.process.is_alive():
            return
        parent, child = self.context.Pipe(duplex=True)
        self.process = self.context.Process(target=_child_main, name=f"hpo-trial-{self.device}",
                                            args=(child, self.objective_name, self.objective_options, os.getpid()))
        self.process.start()
        child.close()
        self.connection = parent

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(OSError, ValueError):
                self.process.kill()
                self.process.join(5)
            with contextlib.suppress(OSError):
                self.connection.close()
        self.process, self.connection, self.task = None, None, None

    def close(self) -> None:
        if self.process is not None and self.process.is_alive() and self.task is None:
            with contextlib.suppress(OSError, BrokenPipeError):
                self.connection.send(None)
            self.process.join(2)
        self.kill()


class LocalExecutor:
    """Trials in local child processes, one slot per entry of ``devices`` (e.g. ["cuda:0", "cuda:1"])."""

    name = "local"

    def __init__(self, objective_name: str, objective_options: dict, devices: list[str], on_report=None):
        if not devices:
            raise SegTuneError("the local executor needs at least one device")
        self.context = multiprocessing.get_context("spawn")
        self.slots = [_TrialProcess(self.context, objective_name, objective_options, d) for d in devices]
        self.on_report = on_report

    def start(self) -> None:
        for slot in self.slots:
            slot.ensure_started()

    def describe(self) -> str:
        return f"local ({len(self.slots)} slot(s): {', '.join(s.device for s in self.slots)})"

    def free_slots(self) -> list[str]:
        return [slot.device for slot in self.slots if slot.task is None]

    def busy(self) -> list[int]:
        return [slot.task["number"] for slot in self.slots if slot.task is not None]

    def submit(self, task: dict, device: str) -> None:
        slot = next(s for s in self.slots if s.task is None and s.device == device)
        slot.ensure_started()
        slot.task, slot.started = dict(task, device=device), time.time()
        try:
            slot.connection.send(slot.task)
        except (OSError, BrokenPipeError):
            pass  # the child died: wait() records the crash

    def wait(self, timeout: float) -> list[tuple[int, dict]]:
        busy = [s for s in self.slots if s.task is not None]
        if not busy:
            time.sleep(timeout)
            return []
        waitables = [s.connection for s in busy] + [s.process.sentinel for s in busy]
        multiprocessing.connection.wait(waitables, timeout)
        finished = []
        for slot in busy:
            number = slot.task["number"]
            outcome = self._drain(slot)
            if outcome is None and not slot.process.is_alive():
                outcome = self._drain(slot)  # messages sent just before it ended
                if outcome is None:
                    code = slot.process.exitcode
                    how = (f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0
                           else f"exit code {code}")
                    outcome = _failure(TrialState.CRASHED, f"trial process died ({how}); out of memory or a crash "
                                       "in native code", slot.started)
                    slot.kill()
            timeout_s = slot.task.get("timeout") if slot.task else None
            if outcome is None and timeout_s and time.time() - slot.started > timeout_s:
                outcome = _failure(TrialState.TIMEOUT, f"trial exceeded trial_timeout={timeout_s:g} s", slot.started)
                slot.kill()
            if outcome is not None:
                slot.task = None
                finished.append((number, outcome))
        return finished

    def _drain(self, slot: _TrialProcess) -> dict | None:
        try:
            while slot.connection.poll(0):
                message = slot.connection.recv()
                if message[0] == "report":
                    if self.on_report:
                        self.on_report(message[1], message[2], message[3])
                elif message[0] == "done":
                    return message[2]
        except (EOFError, OSError):
            return None
        return None

    def kill_all(self) -> list[int]:
        numbers = self.busy()
        for slot in self.slots:
            if slot.task is not None:
                slot.kill()
        return numbers

    def close(self) -> None:
        for slot in self.slots:
            slot.close()


# --- Ray ---------------------------------------------------------------------------------------

def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _ray_trial(objective_name: str, objective_options: dict, task: dict, gpus: float) -> dict:
    """Body of a Ray task: evaluate in a node-local folder and ship the artifacts back as bytes."""
    import tempfile

    import ray

    from .evaluate import evaluate_trial
    from .spec import resolve_objective

    with tempfile.TemporaryDirectory(prefix="hpo-trial-") as tmp:
        folder = Path(tmp) / "trial"
        task = dict(task, folder=str(folder), device="cuda:0" if gpus > 0 else "cpu")
        try:
            objective = resolve_objective(objective_name, objective_options)
            outcome = evaluate_trial(objective, task)
        except Exception as exc:  # noqa: BLE001
            outcome = _failure(TrialState.FAILED, f"{type(exc).__name__}: {exc}", time.time())
        outcome["files"] = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    outcome["device"] = f"{task['device']}@ray:{ray.get_runtime_context().get_node_id()[:8]}"
    return outcome


class RayExecutor:
    """Each trial a Ray task; ``address`` None starts a local Ray with ``num_cpus``."""

    name = "ray"

    def __init__(self, objective_name: str, objective_options: dict, *, slots: int, cpus: float = 1.0,
                 gpus: float = 0.0, address: str | None = None, num_cpus: int | None = None):
        if not ray_available():
            raise SegTuneError("the Ray executor needs the 'ray' package (pip install 'ray>=2.9'), "
                               "which is not installed")
        self.objective_name, self.objective_options = objective_name, objective_options
        self.n_slots, self.cpus, self.gpus = slots, cpus, gpus
        self.address, self.num_cpus = address, num_cpus
        self.running: dict = {}        # ObjectRef -> (task, started)
        self._started_ray = False

    def start(self) -> None:
        import ray

        if not ray.is_initialized():
            options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if self.address:
                ray.init(address=self.address, **options)
            else:
                ray.init(num_cpus=self.num_cpus or max(1, int(self.n_slots * self.cpus)), **options)
            self._started_ray = True
        self._remote = ray.remote(_ray_trial)

    def describe(self) -> str:
        return f"ray ({self.address or 'local'}, {self.n_slots} slot(s), {self.cpus:g} CPU + {self.gpus:g} GPU per trial)"

    def free_slots(self) -> list[str]:
        return ["ray"] * max(0, self.n_slots - len(self.running))

    def busy(self) -> list[int]:
        return [task["number"] for task, _ in self.running.values()]

    def submit(self, task: dict, device: str) -> None:
        remote_task = {k: v for k, v in task.items() if k != "folder"}
        remote_task["folder"] = ""
        ref = self._remote.options(num_cpus=self.cpus, num_gpus=self.gpus).remote(
            self.objective_name, self.objective_options, remote_task, self.gpus)
        self.running[ref] = (task, time.time())

    def wait(self, timeout: float) -> list[tuple[int, dict]]:
        import ray

        if not self.running:
            time.sleep(timeout)
            return []
        ready, _ = ray.wait(list(self.running), num_returns=len(self.running), timeout=timeout)
        finished = []
        for ref in ready:
            task, started = self.running.pop(ref)
            try:
                outcome = ray.get(ref)
                folder = Path(task["folder"])
                for relative, data in outcome.pop("files", {}).items():
                    target = folder / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
            except Exception as exc:  # noqa: BLE001 — a worker or node died
                outcome = _failure(TrialState.CRASHED, f"Ray task failed: {type(exc).__name__}: {exc}", started)
            finished.append((task["number"], outcome))
        now = time.time()
        for ref, (task, started) in list(self.running.items()):
            if task.get("timeout") and now - started > task["timeout"]:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
                del self.running[ref]
                finished.append((task["number"], _failure(TrialState.TIMEOUT, f"trial exceeded trial_timeout="
                                                          f"{task['timeout']:g} s", started)))
        return finished

    def kill_all(self) -> list[int]:
        import ray

        numbers = self.busy()
        for ref in list(self.running):
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        self.running.clear()
        return numbers

    def close(self) -> None:
        import ray

        self.kill_all()
        if self._started_ray:
            ray.shutdown()
