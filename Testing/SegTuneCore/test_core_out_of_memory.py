"""Out of memory in any CLI: one line that says what to change, exit 2, nothing written.

The failures are real: the child processes run under an address-space limit (RLIMIT_AS), so
numpy and torch fail to allocate as they do on a full machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from SegTuneCore.errors import out_of_memory

REPO = Path(__file__).resolve().parents[2]


def _run_limited(args: list[str], limit_bytes: int) -> subprocess.CompletedProcess:
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("", "KidneyUS", "MRIFieldOfView", "HPOTools")),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                          preexec_fn=limit, env=env, cwd=REPO)


def _assert_one_line_memory_error(result: subprocess.CompletedProcess, detail: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: out of memory (") and detail in lines[0], lines[0]
    assert "lower --batch-size or --workers" in lines[0]


def test_phantom_beyond_the_memory_limit_fails_in_one_line_and_writes_nothing(tmp_path):
    # 600^3 voxels need a few GiB; numpy's allocation fails under a 1.5 GB address-space limit
    result = _run_limited(["-m", "KidneyUSLib", "phantom", "--population", "adult", "--seed", "1",
                           "--size", "600", "600", "600", "--output", str(tmp_path / "v.nrrd"),
                           "--label", str(tmp_path / "l.nrrd")], 1_500_000_000)
    _assert_one_line_memory_error(result, "Unable to allocate")
    assert list(tmp_path.iterdir()) == []


def test_torch_allocator_failure_is_reported_in_one_line():
    code = ("import torch; from SegTuneCore.errors import run_cli; "
            "run_cli(lambda argv: torch.ones(2**31, dtype=torch.float32))")  # 8 GiB
    _assert_one_line_memory_error(_run_limited(["-c", code], 3_000_000_000), "DefaultCPUAllocator")


def test_other_runtime_errors_keep_their_traceback():
    code = ("from SegTuneCore.errors import run_cli\n"
            "def main(argv):\n    raise RuntimeError('shape mismatch')\n"
            "run_cli(main)")
    result = _run_limited(["-c", code], 3_000_000_000)
    assert result.returncode == 1 and "Traceback" in result.stderr and "RuntimeError: shape mismatch" in result.stderr


def test_cuda_out_of_memory_says_to_use_the_cpu():
    torch = pytest.importorskip("torch")
    message = out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
                                                   "total capacity of 79.10 GiB of which 1.2 GiB is free."))
    assert message.startswith("out of GPU memory (CUDA out of memory. Tried to allocate 2.00 GiB.")
    assert "--device cpu" in message and "\n" not in message
    assert out_of_memory(RuntimeError("Expected all tensors to be on the same device")) is None
