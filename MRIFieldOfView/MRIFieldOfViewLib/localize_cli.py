"""`python -m MRIFieldOfViewLib localize VOL --output REGIONS.json [--segmentation OUT.seg.nrrd] ...`"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from SegTuneCore.errors import SegTuneError
from SegTuneCore.process import ProgressReporter, add_progress_argument, atomic_write

from .localize import DEFAULT_SMOOTHING_MM


def configure(parser) -> None:
    parser.add_argument("volume", help="axial MRI volume (NRRD, NIfTI, MHA)")
    parser.add_argument("--output", required=True, help="regions JSON to write")
    parser.add_argument("--segmentation", help="also write the region slabs as a .seg.nrrd on the input grid")
    parser.add_argument("--model", help="model version, bundled model name or model folder (default: active, else bundled)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast of the network (CUDA or CPUs with native bf16)")
    parser.add_argument("--smoothing-mm", type=float, default=DEFAULT_SMOOTHING_MM,
                        help=f"standard deviation of the Gaussian smoothing along the patient axis, mm (default {DEFAULT_SMOOTHING_MM:g}; 0 = none)")
    parser.add_argument("--json", action="store_true", help="also print the regions JSON on stdout")
    add_progress_argument(parser)


def run(args) -> int:
    from SegTuneCore.geometry import check_outputs, check_segmentation_output_name, read_volume, write_segmentation

    from .localize import load_classifier, localize, region_labels, region_segments

    output = Path(args.output)
    if args.segmentation:
        check_segmentation_output_name(args.segmentation)
    check_outputs([output] + ([args.segmentation] if args.segmentation else []), [args.volume])
    reporter = ProgressReporter(args.progress)
    try:
        volume = read_volume(args.volume)
        model = load_classifier(args.model, args.device)
        result = localize(volume, model, smoothing_mm=args.smoothing_mm, progress=reporter.progress, bf16=args.bf16)
        document = result.to_json()
        document["input"] = str(Path(args.volume))
        # the segmentation is written inside the JSON's atomic write: a failure of either leaves
        # both earlier outputs as they were
        with atomic_write(output) as tmp:
            tmp.write_text(json.dumps(document, indent=1) + "\n")
            if args.segmentation:
                labels = volume.with_array(region_labels(volume.array.shape[:3], result))
                write_segmentation(labels, region_segments(result), args.segmentation)
    except SegTuneError as exc:
        reporter.error(str(exc))
        raise
    summary = ", ".join(f"{r.name} [{r.first_slice}-{r.last_slice}]" for r in result.regions) or "no region"
    reporter.log(f"{args.volume}: {summary}")
    reporter.result({"output": str(output), "segmentation": args.segmentation,
                     "regions": document["regions"], "device": document["device"]["device"]})
    if args.json and args.progress != "json":
        json.dump(document, sys.stdout)
        sys.stdout.write("\n")
    return 0
