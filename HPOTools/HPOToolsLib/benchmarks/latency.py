"""`bench latency`: seconds per BO suggestion against the number of observations n (6-D).

For each n, three samplers receive the same n observed points (uniform in [0, 1]^6, Hartmann6
values) and then make ``--suggestions`` consecutive suggestions, each followed by telling the
suggested point's value (so each suggestion includes the GP update for one new observation):

- ``incremental``: our BO sampler (incremental Cholesky, eq. 2.18/2.19, with the refit policy);
- ``full``: the same sampler with ``incremental=False``: every update refactorises K and its
  inverse from scratch, O(n³) — what §2.3.1 says implementations do;
- ``optuna``: Optuna's GPSampler (n <= ``--optuna-max-n``), which refits its GP at every suggestion.

The setup (first factorisation and hyper-parameter fit at n) is not timed; a suggestion that
triggers a scheduled refit is included, so ``median`` is the typical suggestion and ``mean`` the
amortised cost. ``refit_seconds`` is one refit at n, ``refit_every`` the refit interval at n:
``amortised = incremental median + refit_seconds / refit_every`` is the long-run average.
Targets (issue 3): <= 50 ms median at n = 1000, and >= 50x faster than Optuna's GPSampler there.
"""

from __future__ import annotations

import math
import os
import statistics
import time

import numpy as np

from .functions import HARTMANN6_SPACE, hartmann6_array

DEFAULT_SIZES = (100, 500, 1000, 2000, 5000)


def configure(parser):
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        help="comma-separated n (default 100,500,1000,2000,5000)")
    parser.add_argument("--suggestions", type=int, default=7, help="timed suggestions per n and method (default 7)")
    parser.add_argument("--optuna-suggestions", type=int, default=3,
                        help="timed Optuna suggestions per n (default 3; about 6 s each at n = 1000)")
    parser.add_argument("--optuna-max-n", type=int, default=1000, help="largest n for Optuna (default 1000)")
    parser.add_argument("--full-max-n", type=int, default=5000, help="largest n for full refactorisation")
    parser.add_argument("--methods", default="incremental,full,optuna", help="subset of incremental,full,optuna")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS and torch threads for every method (default 1: on a shared 2-core machine "
                             "OpenBLAS threads spin and slow small products down); 0 leaves the defaults")


