"""`python -m KidneyUSLib bench [forward|segment|all]`: 80^3 forward latency and end-to-end segment time.

forward: the U-Net on one 80^3 cube, fp32 eager (the baseline) against bf16 autocast +
channels_last_3d and against the inference form (`unet_inference`: batch norm folded, no
upsampled tensor) in the same run, a plain U-Net's inference form also with its weights stored in
bf16 (no autocast casts); on CUDA also as captured CUDA graphs and, with --compile, the last of
those forms through torch.compile. Each row gives the median latency, the speed-up over
the baseline, the convolution FLOPs that ran, the achieved TFLOP/s and the largest probability
difference from the baseline; with a known peak (H100/H200 bf16 dense: 989 TFLOP/s, or
--peak-tflops) also the compute floor of the network as trained.
segment: a 200^3 native adult phantom through the whole pipeline (canonical frame, 4 mm cube,
network, back to the native grid, threshold, largest component), in memory.
"""

from __future__ import annotations

import json
import statistics
import time

from SegTuneCore.errors import SegTuneError

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def configure(parser) -> None:
    parser.add_argument("name", nargs="?", choices=("forward", "segment", "all"), default="all")
    parser.add_argument("--model", action="append", default=[], metavar="NAME|PATH",
                        help="model to time (repeatable; default: the active or bundled KidneyUS model)")
    parser.add_argument("--width", default="", help="also time untrained U-Nets of these widths, e.g. 32 or 16,32")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=0, help="timed runs per mode (default 5 on CPU, 50 on CUDA)")
    parser.add_argument("--compile", action="store_true", help="CUDA: also time the inference form through torch.compile")
    parser.add_argument("--compile-mode", default="reduce-overhead", choices=("reduce-overhead", "max-autotune"),
                        help="torch.compile mode (max-autotune also tries Triton convolution kernels and takes minutes)")
    parser.add_argument("--profile", metavar="FILE", default=None,
                        help="also write FILE: per-operator times of the fastest eager form (bf16 + channels_last_3d), "
                             "grouped by input shape, so a missed target shows which layers are slow")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device bf16 peak for the compute floor")
    parser.add_argument("--size", type=int, default=200, help="side of the native volume for `segment`")
    parser.add_argument("--json", action="store_true")


def conv_flops(network, shape) -> int:
    """FLOPs (2 per multiply-add) of every convolution that runs on one input of `shape` (D, H, W),
    functional ones included (torch's FLOP counter sees the aten calls)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    parameter = next(network.parameters())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        network(torch.zeros((1, 1, *shape), device=parameter.device, dtype=parameter.dtype))
    return counter.get_total_flops()


def _timed(run, repeats: int, sync) -> float:
    for _ in range(2):
        run()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak(device, args) -> float | None:
    import torch

    if args.peak_tflops:
        return args.peak_tflops
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    return None


def _captured(run, static_input):
    """A CUDA graph of run(static_input), warmed up on a side stream; returns its replay."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            run(static_input)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = run(static_input)
    return lambda: (graph.replay(), output)[1]


