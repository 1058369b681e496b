"""`python -m KidneyUSLib evaluate --model A [--model B ...]`: models on held-out native phantoms.

Every phantom is generated on its native grid (every third one oblique, as in training's native
share) and segmented through the whole `segment` pipeline: validation, canonical 4 mm cube, the
network, back to the native grid, threshold. Dice is measured on the native grid against the
phantom's own label, for what `segment` writes (the largest component); the connected
components are counted on the output *before* that step, so a method that promises one
component (the template segmenter) is checked, not repaired. Template models also report the
folded-voxel fraction of their transform. All models see the same phantoms, so their Dice can be
compared case by case; the table gives each model's mean difference to the first one.

The default seeds are the held-out test seeds of `train` (training.TEST_SEED_OFFSET on), which
no training run ever uses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from SegTuneCore.errors import SegTuneError
from SegTuneCore.process import add_progress_argument

POPULATIONS = (("adult", "adults"), ("child", "children"))


def configure(parser) -> None:
    parser.add_argument("--model", action="append", required=True,
                        help="model version, bundled name or folder (repeat to compare; the first is the reference)")
    parser.add_argument("--adults", type=int, default=20, help="held-out adult phantoms")
    parser.add_argument("--children", type=int, default=20, help="held-out child phantoms")
    parser.add_argument("--first-seed", type=int, default=None,
                        help="seed of the first phantom of each population (default: train's held-out test seeds)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--workers", type=int, default=1, help="processes generating the phantoms (default 1)")
    parser.add_argument("--output", help="write results.json (every case) here")
    parser.add_argument("--markdown", help="write the summary table (markdown) here")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    add_progress_argument(parser)


def _native_phantom(task: tuple[str, int]):
    from .phantom import generate_phantom

    population, seed = task
    return generate_phantom(population, seed, oblique=seed % 3 == 0)


def phantoms(plan: list[tuple[str, int]], workers: int):
    """(volume, label) for each (population, seed), in order; generated ahead in `workers` processes."""
    if workers <= 1:
        yield from map(_native_phantom, plan)
        return
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(_native_phantom, plan)


def summarise(cases: list[dict], models: list[str]) -> dict:
    """Per model and population: Dice mean/std/min, mean difference to the first model (paired),
    share of single-component outputs, largest folded fraction, network seconds."""
    summary = {}
    for name in models:
        rows = {}
        for population, plural in POPULATIONS:
            mine = [c["models"][name] for c in cases if c["population"] == population]
            if not mine:
                continue
            dice = np.array([m["dice"] for m in mine])
            reference = np.array([c["models"][models[0]]["dice"] for c in cases if c["population"] == population])
            folded = [m["folded_fraction"] for m in mine if m["folded_fraction"] is not None]
            rows[plural] = {
                "n": len(mine), "dice_mean": float(dice.mean()), "dice_std": float(dice.std()),
                "dice_min": float(dice.min()), "dice_minus_first": float((dice - reference).mean()),
                "single_component": float(np.mean([m["components"] == 1 for m in mine])),
                "folded_fraction_max": max(folded) if folded else None,
                "network_s_mean": float(np.mean([m["network_s"] for m in mine])),
            }
        summary[name] = rows
    return summary


def markdown(summary: dict, architectures: dict) -> str:
    lines = ["| model | architecture | population | n | Dice mean ± std | min | Δ vs first | one component | max folded | network s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, rows in summary.items():
        for plural, r in rows.items():
            folded = "–" if r["folded_fraction_max"] is None else f"{100 * r['folded_fraction_max']:.3f} %"
            lines.append(f"| {name} | {architectures[name]} | {plural} | {r['n']} | {r['dice_mean']:.3f} ± {r['dice_std']:.3f} "
                         f"| {r['dice_min']:.3f} | {r['dice_minus_first']:+.3f} | {100 * r['single_component']:.0f} % "
                         f"| {folded} | {r['network_s_mean']:.2f} |")
    return "\n".join(lines)


def run(args) -> int:
    from scipy import ndimage

    from SegTuneCore.device import describe
    from SegTuneCore.geometry import check_outputs
    from SegTuneCore.process import ProgressReporter, atomic_write

    from .preprocessing import keep_largest_component
    from .segmentation import dice, load_segmenter, resolve_model, segment_volume
    from .training import TEST_SEED_OFFSET

    if min(args.adults, args.children) < 0 or args.adults + args.children < 1:
        raise SegTuneError("--adults and --children must be >= 0, and at least one phantom is needed")
    if args.workers < 1:
        raise SegTuneError("--workers must be >= 1")
    if args.first_seed is not None and args.first_seed < 0:
        raise SegTuneError("--first-seed must be >= 0")
    if len(set(args.model)) != len(args.model):
        raise SegTuneError("--model: each model once")
    check_outputs([path for path in (args.output, args.markdown) if path])
    entries = {name: resolve_model(name) for name in args.model}  # every model checked before any work
    segmenters = {name: load_segmenter(entry, args.device) for name, entry in entries.items()}
    reporter = ProgressReporter(args.progress)
    first_seed = TEST_SEED_OFFSET if args.first_seed is None else args.first_seed
    plan = [(population, first_seed + i) for population, plural in POPULATIONS for i in range(getattr(args, plural))]
    cases = []
    started = time.perf_counter()
    for index, ((population, seed), (volume, label)) in enumerate(zip(plan, phantoms(plan, args.workers))):
        reporter.progress(index / len(plan), f"{population} phantom {seed}")
        case = {"population": population, "seed": seed, "oblique": seed % 3 == 0,
                "size_ijk": list(volume.shape_ijk), "models": {}}
        for name, segmenter in segmenters.items():
            result = segment_volume(volume, segmenter, largest_component=False)
            case["models"][name] = {
                "dice": dice(keep_largest_component(result.labels), label.array),
                "components": int(ndimage.label(result.labels)[1]),
                "folded_fraction": result.network.get("folded_fraction"),
                "network_s": result.timings_s["network"],
            }
        cases.append(case)
    summary = summarise(cases, args.model)
    architectures = {name: entry.meta["architecture"]["name"] for name, entry in entries.items()}
    table = markdown(summary, architectures)
    device = next(iter(segmenters.values())).device
    results = {
        "command": "python -m KidneyUSLib evaluate " + " ".join(f"--model {m}" for m in args.model)
                   + f" --adults {args.adults} --children {args.children} --first-seed {first_seed}",
        "models": {name: {"path": str(e.path), "version": e.version, "architecture": architectures[name],
                          "sha256": e.meta.get("sha256")} for name, e in entries.items()},
        "seeds": {"first": first_seed, "oblique": "seed % 3 == 0"}, "device": describe(device),
        "seconds": round(time.perf_counter() - started, 1), "summary": summary, "table": table, "cases": cases,
    }
    for path, text in ((args.output, json.dumps(results, indent=1)), (args.markdown, table + "\n")):
        if path:
            with atomic_write(Path(path)) as tmp:
                tmp.write_text(text)
    reporter.progress(1.0, "done")
    if args.progress == "json":
        reporter.result({k: results[k] for k in ("summary", "table", "seconds")})
    elif args.json:
        print(json.dumps({k: results[k] for k in ("command", "summary", "table", "device", "seconds")}))
    else:
        print(table)
    return 0
