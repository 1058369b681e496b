"""The GPU session scripts run blind on a lent machine: their SMOKE=1 mode must keep working here."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_latency_and_table_script_smoke_run_writes_the_bench_and_the_table(tmp_path):
    env = {**os.environ, "SMOKE": "1", "PYTHON": sys.executable, "OUT": str(tmp_path),
           "KIDNEYUS_PHANTOM_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(["bash", str(REPO / "KidneyUS/tools/latency_and_table_gpu.sh")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = {row["mode"]: row for row in json.loads((tmp_path / "kidney-bench-compile.json").read_text())["forward"]}
    assert rows["inference form, fp32"]["max_abs_diff_vs_fp32"] < 1e-5
    assert rows["inference form, fp32"]["gflop"] < rows["fp32 eager"]["gflop"]
    profile = (tmp_path / "kidney-profile.txt").read_text()  # which layers a missed target should blame
    assert "inference form, bf16 + channels_last_3d, eager" in profile and "aten::mkldnn_convolution" in profile
    table = (tmp_path / "kidney-transfer" / "table.md").read_text()
    assert table.count("\n| ") == 8 and "GI + Intensity" in table  # a row per strategy of Table 3.1
    autotune = json.loads((tmp_path / "kidney-bench-max-autotune.json").read_text())["forward"]
    assert {row["mode"] for row in autotune} == set(rows)  # on a CPU the compile rows are CUDA-only
    assert "bench exit 0" in result.stdout and "max-autotune bench exit 0" in result.stdout
    assert "experiment exit 0" in result.stdout
