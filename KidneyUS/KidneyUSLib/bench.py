"""`python -m KidneyUSLib bench [forward|segment|all]`: 80^3 forward latency and end-to-end segment time.

forward: the U-Net on one 80^3 cube, fp32 eager (the baseline) against bf16 autocast +
channels_last_3d in the same run; on CUDA also that with a captured CUDA graph and, with
--compile, torch.compile. Each row gives the median latency, the speed-up over the baseline,
the convolution FLOPs (counted from the layers that ran) and the achieved TFLOP/s; with a known
peak (H100/H200 bf16 dense: 989 TFLOP/s, or --peak-tflops) also the compute floor.
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
    parser.add_argument("--compile", action="store_true", help="CUDA: also time torch.compile (costs a minute or more)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device bf16 peak for the compute floor")
    parser.add_argument("--size", type=int, default=200, help="side of the native volume for `segment`")
    parser.add_argument("--json", action="store_true")


def conv_flops(network, shape) -> int:
    """FLOPs (2 per multiply-add) of every Conv3d that runs on one input of `shape` (D, H, W)."""
    import torch

    total = [0]

    def count(module, inputs, output):
        kernel = module.weight[0].numel()  # in_channels/groups · k³
        total[0] += 2 * output.numel() * kernel

    hooks = [m.register_forward_hook(count) for m in network.modules() if isinstance(m, torch.nn.Conv3d)]
    try:
        with torch.no_grad():
            network(torch.zeros((1, 1, *shape), device=next(network.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return total[0]


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


def bench_forward(label: str, network, device, args) -> list[dict]:
    import copy

    import torch

    from SegTuneCore.device import capabilities

    repeats = args.repeats or (50 if device.type == "cuda" else 5)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    network = network.to(device).eval()
    flops = conv_flops(network, (80, 80, 80))
    peak = _peak(device, args)
    x = torch.randn(1, 1, 80, 80, 80, device=device)
    rows = []

    def record(mode: str, seconds: float):
        row = {"network": label, "mode": mode, "ms": seconds * 1e3, "gflop": flops / 1e9,
               "tflops": flops / seconds / 1e12}
        if rows:
            row["speedup_vs_fp32"] = rows[0]["ms"] / row["ms"]
        if peak:
            row["floor_ms"] = flops / (peak * 1e12) * 1e3
        rows.append(row)

    with torch.inference_mode():
        record("fp32 eager", _timed(lambda: network(x), repeats, sync))
    fast = copy.deepcopy(network).to(memory_format=torch.channels_last_3d)
    xc = x.contiguous(memory_format=torch.channels_last_3d)
    if not capabilities(device)["bf16"] and device.type == "cpu":
        rows[0]["note"] = "this CPU has no native bf16; bf16 rows are emulated"

    def bf16(net, inp, cache=True):
        with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache):
            return net(inp)

    with torch.inference_mode():
        record("bf16 + channels_last_3d", _timed(lambda: bf16(fast, xc), repeats, sync))
    if device.type == "cuda":
        try:
            static_x = xc.clone()
            with torch.no_grad():
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(3):
                        bf16(fast, static_x, cache=False)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    bf16(fast, static_x, cache=False)
            record("bf16 + channels_last_3d + CUDA graph", _timed(graph.replay, repeats, sync))
        except Exception as exc:  # a benchmark row, not a reason to lose the others
            rows.append({"network": label, "mode": "bf16 + channels_last_3d + CUDA graph", "error": str(exc)[:300]})
        if args.compile:
            mode = "bf16 + channels_last_3d + torch.compile(reduce-overhead)"
            try:
                compiled = torch.compile(fast, mode="reduce-overhead")
                start = time.perf_counter()
                with torch.no_grad():
                    for _ in range(3):
                        bf16(compiled, xc)
                sync()
                compile_s = time.perf_counter() - start
                with torch.no_grad():
                    record(mode, _timed(lambda: bf16(compiled, xc), repeats, sync))
                rows[-1]["compile_s"] = compile_s
            except Exception as exc:
                rows.append({"network": label, "mode": mode, "error": str(exc)[:300]})
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
        for label, network in networks:
            result["forward"] += bench_forward(label, network, device, args)
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
