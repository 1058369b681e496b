"""The study database: one SQLite file (WAL) per study folder, shared by every worker.

Layout of a study folder::

    study.db            spec, trials, workers, events (this module)
    spec.json           a copy of the normalised spec, for people (the database is authoritative)
    runner.log          JSON lines of a background runner (stdout + stderr)
    trials/<number>/    per-trial artifacts (a trained model in trials/<number>/model/)
    checkpoints/<id>/   per-configuration checkpoints of multi-fidelity methods

Every write is one ``BEGIN IMMEDIATE`` transaction (the write lock is taken up front, so two
workers never deadlock upgrading a read lock), with a long busy timeout: workers queue for the
lock instead of failing with "database is locked". ``synchronous=FULL`` makes a committed trial
survive a power cut, not only a kill -9.

Before anything writes, ``open`` checks the file read-only: the SQLite header, our application
id, the schema version (``PRAGMA user_version``; a newer one is refused) and ``quick_check``.
A corrupt, foreign or newer database is refused with a one-line error and left byte-identical.

WAL needs every process to see one shared-memory file: all workers of one study must run on
the machine that holds the folder (a network file system does not do). Across machines, use the
Ray executor, whose driver does every write.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from SegTuneCore.errors import SegTuneError

from ..trials import Trial, TrialState

DB_NAME = "study.db"
SCHEMA_VERSION = 1
APPLICATION_ID = 0x53545359   # "STSY": marks a SegTune study database
SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 120.0

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE trials (
    number INTEGER PRIMARY KEY,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    value REAL,
    error TEXT,
    budget REAL,
    resume_from REAL,
    bracket INTEGER,
    rung INTEGER,
    config_id INTEGER,
    intermediate TEXT NOT NULL DEFAULT '[]',
    metrics TEXT NOT NULL DEFAULT '{}',
    artifact TEXT,
    artifact_sha256 TEXT,
    worker TEXT,
    device TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    heartbeat REAL,
    finished REAL
);
CREATE INDEX trials_state ON trials(state);
CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    pid_started REAL,
    role TEXT NOT NULL,
    executor TEXT,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL,
    stopped REAL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    worker TEXT,
    trial INTEGER,
    kind TEXT NOT NULL,
    message TEXT
);
"""
_TABLES = {"meta", "trials", "workers", "events"}
ACTIVE = (TrialState.QUEUED.value, TrialState.RUNNING.value)


class StudyError(SegTuneError):
    """A study folder or database that cannot be used (missing, corrupt, newer, busy)."""


def hostname() -> str:
    return socket.gethostname()


def process_started(pid: int) -> float | None:
    """Creation time of a process (tells a live pid from a reused one), None if it is gone."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def local_process_alive(pid: int | None, started: float | None) -> bool:
    if not pid:
        return False
    now_started = process_started(pid)
    return now_started is not None and (started is None or abs(now_started - started) < 1.0)


@dataclass
class StoredTrial:
    """One row of the trials table."""

    number: int
    params: dict
    state: TrialState
    value: float | None = None
    error: str | None = None
    budget: float | None = None
    resume_from: float | None = None
    bracket: int | None = None
    rung: int | None = None
    config_id: int | None = None
    intermediate: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    artifact: str | None = None
    artifact_sha256: str | None = None
    worker: str | None = None
    device: str | None = None
    attempts: int = 0
    created: float = 0.0
    started: float | None = None
    heartbeat: float | None = None
    finished: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "StoredTrial":
        d = dict(row)
        d["params"] = json.loads(d["params"])
        d["intermediate"] = json.loads(d["intermediate"])
        d["metrics"] = json.loads(d["metrics"])
        d["state"] = TrialState(d["state"])
        return cls(**d)

    def to_trial(self) -> Trial:
        """The engine's view (what samplers and schedulers rebuild their state from)."""
        return Trial(number=self.number, params=dict(self.params), state=self.state, value=self.value,
                     error=self.error, budget=self.budget, intermediate={float(b): v for b, v in self.intermediate},
                     bracket=self.bracket, rung=self.rung, config_id=self.config_id, resume_from=self.resume_from)

    def summary(self) -> dict:
        return {"trial": self.number, "state": self.state.value, "value": self.value, "params": self.params,
                "error": self.error, "budget": self.budget, "metrics": self.metrics, "worker": self.worker,
                "device": self.device, "attempts": self.attempts, "started": self.started,
                "finished": self.finished, "artifact": self.artifact}


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default, allow_nan=False)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def is_study(folder: str | os.PathLike) -> bool:
    return (Path(folder) / DB_NAME).is_file()


