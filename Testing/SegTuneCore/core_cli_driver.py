"""Run many `python -m SegTuneCore ...` command lines at the cost of one start-up.

`python -m core_cli_driver CASES.json` imports SegTuneCore (and Slicer, VTK, SimpleITK) once,
then forks one child per command line. Each child is what `python -m SegTuneCore ARGS` would be
after its imports: its own stdout/stderr (captured to files), its exit code, the interpreter's
traceback printing for an uncaught exception, and a native crash (abort) kills only that child.
Prints {case: [exit code, stdout, stderr]} as JSON.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import tempfile
import traceback

import SimpleITK  # noqa: F401  (imported once, before forking)
import slicer  # noqa: F401
import vtk  # noqa: F401

import SegTuneCore.convert_cli  # noqa: F401
import SegTuneCore.info_cli  # noqa: F401
import SegTuneCore.models_cli  # noqa: F401


def _child(argv: list[str], stdout_fd: int, stderr_fd: int) -> int:
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    sys.argv = ["-m", *argv]
    try:
        runpy.run_module("SegTuneCore", run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:  # what the interpreter does with an uncaught exception
        traceback.print_exc()
        return 1


def run(argv: list[str]) -> tuple[int, str, str]:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(argv, out.fileno(), err.fileno())
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return os.waitstatus_to_exitcode(status), out.read().decode(errors="replace"), err.read().decode(errors="replace")


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        cases = json.load(handle)
    results = {case: run(argv) for case, argv in cases.items()}
    sys.stdout.write(json.dumps(results))
