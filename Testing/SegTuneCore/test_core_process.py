"""PythonModuleProcess: events in order, crashes and kills become clear errors, cancel kills the tree."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from SegTuneCore.process import ProcessError, PythonModuleProcess, atomic_write, work_folder

HERE = Path(__file__).resolve().parent


def child(mode: str, *args, on_event=None) -> PythonModuleProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    return PythonModuleProcess("core_children", [mode, *args], on_event=on_event, env=env)


def wait_for_event(process: PythonModuleProcess, predicate, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in process.poll():
            if predicate(event):
                return event
        assert process.running(), f"child ended early: {process.stderr_tail()}"
        time.sleep(0.01)
    process.cancel()
    raise AssertionError("the expected event never came")


def test_progress_events_arrive_in_order():
    received = []
    process = child("progress", 25, on_event=received.append).start()
    result = process.wait(timeout=60)
    assert result == {"steps": 25}
    progress = [e for e in received if e["event"] == "progress"]
    assert [e["fraction"] for e in progress] == pytest.approx([i / 25 for i in range(1, 26)])
    assert [e["message"] for e in progress] == [f"step {i}" for i in range(1, 26)]
    assert received[-1]["event"] == "result" and received == process.events


def test_child_that_raises_shows_its_last_stderr_line():
    process = child("crash").start()
    with pytest.raises(ProcessError) as caught:
        process.wait(timeout=60)
    message = str(caught.value)
    assert "RuntimeError: the child failed on purpose: boom" in message
    assert "exited with code 1" in message and "\n" not in message
    assert [e["event"] for e in process.events] == ["progress"]


def test_sigkilled_child_gives_clear_error_and_no_output(tmp_path):
    output = tmp_path / "result.nrrd"
    process = child("write_then_hang", output).start()
    event = wait_for_event(process, lambda e: e["event"] == "log" and e["message"].startswith("writing"))
    temporary = Path(event["message"].split(" ", 1)[1])
    assert temporary.exists() and temporary.parent == tmp_path  # it really was half-way through
    os.kill(process.pid, signal.SIGKILL)
    with pytest.raises(ProcessError, match="killed by signal SIGKILL"):
        process.wait(timeout=30)
    assert not output.exists()
    # Only the hidden temporary of the killed writer may remain; never the output's name.
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".tmp-")] == []


def test_cancel_kills_child_and_grandchildren_within_5_seconds():
    process = child("tree", 3).start()
    event = wait_for_event(process, lambda e: e["event"] == "log" and e["message"].startswith("pids "))
    pids = [process.pid] + [int(p) for p in event["message"].split()[1:]]
    assert len(pids) == 5 and all(psutil.pid_exists(p) for p in pids)
    started = time.monotonic()
    process.cancel()
    gone, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=5)
    assert not alive, f"still running after cancel: {[p.pid for p in alive]}"
    assert time.monotonic() - started < 5.0
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    with pytest.raises(ProcessError, match="cancelled"):
        process.outcome()


def test_bytes_that_are_not_utf8_neither_stop_the_reader_nor_hang_the_child():
    process = child("bad_bytes", 20000).start()  # ~4 MB after the bad byte: more than a pipe holds
    assert process.wait(timeout=120) == {"steps": 20000}
    assert any(e["event"] == "log" and "raw \ufffd byte" in e["message"] for e in process.events)


def test_a_child_that_dies_leaves_no_descendant_behind():
    process = child("orphan_then_die").start()
    event = wait_for_event(process, lambda e: e["event"] == "log" and e["message"].startswith("grandchild"))
    grandchild = psutil.Process(int(event["message"].split()[1]))
    with pytest.raises(ProcessError, match="killed by signal SIGKILL"):
        process.wait(timeout=60)
    # it ignored SIGTERM: only the escalation to SIGKILL ends it
    gone, alive = psutil.wait_procs([grandchild], timeout=5)
    assert not alive or alive[0].status() == psutil.STATUS_ZOMBIE


def test_atomic_write_through_a_symbolic_link_updates_its_target(tmp_path):
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "result.txt"
    target.write_text("old")
    link = tmp_path / "latest.txt"
    link.symlink_to(target)
    with atomic_write(link) as tmp:
        tmp.write_text("new")
    assert link.is_symlink() and target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data", "latest.txt", "result.txt"]


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("new, half")
            raise RuntimeError("fail")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    folder = tmp_path / "model"
    with atomic_write(folder) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("1")
    with atomic_write(folder) as tmp:  # replacing an existing folder
        tmp.mkdir()
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in folder.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out.txt"]


def test_wait_timeout_stops_the_child_and_leaves_no_output(tmp_path):
    output = tmp_path / "result.nrrd"
    process = child("write_then_hang", output).start()
    wait_for_event(process, lambda e: e["event"] == "log")
    started = time.monotonic()
    with pytest.raises(ProcessError, match="timed out"):
        process.wait(timeout=0.5)
    assert time.monotonic() - started < 6.0
    assert not process.running() and not output.exists()


def test_progress_reporter_modes():
    import io
    import json

    from SegTuneCore.process import ProgressReporter

    stream = io.StringIO()
    reporter = ProgressReporter("json", stream=stream)
    reporter.progress(1.7, "clamped")
    reporter.log("a message")
    reporter.result({"path": Path("/tmp/x"), "values": np.arange(3)})
    reporter.error("first line\nsecond line")
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert events == [{"event": "progress", "fraction": 1.0, "message": "clamped"},
                      {"event": "log", "message": "a message"},
                      {"event": "result", "path": "/tmp/x", "values": [0, 1, 2]},
                      {"event": "error", "message": "first line second line"}]
    quiet = io.StringIO()
    for method, argument in (("progress", 0.5), ("log", "x"), ("result", {}), ("error", "x")):
        getattr(ProgressReporter("quiet", stream=quiet), method)(argument)
    assert quiet.getvalue() == ""
    with pytest.raises(ValueError):
        ProgressReporter("verbose")


def test_cancel_after_the_child_finished_keeps_its_result():
    from SegTuneCore.process import PythonModuleProcess

    process = PythonModuleProcess("json.tool", ["--help"]).start()
    process.process.wait(timeout=30)
    process.cancel()
    assert not process.cancelled


def test_work_folder_is_removed_only_when_starting_fails():
    with pytest.raises(ProcessError):
        with work_folder("segtune-test-") as failed:
            (failed / "input.nrrd").write_text("x")
            raise ProcessError("the child could not start")
    assert not failed.exists()
    with work_folder("segtune-test-") as started:
        (started / "input.nrrd").write_text("x")
    assert (started / "input.nrrd").is_file()  # the running child's; its owner removes it later
    shutil.rmtree(started)