def check_schema(connection: sqlite3.Connection, path: Path) -> None:
    application_id = connection.execute("PRAGMA application_id").fetchone()[0]
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if application_id != APPLICATION_ID:
        raise StudyError(f"{path}: not a SegTune study database (foreign SQLite file); it was left untouched")
    if version > SCHEMA_VERSION:
        raise StudyError(f"{path}: study database schema version {version} is newer than this HPOTools "
                         f"supports ({SCHEMA_VERSION}); update SegTune. The study was left untouched")
    if version < 1:
        raise StudyError(f"{path}: study database has no schema version; it was left untouched")


def connect_read_only(path: Path, **options) -> sqlite3.Connection:
    """A connection that writes nothing. Without a WAL file, the database is read as immutable:
    SQLite then creates no -wal/-shm files, so the folder is left exactly as it was (and may be
    read-only). With one (a study in use, or killed before a checkpoint), the WAL must be read too."""
    immutable = "" if Path(f"{path}-wal").exists() else "&immutable=1"
    return sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro{immutable}", uri=True,
                           timeout=BUSY_TIMEOUT_S, **options)


def check_database(path: Path) -> None:
    """Read-only checks that must pass before the database is opened for writing."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StudyError(f"{path}: cannot read the study database ({exc.strerror})") from None
    if header != SQLITE_HEADER:
        raise StudyError(f"{path}: corrupt study database (not an SQLite file); it was left untouched")
    try:
        connection = connect_read_only(path)
    except sqlite3.Error as exc:
        raise StudyError(f"{path}: cannot open the study database ({exc})") from None
    try:
        check_schema(connection, path)
        problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise StudyError(f"{path}: corrupt study database ({problems[0]}); it was left untouched")
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not _TABLES <= tables:
            raise StudyError(f"{path}: corrupt study database (missing tables {sorted(_TABLES - tables)}); "
                             "it was left untouched")
    except sqlite3.DatabaseError as exc:
        raise StudyError(f"{path}: corrupt study database ({exc}); it was left untouched") from None
    finally:
        connection.close()


class StudyStore:
    """Access to one study database; safe to share between threads (one connection per thread)."""

    def __init__(self, folder: Path, read_only: bool = False):
        self.folder = folder
        self.path = folder / DB_NAME
        self.read_only = read_only
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: str | os.PathLike, spec: dict, *, info: dict | None = None) -> "StudyStore":
        """Create a new study folder holding ``spec``; refuses an existing study or a non-empty folder."""
        folder = Path(folder)
        if is_study(folder):
            raise StudyError(f"{folder}: already a study; use `resume` to continue it")
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise StudyError(f"{folder}: exists and is not an empty folder; choose a new study folder")
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".creating-{os.getpid()}-{DB_NAME}"
        connection = sqlite3.connect(temporary, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)
            connection.execute(f"PRAGMA application_id={APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            now = time.time()
            rows = {"spec": spec, "state": "created", "created": now, "schema_version": SCHEMA_VERSION,
                    "elapsed_s": 0.0, "runner": None, **(info or {})}
            connection.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                                   [(k, dumps(v)) for k, v in rows.items()])
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{temporary}{suffix}")
        os.replace(temporary, folder / DB_NAME)   # the folder becomes a study in one step
        (folder / "trials").mkdir(exist_ok=True)
        return cls.open(folder)

    @classmethod
    def open(cls, folder: str | os.PathLike, *, read_only: bool = False) -> "StudyStore":
        """``read_only``: for commands that only look (status, export, report, list); they then
        work on a read-only folder and never create or change a file of the database."""
        folder = Path(folder)
        if not folder.exists():
            raise StudyError(f"{folder}: no such study folder")
        if not folder.is_dir() or not is_study(folder):
            raise StudyError(f"{folder}: not a study folder (no {DB_NAME})")
        check_database(folder / DB_NAME)
        store = cls(folder, read_only)
        try:    # again on the store's own connection: a WAL written meanwhile may have changed the schema
            check_schema(store.connection(), store.path)
        except sqlite3.DatabaseError as exc:
            store.close()
            raise StudyError(f"{store.path}: corrupt study database ({exc})") from None
        except StudyError:
            store.close()
            raise
        return store

    def connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            if self.read_only:
                connection = connect_read_only(self.path, isolation_level=None, check_same_thread=False)
            else:
                connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                             check_same_thread=False)
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=FULL")
            connection.row_factory = sqlite3.Row
            connection.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    connection.close()
            self._connections.clear()
        self._local = threading.local()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (the write lock is taken at once; waits instead of failing)."""
        connection = self.connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    # -- meta ------------------------------------------------------------------------------------
    def meta(self, connection: sqlite3.Connection | None = None) -> dict:
        rows = (connection or self.connection()).execute("SELECT key, value FROM meta").fetchall()
        return {row["key"]: json.loads(row["value"]) for row in rows}

    def get(self, key: str, default: Any = None, connection: sqlite3.Connection | None = None) -> Any:
        row = (connection or self.connection()).execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row["value"])

    @staticmethod
    def put(connection: sqlite3.Connection, key: str, value: Any) -> None:
        connection.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                           (key, dumps(value)))

    def spec(self) -> dict:
        return self.get("spec")

    # -- trials ----------------------------------------------------------------------------------
    def trials(self, connection: sqlite3.Connection | None = None) -> list[StoredTrial]:
        rows = (connection or self.connection()).execute("SELECT * FROM trials ORDER BY number").fetchall()
        return [StoredTrial.from_row(row) for row in rows]

    def trial(self, number: int) -> StoredTrial | None:
        row = self.connection().execute("SELECT * FROM trials WHERE number=?", (number,)).fetchone()
        return None if row is None else StoredTrial.from_row(row)

    @staticmethod
    def insert_trial(connection: sqlite3.Connection, params: dict, *, worker: str, device: str | None,
                     budget=None, resume_from=None, bracket=None, rung=None, config_id=None) -> int:
        now = time.time()
        row = connection.execute("SELECT COALESCE(MAX(number), -1) + 1 FROM trials").fetchone()
        number = int(row[0])
        connection.execute(
            "INSERT INTO trials(number, params, state, budget, resume_from, bracket, rung, config_id, worker, device,"
            " attempts, created, started, heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
            (number, dumps(params), TrialState.RUNNING.value, budget, resume_from, bracket, rung, config_id,
             worker, device, now, now, now))
        return number

    @staticmethod
    def claim_queued(connection: sqlite3.Connection, number: int, *, worker: str, device: str | None) -> None:
        now = time.time()
        connection.execute("UPDATE trials SET state=?, worker=?, device=?, attempts=attempts+1, started=?, heartbeat=?"
                           " WHERE number=? AND state=?",
                           (TrialState.RUNNING.value, worker, device, now, now, number, TrialState.QUEUED.value))

    def finish(self, number: int, worker: str, *, state: TrialState, value: float | None, error: str | None,
               metrics: dict | None = None, intermediate: list | None = None, artifact: str | None = None,
               artifact_sha256: str | None = None, device: str | None = None) -> bool:
        """Record a result; False (nothing written) if the trial is no longer this worker's."""
        value = value if value is None or math.isfinite(value) else None
        with self.write() as connection:
            cursor = connection.execute(
                "UPDATE trials SET state=?, value=?, error=?, metrics=?, intermediate=COALESCE(?, intermediate),"
                " artifact=?, artifact_sha256=?, device=COALESCE(?, device), finished=?, heartbeat=?"
                " WHERE number=? AND worker=? AND state=?",
                (TrialState(state).value, value, error, dumps(metrics or {}),
                 None if intermediate is None else dumps(intermediate), artifact, artifact_sha256, device,
                 time.time(), time.time(), number, worker, TrialState.RUNNING.value))
            if cursor.rowcount != 1:
                self.event(connection, "stale-result", worker=worker, trial=number,
                           message="result discarded: the trial was re-queued or finished elsewhere")
                return False
        return True

    def report_intermediate(self, number: int, worker: str, step: float, value: float) -> None:
        with self.write() as connection:
            row = connection.execute("SELECT intermediate FROM trials WHERE number=? AND worker=? AND state=?",
                                     (number, worker, TrialState.RUNNING.value)).fetchone()
            if row is None:
                return
            values = [pair for pair in json.loads(row["intermediate"]) if pair[0] != step] + [[step, value]]
            connection.execute("UPDATE trials SET intermediate=? WHERE number=?", (dumps(values), number))

    def requeue_own(self, worker: str, numbers: list[int], reason: str) -> None:
        """Give trials back to the queue after a graceful stop (not counted as an attempt)."""
        if not numbers:
            return
        with self.write() as connection:
            for number in numbers:
                cursor = connection.execute(
                    "UPDATE trials SET state=?, worker=NULL, attempts=MAX(attempts-1, 0) WHERE number=? AND worker=? AND state=?",
                    (TrialState.QUEUED.value, number, worker, TrialState.RUNNING.value))
                if cursor.rowcount:
                    self.event(connection, "requeued", worker=worker, trial=number, message=reason)

    # -- workers and heartbeats ------------------------------------------------------------------
    def register_worker(self, worker: str, *, role: str, executor: str) -> None:
        now = time.time()
        with self.write() as connection:
            connection.execute(
                "INSERT OR REPLACE INTO workers(id, host, pid, pid_started, role, executor, started, heartbeat)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (worker, hostname(), os.getpid(), process_started(os.getpid()), role, executor, now, now))
            self.event(connection, "worker-started", worker=worker, message=f"{role} pid {os.getpid()} on {hostname()}")

    def heartbeat(self, worker: str, numbers: list[int], elapsed: float = 0.0) -> None:
        now = time.time()
        with self.write() as connection:
            connection.execute("UPDATE workers SET heartbeat=? WHERE id=?", (now, worker))
            for number in numbers:
                connection.execute("UPDATE trials SET heartbeat=? WHERE number=? AND worker=? AND state=?",
                                   (now, number, worker, TrialState.RUNNING.value))
            if elapsed:
                connection.execute("UPDATE meta SET value=CAST(value AS REAL)+? WHERE key='elapsed_s'", (elapsed,))

    def stop_worker(self, worker: str) -> None:
        with self.write() as connection:
            connection.execute("UPDATE workers SET stopped=? WHERE id=?", (time.time(), worker))

    def workers(self, connection: sqlite3.Connection | None = None) -> list[dict]:
        return [dict(row) for row in (connection or self.connection()).execute("SELECT * FROM workers")]

    @staticmethod
    def worker_alive(worker: dict, stale_after: float, now: float | None = None) -> bool:
        """A worker on this machine is alive while its process is; elsewhere while it heartbeats."""
        if worker.get("stopped"):
            return False
        if worker["host"] == hostname():
            return local_process_alive(worker["pid"], worker["pid_started"])
        return (now or time.time()) - worker["heartbeat"] < stale_after

    def release_stale(self, connection: sqlite3.Connection, *, stale_after: float, on_stale: str,
                      max_attempts: int, force_requeue: bool = False) -> list[int]:
        """Re-queue (or fail, by policy) running trials whose worker died or stopped heartbeating."""
        now = time.time()
        workers = {w["id"]: w for w in self.workers(connection)}
        released = []
        rows = connection.execute("SELECT number, worker, heartbeat, attempts FROM trials WHERE state=?",
                                  (TrialState.RUNNING.value,)).fetchall()
        for row in rows:
            worker = workers.get(row["worker"])
            if worker is not None and worker["host"] == hostname() and not worker.get("stopped"):
                dead = not local_process_alive(worker["pid"], worker["pid_started"])
            else:
                dead = worker is None or bool(worker.get("stopped")) or now - (row["heartbeat"] or 0) > stale_after
            if not dead:
                continue
            reason = f"worker {row['worker']} died or stopped heartbeating"
            if force_requeue or (on_stale == "requeue" and row["attempts"] < max_attempts):
                connection.execute("UPDATE trials SET state=?, worker=NULL WHERE number=?",
                                   (TrialState.QUEUED.value, row["number"]))
                self.event(connection, "requeued", trial=row["number"], message=reason)
            else:
                connection.execute("UPDATE trials SET state=?, error=?, finished=? WHERE number=?",
                                   (TrialState.CRASHED.value, reason, now, row["number"]))
                self.event(connection, "crashed", trial=row["number"], message=reason)
            released.append(row["number"])
        return released

    # -- events ----------------------------------------------------------------------------------
    @staticmethod
    def event(connection: sqlite3.Connection, kind: str, *, worker: str | None = None, trial: int | None = None,
              message: str = "") -> None:
        connection.execute("INSERT INTO events(time, worker, trial, kind, message) VALUES (?, ?, ?, ?, ?)",
                           (time.time(), worker, trial, kind, message))

    def events(self) -> list[dict]:
        return [dict(row) for row in self.connection().execute("SELECT * FROM events ORDER BY id")]
