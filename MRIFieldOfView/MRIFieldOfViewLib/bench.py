"""`python -m MRIFieldOfViewLib bench`: slice-classifier throughput and whole-volume localize time.

Every variant is timed in the same run as the fp32 eager baseline (`torch.no_grad`, contiguous
NCHW) on the same images, and reported as a ratio to it:
  inference_mode, channels_last, bf16 autocast (only fast with native bf16), torch.compile.
A variant whose outputs differ from the baseline's by more than its tolerance is flagged.
Then the whole `localize` (preprocessing + classification + decision) of one phantom volume is
timed with the baseline precision and with bf16 when the device supports it.
"""

from __future__ import annotations

import json
import time

import numpy as np

from SegTuneCore.process import add_progress_argument


def configure(parser) -> None:
    parser.add_argument("name", nargs="?", default="localize", choices=("localize",), help="benchmark (default localize)")
    parser.add_argument("--model", help="model version, bundled name or folder (default: active, else bundled)")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")
    parser.add_argument("--slices", type=int, default=128, help="images per throughput measurement (default 128)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions, best kept (default 3)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--seed", type=int, default=1_000_123, help="phantom seed of the whole-volume run")
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


def throughput(model, images, batch_size, device, repeat, *, compile_model=False, bf16_ok=False) -> list[dict]:
    """Slices per second of each variant, with its speed-up and max |p - p_baseline|."""
    import copy

    import torch

    variants = [("fp32 eager (baseline)", model, {}, 0.0),
                ("fp32 inference_mode", model, {"inference_mode": True}, 1e-6)]
    channels_last_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    variants.append(("fp32 channels_last", channels_last_model, {"channels_last": True, "inference_mode": True}, 1e-4))
    variants.append(("bf16 autocast" + ("" if bf16_ok else " (emulated: no native bf16)"), model,
                     {"bf16": True, "inference_mode": True}, 5e-2))
    if compile_model:
        variants.append(("fp32 torch.compile", torch.compile(model), {"inference_mode": True}, 1e-4))
    baseline_output = _forward(model, images, batch_size, device)
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


def run(args) -> int:
    import torch

    from SegTuneCore.device import capabilities, describe
    from SegTuneCore.process import ProgressReporter

    from .localize import load_classifier, localize
    from .phantom import make_phantom
    from .preprocessing import axial_slices

    reporter = ProgressReporter(args.progress)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_classifier(args.model, args.device)
    classifier = loaded.classifier
    device = classifier.device
    bf16_ok = capabilities(device)["bf16"]

    reporter.progress(0.05, "phantom volume")
    phantom = make_phantom(args.seed, max_matrix=256)
    volume = phantom.volume()
    stack = axial_slices(volume)
    images = stack.images[np.linspace(0, len(stack) - 1, min(args.slices, len(stack))).astype(int)]
    reporter.progress(0.2, "throughput")
    rows = throughput(classifier.model, images, args.batch_size, device, args.repeat,
                      compile_model=args.compile, bf16_ok=bf16_ok)

    reporter.progress(0.7, "whole-volume localize")
    end_to_end = []
    for bf16 in ([False, True] if bf16_ok else [False]):
        seconds = _best_time(lambda: localize(volume, loaded, bf16=bf16), max(1, args.repeat - 1))
        end_to_end.append({"precision": "bf16" if bf16 else "fp32", "seconds": round(seconds, 3)})
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
            print(f"  localize whole volume {volume.array.shape} ({len(stack)} slices), {entry['precision']}: "
                  f"{entry['seconds']:.2f} s (preprocessing {preprocessing_s:.2f} s)")
    return 0
