"""`python -m MRIFieldOfViewLib bench localize|accuracy`: speed, and accuracy after the decision.

`localize`: slice-classifier throughput and whole-volume localize time.

Every variant is timed in the same run as the fp32 eager baseline (`torch.no_grad`, contiguous
NCHW weights) on the same images, and reported as a ratio to it: inference_mode, channels_last
weights (what `localize` uses), channels_last weights and input, bf16 autocast (only fast with
native bf16), torch.compile.
A variant whose outputs differ from the baseline's by more than its tolerance is flagged.
Then the whole `localize` (preprocessing + classification + decision) of one phantom volume is
timed with the baseline model, with localize's default (channels_last) and with bf16 when the
device supports it.

`accuracy`: held-out phantom studies (seeds >= dataset.HELD_OUT_SEED_START, the training
distribution of regions, spine studies and orientations): slices correct after the decision
for several smoothing widths, against the per-slice argmax of the raw network output (the
baseline), and the region-boundary errors in slices.
"""

from __future__ import annotations

import copy
import json
import time

import numpy as np

from SegTuneCore.errors import SegTuneError
from SegTuneCore.process import add_progress_argument

from .phantom_cli import check_max_matrix


def configure(parser) -> None:
    parser.add_argument("name", nargs="?", default="localize", choices=("localize", "accuracy"), help="benchmark (default localize)")
    parser.add_argument("--model", help="model version, bundled name or folder (default: active, else bundled)")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")
    parser.add_argument("--slices", type=int, default=128, help="images per throughput measurement (default 128)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions, best kept (default 3)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--seed", type=int, default=1_000_123, help="phantom seed of the whole-volume run (accuracy: first seed)")
    parser.add_argument("--volumes", type=int, default=40, help="accuracy: held-out phantom studies (default 40)")
    parser.add_argument("--max-matrix", type=int, default=256, help="accuracy: largest phantom matrix (default 256, as training)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    add_progress_argument(parser)


def _best_time(function, repeat: int) -> float:
    function()  # warm-up (allocations, oneDNN primitive cache)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def _forward(model, images, batch_size, device, *, channels_last=False, bf16=False, inference_mode=False):
    import torch

    context = torch.inference_mode if inference_mode else torch.no_grad
    outputs = []
    with context(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start:start + batch_size])[:, None].to(device)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            outputs.append(torch.softmax(model(batch).float(), dim=1).cpu())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return torch.cat(outputs).numpy()


def throughput(baseline, model, images, batch_size, device, repeat, *, compile_model=False, bf16_ok=False) -> list[dict]:
    """Slices per second of each variant, with its speed-up and max |p - p_baseline|.

    baseline: the network with contiguous (NCHW) weights; model: the same with channels_last ones.
    """
    import torch

    variants = [("fp32 eager (baseline)", baseline, {}, 0.0),
                ("fp32 inference_mode", baseline, {"inference_mode": True}, 1e-6),
                ("fp32 channels_last weights (localize)", model, {"inference_mode": True}, 1e-4),
                ("fp32 channels_last weights and input", model, {"channels_last": True, "inference_mode": True}, 1e-4),
                ("bf16 autocast + channels_last" + ("" if bf16_ok else " (emulated: no native bf16)"), model,
                 {"bf16": True, "inference_mode": True}, 5e-2)]
    if compile_model:
        variants.append(("fp32 torch.compile + channels_last", torch.compile(model), {"inference_mode": True}, 1e-4))
    baseline_output = _forward(baseline, images, batch_size, device)
    rows = []
    baseline_rate = None
    for name, variant_model, options, tolerance in variants:
        compile_start = time.perf_counter()
        output = _forward(variant_model, images, batch_size, device, **options)
        first_call = time.perf_counter() - compile_start
        seconds = _best_time(lambda: _forward(variant_model, images, batch_size, device, **options), repeat)
        rate = len(images) / seconds
        baseline_rate = baseline_rate or rate
        difference = float(np.abs(output - baseline_output).max())
        rows.append({"variant": name, "slices_per_s": round(rate, 1), "speedup": round(rate / baseline_rate, 3),
                     "first_call_s": round(first_call, 3), "max_abs_prob_diff": difference,
                     "within_tolerance": difference <= tolerance})
    return rows


