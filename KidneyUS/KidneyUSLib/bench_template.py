"""`python -m KidneyUSLib bench-template [--json]`: template segmenter vs U-Net per volume, same run.

Two measurements, each interleaving the two segmenters repeat by repeat so load on a shared
machine hits both alike (the median of each is reported, and the ratio template / U-Net):
- cube: one 80^3 cube through each segmenter's whole call (the template's includes the
  Jacobian determinant of ψ and the connected-component check it reports);
- segment: a native adult phantom through the whole pipeline (segmentation.segment_volume:
  canonical frame, 4 mm cube, network, back to the native grid, threshold, largest component).
Both segmenters run with the same precision: fp32, and where the device supports them bf16
convolutions + channels_last_3d (the template's warp stays fp32), and in the form `segment`
runs them: the U-Net and the template's U-Net body as their inference forms (unet_inference).
Without --template/--unet models, untrained networks of --width are timed (the speed does not
depend on the weights).
"""

from __future__ import annotations

import json
import statistics
import time

from SegTuneCore.errors import SegTuneError

TARGET_RATIO = 1.5  # issue 7: no worse than 1.5x the U-Net per volume


def configure(parser) -> None:
    parser.add_argument("--template", default=None, metavar="MODEL",
                        help="template model: folder, installed version or bundled name (default: untrained)")
    parser.add_argument("--unet", default=None, metavar="MODEL",
                        help="U-Net model: folder, installed version or bundled name (default: untrained)")
    parser.add_argument("--width", type=int, default=16,
                        help="width of the untrained networks (an untrained U-Net beside --template takes the "
                             "template's body width and depth instead: the same body on both sides)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=160, help="side of the native phantom for the segment row (0: skip)")
    parser.add_argument("--json", action="store_true")


def _networks(args, device):
    import torch

    from . import inference, unet
    from .segmentation import resolve_model
    from .template_net import TemplateConfig, TemplateNet, TemplateSegmenter, load_template_segmenter
    from .templates import mask_template
    from .unet_inference import InferenceUNet3D

    if args.template:
        template = load_template_segmenter(resolve_model(args.template, "template"), device)
        template_net, template_meta = template.network, template.meta
    else:
        from .phantom import generate_training_pair

        label = generate_training_pair("adult", 0)[1]
        template_net = TemplateNet(TemplateConfig(width=args.width), torch.from_numpy(mask_template(label)))
        template_meta = {"architecture": template_net.architecture()}
    if args.unet:
        unet_net, unet_meta = inference.load_network(resolve_model(args.unet, "unet"), device)
    else:  # beside a template model, the same body on both sides
        body = template_net.config
        unet_net = unet.UNet3D(unet.UNetConfig(width=body.width, levels=body.levels))
        unet_meta = {"architecture": unet_net.config.to_dict()}

    def pair(bf16: bool):
        import copy

        return (inference.Segmenter(InferenceUNet3D(unet_net.to(device).eval()), unet_meta, device, bf16, bf16),
                TemplateSegmenter(copy.deepcopy(template_net), template_meta, device, bf16, bf16))

    return pair


def _interleaved(first, second, repeats: int) -> tuple[float, float]:
    first(), second()  # warm-up
    a, b = [], []
    for _ in range(repeats):
        for run, times in ((first, a), (second, b)):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def run(args) -> int:
    import numpy as np
    import torch

    from SegTuneCore.device import capabilities, describe, select_device

    from .segmentation import segment_volume

    if args.repeats < 1 or args.width < 1 or args.size < 0 or 0 < args.size < 8:
        raise SegTuneError("--repeats and --width must be >= 1, --size 0 (no segment row) or >= 8")
    device = select_device(args.device)
    pair = _networks(args, device)
    precisions = [False] + ([True] if capabilities(device)["bf16"] else [])
    rows = []
    cube = np.random.default_rng(0).random((80, 80, 80), dtype=np.float32)
    volume = None
    if args.size:
        from .phantom import generate_phantom

        volume = generate_phantom("adult", 0, size=(args.size,) * 3)[0]
    for bf16 in precisions:
        unet_segmenter, template_segmenter = pair(bf16)
        precision = template_segmenter.precision
        with torch.inference_mode():
            u, t = _interleaved(lambda: unet_segmenter(cube), lambda: template_segmenter(cube), args.repeats)
        rows.append({"row": "cube 80^3", "precision": precision, "unet_s": u, "template_s": t, "ratio": t / u})
        if volume is not None:
            u, t = _interleaved(lambda: segment_volume(volume, unet_segmenter),
                                lambda: segment_volume(volume, lambda c: template_segmenter(c)[0]), args.repeats)
            rows.append({"row": f"segment {args.size}^3 native", "precision": precision,
                         "unet_s": u, "template_s": t, "ratio": t / u})
    result = {"bench": "template vs unet", "device": describe(device), "threads": torch.get_num_threads(),
              "repeats": args.repeats, "width": args.width, "template_model": args.template, "unet_model": args.unet,
              "target_ratio": TARGET_RATIO, "rows": rows,
              "meets_target": all(r["ratio"] <= TARGET_RATIO for r in rows)}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"device: {result['device'].get('name') or result['device'].get('device')}, {result['threads']} threads")
        for r in rows:
            print(f"{r['row']:<24} {r['precision']:<24} U-Net {r['unet_s'] * 1e3:8.1f} ms   "
                  f"template {r['template_s'] * 1e3:8.1f} ms   ratio {r['ratio']:.2f}")
    return 0