def observations(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.random((n, 6))
    return X, hartmann6_array(X)


def _params(x):
    return {f"x{i + 1}": float(v) for i, v in enumerate(x)}


def time_ours(n: int, suggestions: int, seed: int, incremental: bool) -> dict:
    from ..samplers import BOSampler

    X, y = observations(n, seed)
    sampler = BOSampler(HARTMANN6_SPACE, seed=seed, incremental=incremental)
    for x, v in zip(X, y):
        sampler.tell(_params(x), float(v))
    start = time.perf_counter()
    params = sampler.ask()[0]                       # first fit at n: setup, not timed
    setup = time.perf_counter() - start
    times, cpu, refits = [], [], sampler.gp.n_refits
    for _ in range(suggestions):
        sampler.tell(params, float(hartmann6_array(np.array([list(params.values())]))[0]))
        start, start_cpu = time.perf_counter(), time.process_time()
        params = sampler.ask()[0]
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    record = {**_summary(times, cpu), "setup_seconds": setup, "refits_during_timing": sampler.gp.n_refits - refits}
    if incremental:
        gp = sampler.gp
        start = time.perf_counter()
        gp.fit(gp.X, gp.y)
        record["refit_seconds"] = time.perf_counter() - start
        record["refit_every"] = gp.refit_policy.interval(gp.n)
        record["amortised"] = record["median"] + record["refit_seconds"] / record["refit_every"]
    return record


def time_optuna(n: int, suggestions: int, seed: int) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    X, y = observations(n, seed)
    distributions = {f"x{i + 1}": optuna.distributions.FloatDistribution(0.0, 1.0) for i in range(6)}
    sampler = optuna.samplers.GPSampler(seed=seed)
    study = optuna.create_study(sampler=sampler)
    study.add_trials([optuna.trial.create_trial(params=_params(x), distributions=distributions, value=float(v))
                      for x, v in zip(X, y)])
    times, cpu = [], []
    for _ in range(suggestions):
        start, start_cpu = time.perf_counter(), time.process_time()
        trial = study.ask(distributions)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        x = np.array([[trial.params[f"x{i + 1}"] for i in range(6)]])
        study.tell(trial, float(hartmann6_array(x)[0]))
    return _summary(times, cpu)


def _summary(times: list[float], cpu: list[float]) -> dict:
    """Wall-clock median/mean, and the process CPU time (all threads): on a machine shared with
    other jobs the wall clock includes waiting for a core, the CPU time does not."""
    return {"median": statistics.median(times), "mean": statistics.fmean(times), "times": times,
            "median_cpu": statistics.median(cpu), "mean_cpu": statistics.fmean(cpu)}


def _limit_threads(threads: int) -> dict:
    """Same thread count for numpy/scipy BLAS (threadpoolctl) and torch (Optuna's GP)."""
    if threads <= 0:
        return {"threads": "default"}
    record = {"threads": threads}
    try:
        import threadpoolctl
        record["blas_limiter"] = threadpoolctl.threadpool_limits(threads)
    except ImportError:
        record["blas"] = "threadpoolctl missing: BLAS threads not limited"
    try:
        import torch
        torch.set_num_threads(threads)
    except ImportError:
        pass
    return record


def run(args) -> int:
    from .cli import emit

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - {"incremental", "full", "optuna"}
    if unknown or not sizes or min(sizes) < 20 or args.suggestions < 1:
        raise ValueError(f"bad --methods {sorted(unknown)} or --sizes/--suggestions (n >= 20, suggestions >= 1)")
    limits = _limit_threads(args.threads)
    results = []
    for n in sizes:
        row: dict = {"n": n}
        if "incremental" in methods:
            row["incremental"] = time_ours(n, args.suggestions, args.seed, incremental=True)
        if "full" in methods and n <= args.full_max_n:
            row["full"] = time_ours(n, max(2, args.suggestions // 2) if n >= 2000 else args.suggestions,
                                    args.seed, incremental=False)
        if "optuna" in methods and n <= args.optuna_max_n:
            row["optuna"] = time_optuna(n, args.optuna_suggestions, args.seed)
        for baseline in ("full", "optuna"):
            if baseline in row and "incremental" in row:
                row[f"speedup_vs_{baseline}"] = row[baseline]["median"] / row["incremental"]["median"]
                row[f"speedup_vs_{baseline}_cpu"] = row[baseline]["median_cpu"] / row["incremental"]["median_cpu"]
        results.append(row)
    at_1000 = next((r for r in results if r["n"] == 1000), None)
    targets = {}
    if at_1000 and "incremental" in at_1000:
        targets["median_at_1000_le_50ms"] = at_1000["incremental"]["median"] <= 0.05
        targets["median_cpu_at_1000_le_50ms"] = at_1000["incremental"]["median_cpu"] <= 0.05
        if "speedup_vs_optuna" in at_1000:
            targets["speedup_vs_optuna_at_1000_ge_50"] = at_1000["speedup_vs_optuna"] >= 50
    lines = ["seconds per suggestion, 6-D: wall-clock median over the timed suggestions (mean includes refits);",
             "CPU = process CPU seconds per suggestion (median)",
             f"{'n':>6} {'incremental':>12} {'(mean)':>8} {'amortised':>10} {'full':>10} {'optuna':>10} "
             f"{'x full':>8} {'x optuna':>9} {'CPU incr':>9} {'CPU optuna':>11} {'x optuna CPU':>13}"]
    fmt = lambda v: "-" if v is None else (f"{v:.4f}" if v < 10 else f"{v:.1f}")
    for r in results:
        inc = r.get("incremental", {})
        lines.append(f"{r['n']:>6} {fmt(inc.get('median')):>12} {fmt(inc.get('mean')):>8} {fmt(inc.get('amortised')):>10} "
                     f"{fmt(r.get('full', {}).get('median')):>10} {fmt(r.get('optuna', {}).get('median')):>10} "
                     f"{fmt(r.get('speedup_vs_full')):>8} {fmt(r.get('speedup_vs_optuna')):>9} "
                     f"{fmt(inc.get('median_cpu')):>9} {fmt(r.get('optuna', {}).get('median_cpu')):>11} "
                     f"{fmt(r.get('speedup_vs_optuna_cpu')):>13}")
    for name, ok in targets.items():
        lines.append(f"target {name}: {'met' if ok else 'MISSED'}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    lines.append(f"load average (1 min) at the end: {load:.1f} on {os.cpu_count()} CPUs")
    lines.append(f"threads per method: {limits['threads']}" + (f" ({limits['blas']})" if "blas" in limits else ""))
    emit(args, {"bench": "latency", "dimension": 6, "seed": args.seed, "suggestions": args.suggestions,
                "threads": limits["threads"],
                "results": results, "targets": targets, "load_average_1min": load,
                "cpu_count": os.cpu_count()}, "\n".join(lines))
    return 0
