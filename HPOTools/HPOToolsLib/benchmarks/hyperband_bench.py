"""`bench hyperband`: best loss against budget for Hyperband, BO and Hyperband+BO (Fig. 2.10, §2.5.3).

Methods (all with the same seeds): random search and GP-BO training every configuration to the
full budget R, Hyperband (R, η; promoted configurations resume from their checkpoint, so a
promotion from r to r' costs r' - r), Hyperband+BO as in the thesis (normalised-EI sampling,
§2.5.2) and Hyperband+BO with the constant liar on the incremental Cholesky (§2.5.4).

Problems:
- ``mf-hartmann6``: the multi-fidelity Hartmann6 (fidelity = budget / R), loss = regret against
  the Hartmann6 optimum;
- ``digits``: our learning-curve table (a CNN family on scikit-learn's digits, validation loss after
  every epoch, budget = epochs); loss = validation loss minus the best final loss of the table.

"Best loss" at a budget is the best loss among the evaluations made *at the full budget R* with
the resource spent so far (what one would deploy); the resource counts every epoch trained, in
units of R (one full training). Every finished run is cached (JSON) so a long run can resume.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from HPOToolsLib.benchmarks.common import (add_cache_arguments, cache_from_args, engine_fingerprint, limit_threads,
                                           parse_seeds, pyplot, record, save_figure)

METHODS = {"random": "random search (full budget)", "bo": "GP-BO (full budget)", "hyperband": "Hyperband",
           "hyperband-bo-thesis": "Hyperband+BO (thesis, normalised EI)",
           "hyperband-bo-liar": "Hyperband+BO (constant liar)"}
PROBLEMS = ("mf-hartmann6", "digits")
MAX_BUDGET, ETA = 27, 3

ENGINE = engine_fingerprint()


class Problem:
    """space, loss(params, budget) and the reference (optimal) loss at the full budget."""

    def __init__(self, name: str):
        self.name = name
        if name == "mf-hartmann6":
            from HPOToolsLib.benchmarks import functions

            self.space = functions.MF_HARTMANN6_SPACE
            self.optimum = functions.MF_HARTMANN6_OPTIMUM
            self._loss = lambda params, budget: functions.mf_hartmann6(params, budget, MAX_BUDGET)
        elif name == "digits":
            from HPOToolsLib.benchmarks.tabular import LearningCurveTable

            table = LearningCurveTable()
            if table.epochs != MAX_BUDGET:
                raise ValueError(f"the learning-curve table has {table.epochs} epochs, expected {MAX_BUDGET}")
            self.space = table.space
            self.optimum = float(table.final.losses.min())
            self._loss = lambda params, budget: table.loss_at(table.final.index_of(params), budget)
        else:
            raise ValueError(f"unknown problem {name!r} ({', '.join(PROBLEMS)})")

    def regret(self, params, budget) -> float:
        return self._loss(params, budget) - self.optimum


def run_one(problem_name: str, method: str, seed: int, total: float) -> dict:
    """Evaluations of one run until `total` full trainings' worth of resource is spent:
    cumulative resource (units of R), the budget of the evaluation, and its regret."""
    problem = Problem(problem_name)
    spent, log = 0.0, {"spent": [], "budget": [], "regret": []}

    def note(cost: float, budget: float, regret: float) -> None:
        nonlocal spent
        spent += cost / MAX_BUDGET
        log["spent"].append(round(spent, 6))
        log["budget"].append(budget)
        log["regret"].append(float(f"{regret:.6g}"))

    began = time.perf_counter()
    if method in ("random", "bo"):
        from HPOToolsLib.samplers import make_sampler

        sampler = make_sampler(method, problem.space, seed=seed)
        while spent < total - 1e-9:
            proposed = sampler.ask()
            if not proposed:
                break
            regret = problem.regret(proposed[0], MAX_BUDGET)
            sampler.tell(proposed[0], regret)
            note(MAX_BUDGET, MAX_BUDGET, regret)
    else:
        from HPOToolsLib.hyperband import make_scheduler

        scheduler = make_scheduler(method, problem.space, seed=seed, max_budget=MAX_BUDGET, eta=ETA)
        while spent < total - 1e-9:
            job = scheduler.next_job()
            if job is None:
                break
            regret = problem.regret(job.params, job.budget)
            scheduler.report(job, regret)
            note(job.budget - (job.resume_from or 0.0), job.budget, regret)
    log["seconds"] = round(time.perf_counter() - began, 3)
    return log


def incumbent(run: dict, grid: np.ndarray) -> np.ndarray:
    """Best full-budget regret with at most grid[i] resource spent (NaN before the first one)."""
    spent = np.array(run["spent"])
    full = np.where(np.isclose(run["budget"], MAX_BUDGET), run["regret"], np.inf)
    best = np.minimum.accumulate(full) if len(full) else np.zeros(0)
    index = np.searchsorted(spent, grid + 1e-9, side="right") - 1
    out = np.where(index >= 0, best[np.maximum(index, 0)] if len(best) else np.inf, np.inf)
    return np.where(np.isfinite(out), out, np.nan)


def configure(parser) -> None:
    parser.add_argument("--problems", default=",".join(PROBLEMS), help=f"comma list of {', '.join(PROBLEMS)}")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    parser.add_argument("--seeds", default="50", help="N (seeds 0..N-1), A-B or a comma list (default 50)")
    parser.add_argument("--budget", type=float, default=40,
                        help="resource per run in full trainings (units of R=27 epochs; default 40)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--plot", type=Path, help="PNG of the median best loss against the resource spent")
    parser.add_argument("--report-only", action="store_true", help="run nothing: summarise the cached runs")
    parser.add_argument("--json", action="store_true")
    add_cache_arguments(parser, "hyperband")


def _key(problem, method, seed, total) -> str:
    return f"{problem}/{method}/R{MAX_BUDGET}/eta{ETA}/total{total:g}/seed{seed}/engine-{ENGINE}"


def summarise(results: dict, total: float) -> dict:
    checkpoints = [c for c in (5, 10, 20, 40, 80) if c <= total] + ([total] if total not in (5, 10, 20, 40, 80) else [])
    out = {}
    for problem, by_method in results.items():
        rows = {}
        for method, runs in by_method.items():
            curves = np.array([incumbent(r, np.array(checkpoints, float)) for r in runs])
            rows[method] = {
                "runs": len(runs),
                "median_seconds": float(np.median([r["seconds"] for r in runs])),
                "at": {f"{c:g}": {"median": _nan_stat(np.nanmedian, curves[:, i]),
                                  "q25": _nan_stat(lambda a: np.nanquantile(a, 0.25), curves[:, i]),
                                  "q75": _nan_stat(lambda a: np.nanquantile(a, 0.75), curves[:, i]),
                                  "mean": _nan_stat(np.nanmean, curves[:, i]),
                                  "runs_with_a_full_training": int(np.isfinite(curves[:, i]).sum())}
                       for i, c in enumerate(checkpoints)}}
        final = f"{checkpoints[-1]:g}"
        ranking = sorted(rows, key=lambda m: (rows[m]["at"][final]["median"] if rows[m]["at"][final]["median"]
                                              is not None else math.inf, rows[m]["at"][final]["mean"] or math.inf))
        out[problem] = {"methods": rows, "checkpoints": checkpoints, "ranking_at_end": ranking,
                        "wins_against_hyperband": _pairwise(by_method, total)}
    return out


def _nan_stat(fn, values):
    values = np.asarray(values, float)
    return float(fn(values)) if np.isfinite(values).any() else None


def _pairwise(by_method: dict, total: float) -> dict:
    """Per seed at the full resource: how often each method ends strictly better than Hyperband."""
    if "hyperband" not in by_method:
        return {}
    end = np.array([total], float)
    base = {i: incumbent(r, end)[0] for i, r in enumerate(by_method["hyperband"])}
    out = {}
    for method, runs in by_method.items():
        if method == "hyperband":
            continue
        pairs = [(incumbent(r, end)[0], base[i]) for i, r in enumerate(runs) if i in base]
        pairs = [(a, b) for a, b in pairs if np.isfinite(a) and np.isfinite(b)]
        out[method] = {"better": int(sum(a < b for a, b in pairs)), "worse": int(sum(a > b for a, b in pairs)),
                       "ties": int(sum(a == b for a, b in pairs))}
    return out


def plot(results: dict, total: float, path: Path) -> None:
    plt = pyplot()
    grid = np.linspace(0, total, 400)
    fig, axes = plt.subplots(1, len(results), figsize=(5.6 * len(results), 4.2), squeeze=False)
    for ax, (problem, by_method) in zip(axes[0], results.items()):
        reaches_zero = False
        for method, runs in by_method.items():
            curves = np.array([incumbent(r, grid) for r in runs])
            defined = np.isfinite(curves).mean(0) >= 0.5   # plot where most runs have a full training
            with warnings.catch_warnings():   # before the first full training every run is NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                median = np.nanmedian(curves, 0)
                q25, q75 = np.nanquantile(curves, 0.25, 0), np.nanquantile(curves, 0.75, 0)
            reaches_zero = reaches_zero or bool(np.nanmin(curves) <= 0)
            line, = ax.plot(grid[defined], median[defined], label=METHODS[method])
            ax.fill_between(grid[defined], q25[defined], q75[defined], color=line.get_color(), alpha=0.12)
        # The table's best model has regret exactly 0: a symmetric log scale keeps it visible.
        ax.set_yscale("symlog", linthresh=1e-3) if reaches_zero else ax.set_yscale("log")
        ax.set_xlabel(f"resource spent (full trainings of R = {MAX_BUDGET})")
        ax.set_title(f"{problem}: median best regret, {len(runs)} seeds (band: quartiles)", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("best full-budget loss - optimum")
    axes[0][0].legend(fontsize=8)
    save_figure(fig, path)


def run(args) -> int:
    limit_threads()
    problems = [p.strip() for p in args.problems.split(",")]
    methods = [m.strip() for m in args.methods.split(",")]
    bad = [x for x in problems if x not in PROBLEMS] + [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown problem/method {', '.join(bad)} (problems: {', '.join(PROBLEMS)}; "
                         f"methods: {', '.join(METHODS)})")
    if not args.budget >= 1 or args.workers < 1:
        raise ValueError("--budget must be >= 1 and --workers >= 1")
    for problem in problems:
        Problem(problem)   # fails early (e.g. a missing table) before any work
    seeds = parse_seeds(args.seeds)
    cache = cache_from_args(args)
    tasks = [] if args.report_only else [(p, m, s) for s in seeds for p in problems for m in methods
                                         if _key(p, m, s, args.budget) not in cache]
    began = time.perf_counter()
    if tasks:
        print(f"hyperband: {len(tasks)} runs to do", file=sys.stderr)
        with ProcessPoolExecutor(max_workers=args.workers, initializer=limit_threads) as pool:
            futures = {pool.submit(run_one, p, m, s, args.budget): (p, m, s) for p, m, s in tasks}
            for done, future in enumerate(as_completed(futures), 1):
                p, m, s = futures[future]
                cache.put(_key(p, m, s, args.budget), future.result())
                if done % 20 == 0:
                    print(f"  {done}/{len(tasks)} runs, {time.perf_counter() - began:.0f} s", file=sys.stderr)
        cache.save()
    results = {p: {m: [cache[k] for s in seeds if (k := _key(p, m, s, args.budget)) in cache] for m in methods}
               for p in problems}
    missing = [f"{p}/{m}" for p in problems for m in methods if not results[p][m]]
    if missing:
        raise ValueError(f"no finished run for {', '.join(missing)}")
    out = {"problems": summarise(results, args.budget)}
    out.update(record(args, {"benchmark": "hyperband", "R": MAX_BUDGET, "eta": ETA, "seeds": seeds,
                             "wall_seconds_this_call": round(time.perf_counter() - began, 1)}))
    if args.plot:
        plot(results, args.budget, args.plot)
    print(json.dumps(out, indent=1) if args.json else format_table(out["problems"]))
    return 0


def format_table(problems: dict) -> str:
    lines = []
    for problem, res in problems.items():
        cps = [f"{c:g}" for c in res["checkpoints"]]
        lines += [f"\n{problem}: median best regret (quartiles) after N full trainings' worth of resource",
                  "| method | " + " | ".join(f"N = {c}" for c in cps) + " | s/run |",
                  "|---" * (len(cps) + 2) + "|"]
        for method, row in res["methods"].items():
            cells = []
            for c in cps:
                cell = row["at"][c]
                cells.append("—" if cell["median"] is None else
                             f"{cell['median']:.3g} ({cell['q25']:.2g}–{cell['q75']:.2g})")
            lines.append(f"| {METHODS[method]} ({row['runs']} seeds) | " + " | ".join(cells)
                         + f" | {row['median_seconds']:.1f} |")
        lines.append(f"ranking at the end (median): {', '.join(res['ranking_at_end'])}")
        for method, w in res["wins_against_hyperband"].items():
            lines.append(f"{method} vs hyperband per seed at the end: better {w['better']}, worse {w['worse']}, "
                         f"ties {w['ties']}")
    return "\n".join(lines)
