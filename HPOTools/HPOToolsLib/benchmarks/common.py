"""Helpers shared by the benchmark commands: a resumable JSON cache of runs, result records, plots."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from SegTuneCore.process import atomic_write

CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "segtune" / "hpo-bench"


ENGINE_SOURCES = ("__init__.py", "space.py", "trials.py", "kernels.py", "incremental_cholesky.py", "gp.py",
                  "acquisition.py", "failures.py", "hyperband.py", "optimize.py", "samplers")


def engine_fingerprint() -> str:
    """Short hash of the optimiser's sources (spaces, GP, samplers, Hyperband, minimize): results
    computed by different versions of the optimisers are never mixed up in a cache."""
    import hashlib

    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in ENGINE_SOURCES:
        for path in sorted((root / name).rglob("*.py")) if (root / name).is_dir() else [root / name]:
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def limit_threads() -> None:
    """One BLAS / torch thread per process. On this shared 2-core machine a multi-threaded BLAS under
    load is catastrophic (measured: a replay BO run 7x slower), and --workers gives the parallelism."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def parse_seeds(text: str) -> list[int]:
    """'10' -> 0..9, '3-7' -> 3..7, '1,4,9' -> those."""
    text = text.strip()
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",")]
        elif "-" in text.lstrip("-"):
            low, high = (int(s) for s in text.split("-", 1))
            seeds = list(range(low, high + 1))
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise ValueError(f"--seeds: expected N, A-B or a comma list, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise ValueError(f"--seeds: expected at least one non-negative seed, got {text!r}")
    return seeds


class RunCache:
    """Finished runs keyed by a string, saved atomically after each one so a run can resume."""

    def __init__(self, path: Path | None):
        self.path = path
        self.runs: dict[str, Any] = {}
        if path is not None and path.is_file():
            self.runs = json.loads(path.read_text()).get("runs", {})
        self._last_save = 0.0

    def __contains__(self, key: str) -> bool:
        return key in self.runs

    def __getitem__(self, key: str):
        return self.runs[key]

    def put(self, key: str, value: Any, force_save: bool = False) -> None:
        self.runs[key] = value
        if force_save or time.monotonic() - self._last_save > 5:
            self.save()

    def save(self) -> None:
        """Merge with what other processes saved meanwhile (several can fill one cache), then write."""
        if self.path is None:
            return
        if self.path.is_file():
            self.runs = {**json.loads(self.path.read_text()).get("runs", {}), **self.runs}
        with atomic_write(self.path) as tmp:
            tmp.write_text(json.dumps({"runs": self.runs}, separators=(",", ":")))
        self._last_save = time.monotonic()


def add_cache_arguments(parser, name: str) -> None:
    parser.add_argument("--cache", type=Path, default=CACHE_DIR / f"{name}.json",
                        help="JSON file of finished runs, reused and extended (default: %(default)s)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")


def cache_from_args(args) -> RunCache:
    return RunCache(None if args.no_cache else args.cache)


def record(args, extra: dict | None = None) -> dict:
    """Device, versions and the arguments every result carries."""
    import numpy
    import optuna

    from SegTuneCore.device import describe

    device = describe("cpu")
    device["cpu_count"] = os.cpu_count()
    return {"device": device, "versions": {"numpy": numpy.__version__, "optuna": optuna.__version__,
                                           "engine_fingerprint": engine_fingerprint()},
            "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                          if k not in ("func",)}, **(extra or {})}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