SMOOTHING_GRID_MM = (0.0, 5.0, 10.0, 20.0, 40.0)


def accuracy(loaded, seeds, max_matrix: int, progress) -> dict:
    """Slice accuracy and boundary errors after the decision, per smoothing width, vs raw argmax."""
    from .dataset import HELD_OUT_SEED_START, study_options
    from .decision import boundary_errors, decide
    from .localize import localize
    from .phantom import make_phantom
    from .regions import REGIONS

    if min(seeds) < HELD_OUT_SEED_START:
        raise ValueError(f"accuracy seeds must be >= {HELD_OUT_SEED_START} (never used in training)")
    per_sigma = {sigma: {"correct": 0, "errors": [], "right_region_list": 0} for sigma in SMOOTHING_GRID_MM}
    raw_correct = total = 0
    volumes = []
    for index, seed in enumerate(seeds):
        options = study_options(seed)
        phantom = make_phantom(seed, max_matrix=max_matrix, **options)
        start = time.perf_counter()
        result = localize(phantom.volume(), loaded, smoothing_mm=SMOOTHING_GRID_MM[0])
        seconds = time.perf_counter() - start
        truth = phantom.slice_labels
        order = np.argsort(result.positions_mm, kind="stable")
        raw = [None if result.empty[i] else REGIONS[int(np.argmax(result.probabilities[i]))] for i in range(len(truth))]
        raw_correct += sum(a == b for a, b in zip(raw, truth))
        total += len(truth)
        true_regions = [name for i, name in enumerate(truth[j] for j in order) if name is not None]
        true_list = [n for i, n in enumerate(true_regions) if i == 0 or true_regions[i - 1] != n]
        record = {"seed": seed, "slices": len(truth), "study": "spine" if options["spine"] else "-".join(options["regions"]),
                  "localize_s": round(seconds, 2), "raw_accuracy": round(float(np.mean([a == b for a, b in zip(raw, truth)])), 4)}
        for sigma, stats in per_sigma.items():
            decision = decide(result.probabilities, result.positions_mm, empty=result.empty, sigma_mm=sigma)
            labels = decision.slice_labels
            correct = sum(a == b for a, b in zip(labels, truth))
            stats["correct"] += correct
            stats["errors"] += boundary_errors([labels[i] for i in order], [truth[i] for i in order])
            stats["right_region_list"] += [r.name for r in decision.regions] == true_list
            record[f"accuracy_{sigma:g}mm"] = round(correct / len(truth), 4)
        volumes.append(record)
        progress((index + 1) / len(seeds), f"volume {index + 1}/{len(seeds)}")
    summary = []
    for sigma, stats in per_sigma.items():
        errors = np.array(stats["errors"])
        summary.append({
            "smoothing_mm": sigma, "slice_accuracy": round(stats["correct"] / total, 4),
            "boundaries": len(errors), "median_boundary_error_slices": float(np.median(errors)) if len(errors) else None,
            "boundaries_within_1_slice": round(float(np.mean(errors <= 1)), 4) if len(errors) else None,
            "missing_boundaries": int(np.isinf(errors).sum()),
            "volumes_with_right_regions": stats["right_region_list"],
        })
    return {"volumes": len(seeds), "slices": total, "raw_argmax_accuracy": round(raw_correct / total, 4),
            "by_smoothing": summary, "per_volume": volumes}