def profile_table(run, inp, device, iterations: int = 5) -> str:
    """torch.profiler's per-operator table of `run(inp)`, grouped by input shape, slowest first."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch.no_grad():
        run(inp)
        sync()
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []),
                     record_shapes=True) as prof:
            for _ in range(iterations):
                run(inp)
            sync()
    return prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=40,
        max_name_column_width=50, max_shapes_column_width=90)


def bench_forward(label: str, network, device, args, profiles: list[str] | None = None) -> list[dict]:
    """The network as trained (fp32 eager: the baseline; bf16 + channels_last_3d) and its
    inference form (`inference.inference_form`, where it is exact), on CUDA also as CUDA graphs
    and, with --compile, the inference form through torch.compile. Each row records the largest
    probability difference from the baseline, so a fast mode that computes something else shows.
    With `profiles`, appends the per-operator profile of the last eager bf16 form."""
    import copy

    import torch

    from SegTuneCore.device import capabilities

    from .inference import inference_form
    from .unet_inference import InferenceUNet3D

    repeats = args.repeats or (50 if device.type == "cuda" else 5)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    network = network.to(device).eval()
    peak = _peak(device, args)
    x = torch.randn(1, 1, 80, 80, 80, device=device)
    xc = x.contiguous(memory_format=torch.channels_last_3d)
    rows = []
    trained_gflop = conv_flops(network, (80, 80, 80)) / 1e9
    with torch.no_grad():
        reference = network(x).float()

    def bf16(net, cache=True):
        def run(inp):
            with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache):
                return net(inp)
        return run

    def record(mode: str, net, run, inp, setup=None):
        row = {"network": label, "mode": mode}
        try:
            with torch.no_grad():
                start = time.perf_counter()
                call = setup(run, inp) if setup else (lambda: run(inp))
                # before the timed runs: a CUDA graph's next replay overwrites its output
                difference = float((call().float() - reference).abs().max())
                sync()
                if setup:
                    row["setup_s"] = time.perf_counter() - start
                seconds = _timed(call, repeats, sync)
            flops = conv_flops(net, (80, 80, 80))
        except Exception as exc:  # a benchmark row, not a reason to lose the others
            rows.append({**row, "error": f"{type(exc).__name__}: {exc}"[:300]})
            return
        row.update(ms=seconds * 1e3, gflop=flops / 1e9, tflops=flops / seconds / 1e12,
                   max_abs_diff_vs_fp32=difference)
        if rows and "ms" in rows[0]:
            row["speedup_vs_fp32"] = rows[0]["ms"] / row["ms"]
        if peak:  # the network as trained sets the floor: the inference form's fewer FLOPs count as gain
            row["floor_ms"] = trained_gflop / peak
        rows.append(row)

    def captured(run, inp):
        return _captured(run, inp.clone())

    def compiled(run, inp):
        return lambda: run(inp)

    record("fp32 eager", network, network, x)
    if not capabilities(device)["bf16"] and device.type == "cpu":
        rows[0]["note"] = "this CPU has no native bf16; bf16 rows are emulated"
    forms = [("", copy.deepcopy(network).to(memory_format=torch.channels_last_3d))]
    fast = inference_form(copy.deepcopy(network))
    if any(isinstance(m, InferenceUNet3D) for m in fast.modules()):
        forms.append(("inference form, ", fast.to(memory_format=torch.channels_last_3d)))
        record("inference form, fp32", fast, fast, x)
    for prefix, form in forms:
        record(f"{prefix}bf16 + channels_last_3d", form, bf16(form), xc)
        if device.type == "cuda":
            record(f"{prefix}bf16 + channels_last_3d + CUDA graph", form, bf16(form, cache=False), xc, captured)
    prefix, form = forms[-1]
    # weights stored in bf16, no autocast: a CUDA graph or compiled graph casts no weights per call.
    # Plain U-Nets only: transfer layers keep parts of their work in fp32.
    weights = copy.deepcopy(form).to(torch.bfloat16) if isinstance(form, InferenceUNet3D) else None
    if weights is not None:
        xb = xc.to(torch.bfloat16)
        record(f"{prefix}bf16 weights + channels_last_3d", weights, weights, xb)
        if device.type == "cuda":
            record(f"{prefix}bf16 weights + channels_last_3d + CUDA graph", weights, weights, xb, captured)
    if profiles is not None:
        try:
            table = profile_table(bf16(form), xc, device)
        except Exception as exc:  # e.g. no CUPTI: the timings above still count
            table = f"profile failed: {type(exc).__name__}: {exc}"[:300]
        profiles.append(f"## {label}: {prefix}bf16 + channels_last_3d, eager\n\n{table}")
    if device.type == "cuda" and args.compile:
        if weights is not None:
            record(f"{prefix}bf16 weights + channels_last_3d + torch.compile({args.compile_mode})", weights,
                   torch.compile(weights, mode=args.compile_mode), xb, compiled)
        else:
            record(f"{prefix}bf16 + channels_last_3d + torch.compile({args.compile_mode})", form,
                   bf16(torch.compile(form, mode=args.compile_mode)), xc, compiled)
    return rows


def bench_segment(segmenter, size: int, repeats: int) -> dict:
    """End-to-end on a size^3 adult phantom through the segmentation pipeline, in memory."""
    import numpy as np
    import torch

    from .phantom import generate_phantom
    from .segmentation import segment_volume
    from .unet import dice_score

    volume, label = generate_phantom("adult", 7, size=(size, size, size))
    start = time.perf_counter()
    segment_volume(volume, segmenter)
    first = time.perf_counter() - start
    results = []
    seconds = _timed(lambda: results.append(segment_volume(volume, segmenter)), repeats, lambda: None)
    mask = results[-1].labels
    dice = float(dice_score(torch.from_numpy(mask[None]), torch.from_numpy(label.array[None]))[0])
    return {"native_shape": list(volume.array.shape), "seconds": seconds, "first_call_seconds": first,
            "stages_s": results[-1].timings_s, "precision": segmenter.precision,
            "dice_vs_phantom_truth": dice, "kidney_voxels": int(np.count_nonzero(label.array))}


def run(args) -> int:
    import torch

    from SegTuneCore.device import describe, select_device
    from SegTuneCore.models import ModelStore

    from . import inference, unet

    device = select_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    networks = []
    widths = [int(w) for w in args.width.split(",") if w.strip()] if args.width else []
    for width in widths:
        torch.manual_seed(0)
        networks.append((f"untrained width {width}", unet.UNet3D(unet.UNetConfig(width=width))))
    entries = [ModelStore().resolve(inference.TASK, name) for name in args.model]
    if not entries and (args.name != "forward" or not widths):
        entries = [ModelStore().resolve(inference.TASK)]
    for entry in entries:
        network, meta = inference.load_network(entry, device)
        networks.append((f"{entry.path.name} ({meta['architecture']['name']}, "
                         f"{unet.count_parameters(network) / 1e6:.2f}M)", network))
    result = {"device": describe(device), "forward": [], "segment": None}
    if args.name in ("forward", "all"):
        profiles = [] if args.profile else None
        for label, network in networks:
            result["forward"] += bench_forward(label, network, device, args, profiles)
        if profiles:
            from SegTuneCore.process import atomic_write

            with atomic_write(args.profile) as tmp:
                tmp.write_text(f"# {result['device']['device_name']}, torch {result['device']['torch']}\n\n"
                               + "\n\n".join(profiles) + "\n")
            result["profile"] = str(args.profile)
    if args.name in ("segment", "all"):
        if not entries:
            raise SegTuneError("bench segment needs a model (--model)")
        segmenter = inference.load_segmenter(entries[0], device)
        try:
            result["segment"] = {"model": str(entries[0].path), **bench_segment(segmenter, args.size, args.repeats or 3)}
        except Exception as exc:  # keep the forward rows; report the failure in the result and the exit code
            result["segment"] = {"model": str(entries[0].path), "error": f"{type(exc).__name__}: {exc}"[:300]}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"device: {result['device']['device']} ({result['device']['device_name']})")
        for row in result["forward"]:
            if "error" in row:
                print(f"{row['network']:<40} {row['mode']:<52} failed: {row['error']}")
                continue
            extra = f"  x{row['speedup_vs_fp32']:.2f}" if "speedup_vs_fp32" in row else ""
            floor = f"  floor {row['floor_ms']:.2f} ms" if "floor_ms" in row else ""
            print(f"{row['network']:<40} {row['mode']:<52} {row['ms']:9.2f} ms  {row['gflop']:7.1f} GFLOP "
                  f"{row['tflops']:7.2f} TFLOP/s{extra}{floor}")
        if result["segment"] and "error" in result["segment"]:
            print(f"segment failed: {result['segment']['error']}")
        elif result["segment"]:
            s = result["segment"]
            print(f"segment {s['native_shape']} end to end: {s['seconds']:.2f} s ({s['precision']}), "
                  f"Dice vs truth {s['dice_vs_phantom_truth']:.3f}")
    failed = any("error" in row for row in result["forward"]) or "error" in (result["segment"] or {})
    return 1 if failed else 0
