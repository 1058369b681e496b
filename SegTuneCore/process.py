"""Long work in child processes: the JSON-lines progress protocol, a runner, atomic outputs.

A child (`python -m <Lib> ... --progress json`) writes one JSON object per line on stdout:
  {"event": "progress", "fraction": 0.42, "message": "..."}
  {"event": "log", "message": "..."}
  {"event": "result", ...payload}
  {"event": "error", "message": "..."}
The parent (Slicer widget polling with a QTimer, a CLI, a test) reads them with
`PythonModuleProcess.poll()`; `cancel()` kills the whole process tree; a child that dies
without a result raises `ProcessError` carrying the child's last stderr lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from SegTuneCore.errors import SegTuneError, one_line

EVENT_TYPES = ("progress", "log", "result", "error")


# --- atomic outputs -------------------------------------------------------------------------

def _fsync_tree(path: Path) -> None:
    paths = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file_path in paths:
        with open(file_path, "rb") as handle:
            os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path (same suffix); rename it onto `path` only on success.

    Works for files and folders. On any exception the temporary is removed and `path` is left
    as it was, so a crash or a kill never leaves a half-written output under the final name.
    """
    path = Path(path)
    if path.is_symlink():  # write where the link points; the link itself stays
        path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{secrets.token_hex(4)}-{path.name}")
    try:
        yield tmp
        if not tmp.exists():
            raise SegTuneError(f"{path}: nothing was written")
        _fsync_tree(tmp)
        if tmp.is_dir() and path.is_dir():
            # os.replace cannot replace a non-empty folder: move the old one aside first.
            old = path.with_name(f".old-{secrets.token_hex(4)}-{path.name}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


# --- the child's side -----------------------------------------------------------------------

class ProgressReporter:
    """Progress for CLIs: a text bar on stderr, JSON lines on stdout, or nothing."""

    def __init__(self, mode: str = "bar", stream=None):
        if mode not in ("bar", "json", "quiet"):
            raise ValueError(f"unknown progress mode {mode!r} (bar, json, quiet)")
        self.mode = mode
        self.stream = stream
        self._last_bar = ""

    def _emit(self, event: str, **fields: Any) -> None:
        out = self.stream or sys.stdout
        out.write(json.dumps({"event": event, **fields}, default=json_default) + "\n")
        out.flush()

    def progress(self, fraction: float, message: str = "") -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        if self.mode == "json":
            self._emit("progress", fraction=fraction, message=message)
        elif self.mode == "bar":
            width = 30
            filled = int(round(fraction * width))
            bar = f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction * 100:5.1f}% {message}"[:120]
            if bar != self._last_bar:
                err = self.stream or sys.stderr
                err.write(bar.ljust(len(self._last_bar)))
                err.flush()
                self._last_bar = bar
            if fraction >= 1.0:
                (self.stream or sys.stderr).write("\n")
                self._last_bar = ""

    def log(self, message: str) -> None:
        if self.mode == "json":
            self._emit("log", message=message)
        elif self.mode == "bar":
            if self._last_bar:
                (self.stream or sys.stderr).write("\n")
                self._last_bar = ""
            print(message, file=self.stream or sys.stderr)

    def result(self, payload: dict) -> None:
        if self.mode == "json":
            self._emit("result", **payload)

    def error(self, message: str) -> None:
        if self.mode == "json":
            self._emit("error", message=one_line(message))


def json_default(value: Any) -> Any:
    """JSON for numpy values and paths (progress events, model.json)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def add_progress_argument(parser) -> None:
    parser.add_argument("--progress", choices=("bar", "json", "quiet"), default="bar",
                        help="progress display: a bar on stderr, JSON lines on stdout (for the Slicer module), or none")


# --- the parent's side ----------------------------------------------------------------------

class ProcessError(SegTuneError):
    """The child failed: it reported an error, crashed, was killed, or never sent a result."""


def _group_members(pgid: int) -> list:
    """The live (not zombie) processes of a process group."""
    import psutil

    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
    return members


def _terminate(processes: list, timeout: float) -> None:
    """SIGTERM, then SIGKILL for whatever is still alive after timeout / 2."""
    import psutil

    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=timeout / 2)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=timeout / 2)


def kill_process_tree(pid: int, timeout: float = 5.0) -> None:
    """Terminate a live process, all its descendants and the rest of the process group it leads,
    escalating to SIGKILL. The group catches descendants orphaned before we looked; psutil
    catches those that left the group (setsid)."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    processes = root.children(recursive=True) + [root]
    _terminate(processes + [p for p in _group_members(pid) if p not in processes], timeout)