def run(args) -> int:
    import torch

    from SegTuneCore.device import capabilities, describe
    from SegTuneCore.process import ProgressReporter

    from .classifier import SliceClassifier
    from .localize import LoadedModel, load_classifier, localize
    from .phantom import make_phantom
    from .preprocessing import axial_slices

    for name in ("volumes", "slices", "batch_size", "repeat"):
        if getattr(args, name) < 1:
            raise SegTuneError(f"--{name.replace('_', '-')} must be >= 1")
    check_max_matrix(args.max_matrix)
    reporter = ProgressReporter(args.progress)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_classifier(args.model, args.device)
    classifier = loaded.classifier
    if args.name == "accuracy":
        seeds = range(args.seed, args.seed + args.volumes)
        result = dict(accuracy(loaded, seeds, args.max_matrix, reporter.progress),
                      benchmark="accuracy", model={k: loaded.summary.get(k) for k in ("version", "path", "bundled", "sha256")},
                      seeds=[seeds.start, seeds.stop], max_matrix=args.max_matrix, device=describe(classifier.device))
        reporter.result({k: v for k, v in result.items() if k != "per_volume"})
        if args.json and args.progress != "json":
            print(json.dumps(result))
        elif not args.json:
            print(f"{result['volumes']} held-out phantom studies, {result['slices']} slices; model {result['model']['version']}")
            print(f"  raw per-slice argmax: {result['raw_argmax_accuracy']:.2%} of slices correct")
            for row in result["by_smoothing"]:
                print(f"  decision, smoothing {row['smoothing_mm']:>4g} mm: {row['slice_accuracy']:.2%} correct, median boundary "
                      f"error {row['median_boundary_error_slices']} slices, {row['boundaries_within_1_slice']:.0%} within 1 slice, "
                      f"{row['missing_boundaries']} missing, {row['volumes_with_right_regions']}/{result['volumes']} volumes with the right regions")
        return 0
    device = classifier.device
    bf16_ok = capabilities(device)["bf16"]

    reporter.progress(0.05, "phantom volume")
    phantom = make_phantom(args.seed, max_matrix=256)
    volume = phantom.volume()
    stack = axial_slices(volume)
    images = stack.images[np.linspace(0, len(stack) - 1, min(args.slices, len(stack))).astype(int)]
    reporter.progress(0.2, "throughput")
    baseline = copy.deepcopy(classifier.model).to(memory_format=torch.contiguous_format)
    rows = throughput(baseline, classifier.model, images, args.batch_size, device, args.repeat,
                      compile_model=args.compile, bf16_ok=bf16_ok)

    reporter.progress(0.7, "whole-volume localize")
    baseline_loaded = LoadedModel(SliceClassifier(baseline, classifier.meta, device), loaded.summary)
    runs = [("fp32 eager (baseline)", baseline_loaded, False), ("fp32 channels_last (localize default)", loaded, False)]
    if bf16_ok:
        runs.append(("bf16 autocast + channels_last", loaded, True))
    end_to_end = []
    for name, model, bf16 in runs:  # the throughput runs warmed every model up
        times = []
        for _ in range(max(1, args.repeat // 2)):
            start = time.perf_counter()
            localize(volume, model, bf16=bf16)
            times.append(time.perf_counter() - start)
        end_to_end.append({"variant": name, "seconds": round(min(times), 3)})
    start = time.perf_counter()
    axial_slices(volume)
    preprocessing_s = time.perf_counter() - start

    result = {
        "benchmark": "localize",
        "model": {k: loaded.summary.get(k) for k in ("version", "path", "bundled")},
        "parameters": int(sum(p.numel() for p in classifier.model.parameters())),
        "images": len(images), "batch_size": args.batch_size, "repeat": args.repeat,
        "throughput": rows,
        "volume": {"seed": args.seed, "shape_kji": list(volume.array.shape), "slices": len(stack),
                   "preprocessing_s": round(preprocessing_s, 3), "localize": end_to_end},
        "device": describe(device),
    }
    reporter.progress(1.0, "done")
    reporter.result(result)
    if args.json and args.progress != "json":
        print(json.dumps(result))
    elif not args.json:
        print(f"device: {result['device']['device']} ({result['device']['device_name']}), "
              f"{result['device'].get('cpu_threads')} threads; model {result['model']['version']} "
              f"({result['parameters']:,} weights); {len(images)} slices, batch {args.batch_size}")
        for row in rows:
            flag = "" if row["within_tolerance"] else "  OUTPUT DIFFERS"
            print(f"  {row['variant']:<45} {row['slices_per_s']:>8.1f} slices/s  x{row['speedup']:.2f}"
                  f"  max|dp| {row['max_abs_prob_diff']:.1e}{flag}")
        for entry in end_to_end:
            print(f"  localize whole volume {volume.array.shape} ({len(stack)} slices), {entry['variant']}: "
                  f"{entry['seconds']:.2f} s (preprocessing {preprocessing_s:.2f} s)")
    return 0
