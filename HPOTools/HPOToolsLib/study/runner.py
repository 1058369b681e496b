"""The trial loop: claim a trial, evaluate it on an executor, record the result; crash-safe.

Every worker (a runner, a joined worker, a Ray driver) runs ``Runner.run``:

1. Claim, in one write transaction: re-queue (or fail, by ``on_stale``) trials whose worker is
   dead — a local worker by its process, a remote one by its stale heartbeat; take the oldest
   QUEUED trial; else, if the budget allows, rebuild the sampler/scheduler from the stored trials
   (finished ones told in order, QUEUED/RUNNING ones pending) and ask it for a new trial. The
   budget is checked inside the same transaction, so several workers never overshoot it.
2. Evaluate on the executor (local trial processes or Ray tasks); a heartbeat thread stamps the
   worker and its running trials every ``heartbeat.interval`` seconds.
3. Record the result only if the trial is still this worker's (a trial re-queued meanwhile is
   not recorded twice). A saved model is verified (files, checksum, the study's task) and its
   checksum stored with the trial; a model that fails makes the trial FAILED.

SIGTERM/SIGINT (``cancel``) stop the loop at once: running trials are killed and put back in the
queue (not counted as attempts), so ``resume`` redoes them. After kill -9 nothing is lost either:
committed trials are in the database, and the trials left RUNNING are found dead at the next claim.
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from SegTuneCore.device import select_device
from SegTuneCore.errors import SegTuneError
from SegTuneCore.process import ProgressReporter

from ..trials import TrialState
from .evaluate import trial_seed
from .spec import StudySpec, parse_spec
from .status import best_trial, counts, live_workers, runner_alive
from .storage import ACTIVE, StoredTrial, StudyError, StudyStore, hostname, process_started

POLL_S = 0.2


def trial_folder(study: Path, number: int) -> Path:
    return study / "trials" / f"{number:05d}"


class Proposer:
    """The spec's sampler or scheduler, kept in step with the stored trials.

    It lives as long as the worker and is only told what changed since the last claim, in the
    order results arrive: with several workers a trial often finishes before an older one, and
    rebuilding then would refit the GP from scratch under the write lock. It is rebuilt from the
    stored trials when it starts (a resume) or when a result it was told is gone from the history."""

    def __init__(self, spec: StudySpec):
        self.spec = spec
        self.engine = None
        self.told: set[int] = set()
        self.jobs: dict[int, object] = {}      # multi-fidelity: trial number -> hyperband.Job
        self.reported: set[int] = set()
        self._last_job = None

    def propose(self, trials: list[StoredTrial]) -> dict | None:
        if self.spec.multi_fidelity:
            return self._next_job(trials)
        finished = [t for t in trials if t.state.is_finished]
        active = [t for t in trials if not t.state.is_finished]
        numbers = {t.number for t in finished}
        if self.engine is None or not self.told <= numbers:
            self.engine = self.spec.make_proposer_engine()
            self.engine.load_trials([t.to_trial() for t in trials])
        else:   # only new results since the last ask: tell them (cheap incremental GP update)
            for t in finished:
                if t.number not in self.told:
                    self.engine.tell(t.params, t.value, t.state, t.error, t.budget)
            self.engine.pending = [dict(t.params) for t in active]
        self.told = numbers
        configs = self.engine.ask(1)
        return {"params": configs[0]} if configs else None

    def _next_job(self, trials: list[StoredTrial]) -> dict | None:
        if self.engine is None or any(t.number not in self.jobs for t in trials):
            self._rebuild(trials)
        else:
            for t in trials:
                if t.state.is_finished and t.number not in self.reported:
                    self.engine.report(self.jobs[t.number], t.value, t.state, t.error)
                    self.reported.add(t.number)
        job = self.engine.next_job()
        self._last_job = job
        if job is None:
            return None
        return {"params": job.params, "budget": job.budget, "resume_from": job.resume_from,
                "bracket": job.bracket, "rung": job.rung, "config_id": job.config_id}

    def _rebuild(self, trials: list[StoredTrial]) -> None:
        self.engine = self.spec.make_proposer_engine()
        self.engine.load_trials([t.to_trial() for t in trials])
        self.jobs = {t.number: None for t in trials}
        self.reported = {t.number for t in trials if t.state.is_finished}
        # load_trials hands the unfinished trials out again: they are ours to report, not new jobs
        unfinished = {(t.bracket, t.rung, t.config_id): t.number for t in trials if not t.state.is_finished}
        requeued = []
        for job in self.engine.requeued:
            number = unfinished.pop((job.bracket, job.rung, job.config_id), None)
            if number is None:
                requeued.append(job)
            else:
                self.jobs[number] = job
        self.engine.requeued = requeued

    def assigned(self, number: int) -> None:
        """The last proposal became trial ``number``."""
        if self.spec.multi_fidelity:
            self.jobs[number] = self._last_job


@dataclass
class Claim:
    kind: str                    # "trial", "wait" (others are running), "done", "stop" (cancelled)
    trial: StoredTrial | None = None
    reason: str = ""


def spent_resource(trials: list[StoredTrial]) -> float:
    return sum((t.budget or 0.0) - (t.resume_from or 0.0) for t in trials
               if t.state.is_finished or t.state.value in ACTIVE)


class Runner:
    def __init__(self, store: StudyStore, executor, *, role: str = "runner",
                 reporter: ProgressReporter | None = None):
        self.store = store
        self.spec = parse_spec(store.spec())
        self.executor = executor
        self.role = role
        self.reporter = reporter or ProgressReporter("quiet")
        self.worker = f"{hostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.proposer = Proposer(self.spec)
        self.in_flight: dict[int, StoredTrial] = {}
        self.stop_reason: str | None = None
        self._stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None

    # -- claiming ------------------------------------------------------------------------------
    def claim(self, device: str) -> Claim:
        spec = self.spec
        with self.store.write() as connection:
            if self.store.get("state", connection=connection) == "cancelled":
                return Claim("stop", reason="cancelled")
            self.store.release_stale(connection, stale_after=spec.stale_after, on_stale=spec.on_stale,
                                     max_attempts=spec.max_attempts)
            trials = self.store.trials(connection)
            elapsed = float(self.store.get("elapsed_s", 0.0, connection))
            if spec.budget_wall_time is not None and elapsed >= spec.budget_wall_time:
                return self._nothing_new(trials, "wall-time budget spent")
            queued = [t for t in trials if t.state == TrialState.QUEUED]
            if queued:
                number = queued[0].number
                StudyStore.claim_queued(connection, number, worker=self.worker, device=device)
                StudyStore.event(connection, "claimed", worker=self.worker, trial=number, message="re-queued trial")
            else:
                finished = [t for t in trials if t.state.is_finished]
                active = [t for t in trials if t.state.value in ACTIVE]
                if spec.budget_trials is not None and len(finished) + len(active) >= spec.budget_trials:
                    return self._nothing_new(trials, "trial budget reached")
                if spec.budget_epochs is not None and spent_resource(trials) >= spec.budget_epochs:
                    return self._nothing_new(trials, "epoch budget spent")
                proposal = self.proposer.propose(trials)
                if proposal is None:
                    return self._nothing_new(trials, "search space exhausted")
                params = proposal.pop("params")
                number = StudyStore.insert_trial(connection, params, worker=self.worker, device=device, **proposal)
                self.proposer.assigned(number)
            row = connection.execute("SELECT * FROM trials WHERE number=?", (number,)).fetchone()
        return Claim("trial", StoredTrial.from_row(row))

    @staticmethod
    def _nothing_new(trials: list[StoredTrial], reason: str) -> Claim:
        busy = any(t.state.value in ACTIVE for t in trials)
        return Claim("wait" if busy else "done", reason=reason)

    def task(self, trial: StoredTrial) -> dict:
        study = self.store.folder
        return {"number": trial.number, "params": trial.params, "folder": str(trial_folder(study, trial.number)),
                "seed": trial_seed(self.spec.seed, trial.number), "budget": trial.budget,
                "resume_from": trial.resume_from, "bracket": trial.bracket, "rung": trial.rung,
                "config_id": trial.config_id,
                "checkpoint_folder": (str(study / "checkpoints" / str(trial.config_id))
                                      if trial.config_id is not None else None),
                "sleep": self.spec.trial_sleep, "timeout": self.spec.trial_timeout}

    # -- recording -----------------------------------------------------------------------------
    def record(self, number: int, outcome: dict) -> None:
        from SegTuneCore.models import verify_model

        state = TrialState(outcome["state"])
        value, error = outcome.get("value"), outcome.get("error")
        artifact = sha = None
        model = trial_folder(self.store.folder, number) / "model"
        if state == TrialState.COMPLETE and (model / "model.json").is_file():
            try:
                sha = verify_model(model, task=self.spec.task)["sha256"]
                artifact = str(model.relative_to(self.store.folder))
            except SegTuneError as exc:   # a model that cannot be installed makes the trial no winner
                state, value, error = TrialState.FAILED, None, f"saved model failed verification: {exc}"
        self.in_flight.pop(number, None)
        self.store.finish(number, self.worker, state=state, value=value, error=error,
                          metrics=outcome.get("metrics"), intermediate=outcome.get("intermediate"),
                          artifact=artifact, artifact_sha256=sha, device=outcome.get("device"))
        self._report_progress(number, state, value, error)

    def _report_progress(self, number: int, state: TrialState, value, error) -> None:
        trials = self.store.trials()
        finished = sum(t.state.is_finished for t in trials)
        best = best_trial(trials)
        if self.spec.budget_trials:
            fraction = finished / self.spec.budget_trials
        elif self.spec.budget_wall_time:
            fraction = float(self.store.get("elapsed_s", 0.0)) / self.spec.budget_wall_time
        else:
            fraction = 0.0
        outcome = f"value {value:.6g}" if value is not None else f"{state.value}: {error}"
        best_text = f", best {best.value:.6g} (trial {best.number})" if best else ""
        self.reporter.log(f"trial {number} {state.value} {outcome}{best_text}")
        self.reporter.progress(fraction, f"{finished} trials finished{best_text}")

    def on_report(self, number: int, step: float, value: float) -> None:
        with contextlib.suppress(Exception):
            self.store.report_intermediate(number, self.worker, step, value)

    # -- heartbeat -----------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        interval = self.spec.heartbeat_interval
        last = time.monotonic()
        while not self._stop.wait(interval):
            now = time.monotonic()
            try:
                self.store.heartbeat(self.worker, list(self.in_flight),
                                     elapsed=(now - last) if self.role == "runner" else 0.0)
                last = now
            except Exception as exc:  # noqa: BLE001 — a missed beat is retried at the next one
                self.reporter.log(f"heartbeat failed: {exc}")

    # -- the loop ------------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason

    def run(self) -> dict:
        spec = self.spec
        self.store.register_worker(self.worker, role=self.role, executor=self.executor.describe())
        if self.role == "runner":
            with self.store.write() as connection:
                StudyStore.put(connection, "runner", {"pid": os.getpid(), "host": hostname(), "worker": self.worker,
                                                      "pid_started": process_started(os.getpid()),
                                                      "started": time.time(), "executor": self.executor.describe()})
                StudyStore.put(connection, "state", "running")
                StudyStore.put(connection, "finish_reason", None)
        self.reporter.log(f"study {self.store.folder}: {spec.method} on {spec.objective}, budget {spec.raw['budget']}, "
                          f"worker {self.worker}, executor {self.executor.describe()}")
        self._heartbeat_thread = threading.Thread(target=self._heartbeat, name="hpo-heartbeat", daemon=True)
        self._heartbeat_thread.start()
        done_reason = None
        try:
            self.executor.start()
            while self.stop_reason is None:
                claim = None
                for device in self.executor.free_slots():
                    claim = self.claim(device)
                    if claim.kind != "trial":
                        break
                    self.in_flight[claim.trial.number] = claim.trial
                    self.executor.submit(self.task(claim.trial), device)
                if claim is not None and claim.kind == "stop":
                    self.request_stop("cancelled")
                    break
                if not self.in_flight:
                    if claim is not None and claim.kind == "done":
                        done_reason = claim.reason
                        break
                    time.sleep(POLL_S)      # other workers hold the remaining trials
                    continue
                for number, outcome in self.executor.wait(POLL_S):
                    self.record(number, outcome)
        except KeyboardInterrupt:
            self.request_stop("interrupted")
        finally:
            self._stop.set()
            killed = self.executor.kill_all() if self.stop_reason else []
            with contextlib.suppress(Exception):
                self.executor.close()
            if self._heartbeat_thread is not None:
                self._heartbeat_thread.join(timeout=5)
            self.store.requeue_own(self.worker, sorted(set(killed) | set(self.in_flight)),
                                   f"worker stopped ({self.stop_reason or 'error'})")
            self.store.stop_worker(self.worker)
        return self._finish(done_reason)

    def _finish(self, done_reason: str | None) -> dict:
        with self.store.write() as connection:
            state = self.store.get("state", connection=connection)
            if done_reason is not None and state != "cancelled":
                StudyStore.put(connection, "state", "finished")
                StudyStore.put(connection, "finish_reason", done_reason)
            elif self.role == "runner" and self.stop_reason == "interrupted" and state == "running":
                StudyStore.put(connection, "state", "interrupted")
        trials = self.store.trials()
        best = best_trial(trials)
        summary = {"study": str(self.store.folder), "state": self.store.get("state"), "worker": self.worker,
                   "stopped": self.stop_reason, "finish_reason": done_reason, "trials": counts(trials),
                   "best": None if best is None else {"trial": best.number, "value": best.value, "params": best.params}}
        if done_reason:
            self.reporter.progress(1.0, f"done: {done_reason}")
        self.reporter.result(summary)
        return summary


# --- entry points used by the CLI, the Slicer module and the tests ------------------------------

def versions() -> dict:
    import numpy

    return {"python": platform.python_version(), "numpy": numpy.__version__, "platform": platform.platform()}


def resolve_devices(device: str | None, workers: int | None, gpus: float) -> list[str]:
    """Slots of the local executor: one per device (default: every GPU if trials need one, else one CPU)."""
    if device in (None, "", "auto"):
        if gpus > 0:
            import torch

            count = torch.cuda.device_count()
            if count == 0:
                raise SegTuneError("the spec asks for GPUs (resources.gpus > 0) but none is available; "
                                   "use --device cpu")
            devices = [f"cuda:{i}" for i in range(count)]
        else:
            devices = ["cpu"]
    else:
        devices = [d.strip().lower() for d in device.split(",") if d.strip()]
        for d in devices:
            if not (d in ("cpu", "cuda") or (d.startswith("cuda:") and d[5:].isdigit())):
                raise SegTuneError(f"unknown device {d!r}: use cpu, cuda or cuda:N (comma-separated for several)")
            if d != "cpu":  # a GPU that does not exist: refuse now, not in every trial
                select_device(d)
    if workers is not None:
        if workers < 1:
            raise SegTuneError(f"--workers must be >= 1, got {workers}")
        devices = [devices[i % len(devices)] for i in range(workers)]
    return devices


def make_executor(spec: StudySpec, *, workers: int | None = None, device: str | None = None,
                  ray_address: str | None = None, ray_num_cpus: int | None = None, on_report=None):
    if ray_address:
        from .executors import RayExecutor

        slots = workers or (ray_num_cpus or os.cpu_count() or 1)
        return RayExecutor(spec.objective, spec.objective_options, slots=slots, cpus=spec.cpus, gpus=spec.gpus,
                           address=None if ray_address == "local" else ray_address,
                           num_cpus=ray_num_cpus or (workers if ray_address == "local" else None))
    from .executors import LocalExecutor

    return LocalExecutor(spec.objective, spec.objective_options, resolve_devices(device, workers, spec.gpus),
                         on_report=on_report)


def create_study(folder, spec: dict) -> Path:
    """Validate ``spec`` and create the study folder (database + a readable spec.json copy)."""
    import json

    from SegTuneCore.process import atomic_write

    parsed = parse_spec(spec)
    store = StudyStore.create(folder, parsed.raw, info={"versions": versions()})
    try:
        with atomic_write(store.folder / "spec.json") as tmp:
            tmp.write_text(json.dumps(parsed.raw, indent=2) + "\n", encoding="utf-8")
    finally:
        store.close()
    return store.folder


def check_can_run(store: StudyStore, *, join: bool) -> None:
    """Refuse a second runner on a running study, and joining a study nobody runs."""
    meta = store.meta()
    spec = meta["spec"]
    workers = live_workers(store, spec["heartbeat"]["stale_after"])
    runner = meta.get("runner")
    if not join and runner_alive(runner, workers) and runner.get("pid") != os.getpid():
        raise StudyError(f"{store.folder}: study is already running (pid {runner['pid']} on {runner['host']}); "
                         "use --join to add a worker, or `cancel` it")
    if join and not workers and not runner_alive(runner, workers):
        raise StudyError(f"{store.folder}: no runner to join; use `resume` without --join")


def run_study(folder, *, workers: int | None = None, device: str | None = None, ray_address: str | None = None,
              ray_num_cpus: int | None = None, join: bool = False, progress: str = "quiet") -> dict:
    """Run (or continue, or join) the study in ``folder`` in this process until its budget is spent."""
    store = StudyStore.open(folder)
    try:
        check_can_run(store, join=join)
        spec = parse_spec(store.spec())
        runner_box: dict = {}
        executor = make_executor(spec, workers=workers, device=device, ray_address=ray_address,
                                 ray_num_cpus=ray_num_cpus,
                                 on_report=lambda n, s, v: runner_box["runner"].on_report(n, s, v))
        runner = Runner(store, executor, role="worker" if join else "runner", reporter=ProgressReporter(progress))
        runner_box["runner"] = runner
        with _stop_on_signals(runner):
            return runner.run()
    finally:
        store.close()


@contextlib.contextmanager
def _stop_on_signals(runner: Runner):
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda signum, frame: runner.request_stop("cancelled"))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
