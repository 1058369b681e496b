"""Child processes for the SegTuneCore process-runner and model-store tests.

Run as `python -m core_children MODE ...` with this folder on PYTHONPATH; every mode speaks the
JSON-lines protocol through SegTuneCore.process.ProgressReporter.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from SegTuneCore.process import ProgressReporter, atomic_write

SLEEP_FOREVER = "import time\nwhile True: time.sleep(1)"


def progress(reporter: ProgressReporter, count: str) -> None:
    steps = int(count)
    for step in range(1, steps + 1):
        reporter.progress(step / steps, f"step {step}")
    reporter.result({"steps": steps})


def crash(reporter: ProgressReporter) -> None:
    reporter.progress(0.5, "half way")
    print("some earlier diagnostic", file=sys.stderr, flush=True)
    raise RuntimeError("the child failed on purpose: boom")


def write_then_hang(reporter: ProgressReporter, output: str) -> None:
    """Half-write an output through atomic_write, then wait to be killed."""
    with atomic_write(Path(output)) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(b"partial output " * 1000)
            handle.flush()
            reporter.log(f"writing {tmp}")
            time.sleep(60)
    reporter.result({"output": output})


def tree(reporter: ProgressReporter, width: str) -> None:
    """Start grandchildren (one of which starts its own child and one leaves the process group)."""
    pids = []
    for index in range(int(width)):
        code = SLEEP_FOREVER
        if index == 0:  # a grandchild with a great-grandchild
            code = (f"import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', {SLEEP_FOREVER!r}])\n"
                    f"print(p.pid, flush=True)\n{SLEEP_FOREVER}")
        popen = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                 start_new_session=index == 1)  # index 1 leaves the group
        pids.append(popen.pid)
        if index == 0:
            pids.append(int(popen.stdout.readline()))
    reporter.log("pids " + " ".join(map(str, pids)))
    time.sleep(120)


def slow_install(reporter: ProgressReporter, store: str, folder: str, chunk_seconds: str) -> None:
    """Install a model with a copy that reports (and pauses) after every chunk: a killable install."""
    from SegTuneCore.models import ModelStore

    def slow_copy(source, target, *args, **kwargs):
        size = Path(source).stat().st_size
        done = 0
        with open(source, "rb") as reader, open(target, "wb") as writer:
            for block in iter(lambda: reader.read(1 << 18), b""):
                writer.write(block)
                writer.flush()
                done += len(block)
                reporter.progress(done / size, "copying")
                time.sleep(float(chunk_seconds))
        reporter.log("copied")
        time.sleep(float(chunk_seconds) * 50)  # a window to be killed in, before verification and rename
        return target

    shutil.copy2 = slow_copy
    entry = ModelStore(store, bundled_dirs=[]).install(folder)
    reporter.result({"version": entry.version})


def bad_bytes(reporter: ProgressReporter, count: str) -> None:
    """A byte that is no UTF-8 on stdout and stderr (as native libraries print), then much output."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
        stream.buffer.write(b"raw \xff byte\n")
        stream.buffer.flush()
    for step in range(int(count)):
        reporter.progress(step / int(count), "x" * 200)
    reporter.result({"steps": int(count)})


def orphan_then_die(reporter: ProgressReporter) -> None:
    """Leave a grandchild that ignores SIGTERM and holds our pipes, then die by SIGKILL."""
    import os
    import signal

    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(1)"
    grandchild = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(0.5)  # its SIGTERM handler is set
    reporter.log(f"grandchild {grandchild.pid}")
    os.kill(os.getpid(), signal.SIGKILL)


MODES = {"progress": progress, "crash": crash, "write_then_hang": write_then_hang, "tree": tree,
         "slow_install": slow_install, "bad_bytes": bad_bytes, "orphan_then_die": orphan_then_die}


if __name__ == "__main__":
    MODES[sys.argv[1]](ProgressReporter("json"), *sys.argv[2:])
