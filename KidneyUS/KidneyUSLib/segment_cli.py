"""`python -m KidneyUSLib segment VOL --output SEG.seg.nrrd`: segment the kidney in a 3D ultrasound volume."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from SegTuneCore.errors import SegTuneError
from SegTuneCore.process import add_progress_argument

from .segmentation import MAX_SIDE, MAX_VOXELS, METHOD_ARCHITECTURES


def configure(parser) -> None:
    parser.add_argument("volume", help="3D ultrasound volume (.nrrd, .nii.gz, .mha, ...)")
    parser.add_argument("--output", required=True, help="segmentation file to write (.seg.nrrd), on the input's grid")
    parser.add_argument("--method", choices=tuple(METHOD_ARCHITECTURES), default=None,
                        help="network kind: plain 3D U-Net, U-Net with transfer layers, or template deformation (default: whatever the model is)")
    parser.add_argument("--model", default=None,
                        help="model version, bundled model name or model folder (default: the active model, else the bundled one)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    parser.add_argument("--all-components", action="store_true", help="keep every connected component (default: the largest)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    add_progress_argument(parser)
    parser.epilog = f"Inputs are limited to {MAX_VOXELS} voxels and {MAX_SIDE} voxels along an axis."


def run(args) -> int:
    from SegTuneCore.device import describe
    from SegTuneCore.geometry import check_outputs, check_segmentation_output_name, read_volume, write_segmentation
    from SegTuneCore.process import ProgressReporter

    from .segmentation import KIDNEY, check_threshold, load_segmenter, resolve_model, segment_volume, validate_volume

    output = Path(args.output)
    check_segmentation_output_name(output)
    check_outputs([output], [args.volume])
    check_threshold(args.threshold)
    reporter = ProgressReporter(args.progress)
    started = time.perf_counter()
    shown = []  # whether progress has been drawn
    try:
        # every check before the first progress event: a refused input prints one line only
        entry = resolve_model(args.model, args.method)
        start = time.perf_counter()
        volume = read_volume(args.volume)
        validate_volume(volume, args.volume)
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        segmenter = load_segmenter(entry, args.device)
        load_s = time.perf_counter() - start
        shown.append(True)
        result = segment_volume(volume, segmenter, args.threshold, not args.all_components,
                                progress=reporter.progress)
        reporter.progress(0.95, "writing")
        start = time.perf_counter()
        write_segmentation(volume.with_array(result.labels), [KIDNEY], output)
        write_s = time.perf_counter() - start
    except SegTuneError as exc:
        reporter.error(str(exc))
        if shown and args.progress == "bar":
            print(file=sys.stderr)  # end the progress bar's line before the error message
        raise
    reporter.progress(1.0, "done")
    summary = {
        "output": str(output), "volume_ml": round(result.volume_ml, 3),
        "model": {"task": entry.task, "version": entry.version, "path": str(entry.path), "bundled": entry.bundled,
                  "architecture": entry.meta["architecture"]["name"]},
        "device": describe(segmenter.device), "precision": getattr(segmenter, "precision", None),
        "timings_s": {"read": round(read_s, 4), "load_model": round(load_s, 4), **result.timings_s,
                      "write": round(write_s, 4), "total": round(time.perf_counter() - started, 4)},
    }
    if result.network:  # template: folded_fraction, min_jacobian, components, parameters, template, unet_dice
        summary["template"] = result.network
    summary["warnings"] = result.warnings
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.progress == "json":
        reporter.result(summary)
    elif args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {output}: kidney {summary['volume_ml']:.1f} mL in {summary['timings_s']['total']:.1f} s")
    return 0
