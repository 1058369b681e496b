"""`bench synthetic`: median regret after N evaluations on Branin, Hartmann6 and the 24 BBOB functions.

Methods, all with the same seeds: random search and GP-BO from this library, Optuna's TPE and
GPSampler with their default settings. BBOB functions (``cocoex``) are used at d=5 on [-5, 5]^5;
seed s uses BBOB instance 1 + s % 15, so the seeds also average over instances. The regret of
a run is (best value found) - (the function's optimum). Every finished run is cached (JSON), so an
interrupted benchmark resumes, and `--functions`/`--methods`/`--seeds` can fill the cache in pieces.

Comparisons use the median regret over seeds per function: "BO beats TPE" when its median is
strictly lower, "BO no worse than GPSampler" when its median is lower or equal (within 1e-12 or
both below 1e-8, the BBOB target precision).
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from HPOToolsLib.benchmarks.common import (add_cache_arguments, cache_from_args, engine_fingerprint, limit_threads,
                                           parse_seeds, pyplot, record, save_figure)

METHODS = {"random": "random (ours)", "bo": "GP-BO (ours)", "tpe": "Optuna TPE", "gp": "Optuna GPSampler"}
BBOB = [f"f{i:02d}" for i in range(1, 25)]
NAMED = ["branin", "hartmann6"]
TARGET_PRECISION = 1e-8
ENGINE = engine_fingerprint()


@dataclass
class Problem:
    name: str
    names: list[str]
    lower: np.ndarray
    upper: np.ndarray
    evaluate: Callable[[np.ndarray], float]
    optimum: float


def make_problem(name: str, seed: int, dimension: int) -> Problem:
    if name in BBOB:
        from cocoex.bare_problem import BareProblem

        fn = BareProblem("bbob", int(name[1:]), dimension, 1 + seed % 15)
        return Problem(name, [f"x{i + 1}" for i in range(dimension)], np.full(dimension, -5.0),
                       np.full(dimension, 5.0), lambda x: float(fn(x)), float(fn.best_value()))
    from HPOToolsLib.benchmarks import functions

    space, fn = getattr(functions, f"{name.upper()}_SPACE"), getattr(functions, name)
    params = list(space.params.values())
    return Problem(name, space.names, np.array([p.low for p in params]), np.array([p.high for p in params]),
                   lambda x: fn(dict(zip(space.names, x))), float(getattr(functions, f"{name.upper()}_OPTIMUM")))


def run_one(name: str, method: str, seed: int, n_evals: int, dimension: int) -> dict:
    """Best-so-far regret after each evaluation of one run, and its wall time."""
    problem = make_problem(name, seed, dimension)
    values: list[float] = []

    def evaluate(x) -> float:
        value = problem.evaluate(np.asarray(x, dtype=float))
        values.append(value)
        return value

    names = problem.names
    start = time.perf_counter()
    if method in ("tpe", "gp"):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=seed) if method == "tpe" else optuna.samplers.GPSampler(seed=seed)
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda trial: evaluate([trial.suggest_float(n, lo, hi) for n, lo, hi in
                                               zip(names, problem.lower, problem.upper)]), n_trials=n_evals)
    else:
        import HPOToolsLib
        from HPOToolsLib.space import Float

        space = {n: Float(lo, hi) for n, lo, hi in zip(names, problem.lower, problem.upper)}
        HPOToolsLib.minimize(lambda params: evaluate([params[n] for n in names]), space, method=method,
                             n_trials=n_evals, seed=seed)
    seconds = time.perf_counter() - start
    regret = np.maximum(np.minimum.accumulate(np.array(values[:n_evals])) - problem.optimum, 0.0)
    return {"regret": [float(f"{r:.6g}") for r in regret], "seconds": round(seconds, 3)}


def _key(name, method, seed, n_evals, dimension) -> str:
    # Our methods' results depend on the engine version; Optuna's do not.
    engine = f"/engine-{ENGINE}" if method in ("random", "bo") else ""
    return f"{name}/d{dimension}/{method}/n{n_evals}/seed{seed}{engine}"


def configure(parser) -> None:
    parser.add_argument("--functions", default="all",
                        help="comma list of branin, hartmann6, f01..f24, or 'bbob', 'named', 'all' (default)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    parser.add_argument("--seeds", default="10", help="N (seeds 0..N-1), A-B or a comma list (default 10)")
    parser.add_argument("--n-evals", type=int, default=100, help="evaluations per run (default 100)")
    parser.add_argument("--dimension", type=int, default=5, help="BBOB dimension (default 5)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--plot", type=Path, help="PNG of median regret against evaluations (Branin, Hartmann6)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: summarise the cached runs (each cell says how many seeds it has)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_cache_arguments(parser, "synthetic")


def _functions(text: str) -> list[str]:
    groups = {"all": NAMED + BBOB, "bbob": BBOB, "named": NAMED}
    names = [n for part in text.split(",") for n in groups.get(part.strip(), [part.strip()])]
    unknown = [n for n in names if n not in NAMED + BBOB]
    if unknown:
        raise ValueError(f"--functions: unknown {', '.join(unknown)} (branin, hartmann6, f01..f24, bbob, named, all)")
    return list(dict.fromkeys(names))


def summarise(results: dict, functions: list[str], methods: list[str], n_evals: int) -> dict:
    per_function = {}
    for name in functions:
        row = {}
        for method in methods:
            finals = np.array([r["regret"][-1] for r in results[name][method]])
            if len(finals) == 0:   # --report-only on a partly filled cache
                row[method] = {"median": None, "runs": 0}
                continue
            row[method] = {"median": float(np.median(finals)), "q25": float(np.quantile(finals, 0.25)),
                           "q75": float(np.quantile(finals, 0.75)), "runs": len(finals),
                           "median_seconds": float(np.median([r["seconds"] for r in results[name][method]]))}
        per_function[name] = row
    summary = {}
    bbob = [f for f in functions if f in BBOB]
    if "bo" in methods and bbob:
        def median(f, m):
            return per_function[f][m]["median"]

        def no_worse(a, b):
            return a <= b + 1e-12 or (a < TARGET_PRECISION and b < TARGET_PRECISION)

        def compared(other):
            return [f for f in bbob if median(f, "bo") is not None and median(f, other) is not None]

        if "tpe" in methods:
            wins = [f for f in compared("tpe") if median(f, "bo") < median(f, "tpe")
                    and not no_worse(median(f, "tpe"), median(f, "bo"))]
            summary["bo_beats_tpe"] = {"count": len(wins), "of": len(compared("tpe")), "functions": wins, "target": 18}
        if "gp" in methods:
            ok = [f for f in compared("gp") if no_worse(median(f, "bo"), median(f, "gp"))]
            summary["bo_no_worse_than_gp"] = {"count": len(ok), "of": len(compared("gp")), "functions": ok,
                                              "target": 12}
    if "hartmann6" in functions:
        summary["hartmann6_median_regret"] = {m: per_function["hartmann6"][m]["median"] for m in methods}
    return {"per_function": per_function, "summary": summary}


def plot(results: dict, functions: list[str], methods: list[str], path: Path) -> None:
    plt = pyplot()
    shown = [f for f in functions if f in NAMED] or functions[:2]
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 3.8), squeeze=False)
    for ax, name in zip(axes[0], shown):
        for method in methods:
            if not results[name][method]:
                continue
            traces = np.array([r["regret"] for r in results[name][method]])
            evals = np.arange(1, traces.shape[1] + 1)
            ax.plot(evals, np.maximum(np.median(traces, 0), 1e-10), label=METHODS[method])
            ax.fill_between(evals, np.maximum(np.quantile(traces, 0.25, 0), 1e-10),
                            np.maximum(np.quantile(traces, 0.75, 0), 1e-10), alpha=0.15)
        ax.set_yscale("log")
        ax.set_title(f"{name}: median regret (band: quartiles)")
        ax.set_xlabel("evaluations")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("best value - optimum")
    axes[0][0].legend()
    save_figure(fig, path)


def run(args) -> int:
    limit_threads()
    functions = _functions(args.functions)
    methods = [m.strip() for m in args.methods.split(",")]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"--methods: unknown {', '.join(unknown)} ({', '.join(METHODS)})")
    if args.n_evals < 2 or args.workers < 1:
        raise ValueError("--n-evals must be >= 2 and --workers >= 1")
    seeds = parse_seeds(args.seeds)
    cache = cache_from_args(args)
    # Seed-major order: an interrupted run leaves every function with about as many seeds.
    tasks = [(f, m, s) for s in seeds for f in functions for m in methods
             if _key(f, m, s, args.n_evals, args.dimension) not in cache]
    if args.report_only:
        tasks = []
    started = time.perf_counter()
    if tasks:
        print(f"synthetic: {len(tasks)} runs to do ({len(functions) * len(methods) * len(seeds) - len(tasks)} cached)",
              file=sys.stderr)
        with ProcessPoolExecutor(max_workers=args.workers, initializer=limit_threads) as pool:
            futures = {pool.submit(run_one, f, m, s, args.n_evals, args.dimension): (f, m, s) for f, m, s in tasks}
            for done, future in enumerate(as_completed(futures), 1):
                f, m, s = futures[future]
                cache.put(_key(f, m, s, args.n_evals, args.dimension), future.result())
                if done % 20 == 0:
                    print(f"  {done}/{len(tasks)} runs, {time.perf_counter() - started:.0f} s", file=sys.stderr)
        cache.save()
    results = {f: {m: [cache[k] for s in seeds if (k := _key(f, m, s, args.n_evals, args.dimension)) in cache]
                   for m in methods} for f in functions}
    missing = [f"{f}/{m}" for f in functions for m in methods if not results[f][m]]
    if missing and not args.report_only:
        raise ValueError(f"no finished run for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    out = summarise(results, functions, methods, args.n_evals)
    out.update(record(args, {"benchmark": "synthetic", "seeds": seeds, "n_evals": args.n_evals,
                             "bbob_instances": sorted({1 + s % 15 for s in seeds}),
                             "wall_seconds_this_call": round(time.perf_counter() - started, 1)}))
    if args.plot:
        plot(results, functions, methods, args.plot)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(format_table(out, functions, methods))
    return 0


def format_table(out: dict, functions: list[str], methods: list[str]) -> str:
    lines = ["| function | " + " | ".join(METHODS[m] for m in methods) + " |",
             "|---" * (len(methods) + 1) + "|"]
    for name in functions:
        row = out["per_function"][name]
        best = min(row[m]["median"] for m in methods if row[m]["median"] is not None)
        seeds = {row[m]["runs"] for m in methods}
        cells = ["—" if row[m]["median"] is None else
                 (f"**{row[m]['median']:.3g}**" if row[m]["median"] <= best else f"{row[m]['median']:.3g}")
                 + (f" ({row[m]['runs']})" if len(seeds) > 1 and row[m]["runs"] else "") for m in methods]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for key, value in out["summary"].items():
        if isinstance(value, dict) and "count" in value:
            lines.append(f"\n{key}: {value['count']}/{value['of']} (target >= {value['target']})")
        else:
            lines.append(f"\n{key}: " + ", ".join(f"{METHODS[m]} {v:.3g}" for m, v in value.items() if v is not None))
    return "\n".join(lines)