@contextlib.contextmanager
def work_folder(prefix: str) -> Iterator[Path]:
    """A new temporary folder for a child process's files, removed again if starting the child
    fails; once it runs, the caller owns the folder and removes it when the child is done."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def kill_process_group(pgid: int, timeout: float = 5.0) -> None:
    """Terminate what is left of a process group whose leader has ended (never the leader's pid
    itself, which the system may have given to another process by now)."""
    _terminate(_group_members(pgid), timeout)


class PythonModuleProcess:
    """Run `python -m module args...` as a child speaking the JSON-lines protocol.

    Non-blocking: `poll()` returns the events read so far (call it from a QTimer in Slicer);
    `wait()` blocks until the end and returns the result payload.
    """

    def __init__(self, module: str, args: Sequence[str] = (), on_event: Callable[[dict], None] | None = None,
                 env: dict | None = None, python: str | None = None, cwd: str | os.PathLike | None = None):
        self.command = [python or sys.executable, "-u", "-m", module, *[str(a) for a in args]]
        self.on_event = on_event
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self.events: list[dict] = []
        self.result: dict | None = None
        self.error: str | None = None
        self.cancelled = False
        self._queue: queue.Queue = queue.Queue()
        self._stderr_tail: list[str] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> "PythonModuleProcess":
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=env, cwd=self.cwd, text=True, bufsize=1,
            encoding="utf-8", errors="replace",  # a native library's stray byte must not kill the reader
            start_new_session=True,  # its own process group: cancel reaches grandchildren too
        )
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _read_stdout(self) -> None:
        assert self.process and self.process.stdout
        for line in self.process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "log", "message": line}
            if not isinstance(event, dict) or event.get("event") not in EVENT_TYPES:
                event = {"event": "log", "message": line}
            self._queue.put(event)

    def _read_stderr(self) -> None:
        assert self.process and self.process.stderr
        for line in self.process.stderr:
            line = line.rstrip()
            if line:
                self._stderr_tail = (self._stderr_tail + [line])[-20:]

    def poll(self) -> list[dict]:
        """Events that arrived since the last call, in order."""
        new = []
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            if event["event"] == "result":
                self.result = {k: v for k, v in event.items() if k != "event"}
            elif event["event"] == "error":
                self.error = str(event.get("message", "error"))
            self.events.append(event)
            new.append(event)
            if self.on_event:
                self.on_event(event)
        return new

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float | None = None) -> dict:
        """Block until the child ends; return its result payload or raise ProcessError."""
        if self.process is None:
            self.start()
        assert self.process
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running():
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise ProcessError(f"{self.describe()} timed out after {timeout:.0f} s and was stopped")
            self.poll()
            time.sleep(0.05)
        # descendants left behind (the child crashed or was killed) would hold its pipes open
        kill_process_group(self.process.pid)
        for thread in self._threads:
            thread.join(timeout=5)
        self.poll()
        return self.outcome()

    def outcome(self) -> dict:
        """The result of a finished child, or the ProcessError explaining why there is none."""
        assert self.process
        code = self.process.returncode
        if self.cancelled:
            raise ProcessError(f"{self.describe()} was cancelled")
        if self.error:
            raise ProcessError(self.error)
        if code != 0:
            if code is not None and code < 0:
                try:
                    reason = f"was killed by signal {signal.Signals(-code).name}"
                except ValueError:  # real-time signals have no name
                    reason = f"was killed by signal {-code}"
            else:
                reason = f"exited with code {code}"
            tail = self.stderr_tail(3)
            raise ProcessError(f"{self.describe()} {reason}" + (f": {tail}" if tail else ""))
        if self.result is None:
            raise ProcessError(f"{self.describe()} ended without a result")
        return self.result

    def stderr_tail(self, lines: int = 3) -> str:
        return " | ".join(self._stderr_tail[-lines:])

    def describe(self) -> str:
        module = self.command[3] if len(self.command) > 3 else "process"
        return f"{module} (pid {self.pid})"

    def cancel(self, timeout: float = 5.0) -> None:
        """Stop the child and every process it started."""
        if self.process is None or not self.running():
            return  # a child that already ended keeps its own outcome
        self.cancelled = True
        kill_process_tree(self.process.pid, timeout=timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
