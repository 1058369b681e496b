"""`python -m MRIFieldOfViewLib phantom`: write a whole-body MRI phantom and its per-slice truth."""

from __future__ import annotations

import json

from SegTuneCore.errors import SegTuneError
from SegTuneCore.process import atomic_write

from .phantom import PROTOCOLS
from .regions import ORDERED_REGIONS


def configure(parser) -> None:
    parser.add_argument("--seed", type=int, required=True, help="random seed (same seed and options -> same volume)")
    parser.add_argument("--regions", default=None,
                        help=f"comma-separated contiguous run of {','.join(ORDERED_REGIONS)} (default: all)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default=None, help="contrast (default: random)")
    parser.add_argument("--spine", action="store_true", help="a dedicated axial spine study instead (--regions ignored)")
    parser.add_argument("--canonical", action="store_true",
                        help="keep the LPS storage order (no random flips or obliquity)")
    parser.add_argument("--max-matrix", type=int, default=384, help="largest in-plane matrix (default 384)")
    parser.add_argument("--output", required=True, help="volume file (.nrrd, .nii.gz, .mha)")
    parser.add_argument("--truth", required=True, help="JSON file with {\"slice_labels\": [...]} per k-slice")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def check_max_matrix(max_matrix: int) -> None:
    """Phantoms below 32 pixels lose their anatomy (and the classifier's input is 128)."""
    if not 32 <= max_matrix <= 1024:
        raise SegTuneError("--max-matrix must be in [32, 1024]")


def parse_regions(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ORDERED_REGIONS]
    if unknown:
        raise SegTuneError(f"unknown region(s) {', '.join(unknown)}; expected names from {', '.join(ORDERED_REGIONS)}")
    indices = [ORDERED_REGIONS.index(name) for name in names]
    if indices != list(range(indices[0], indices[0] + len(indices))):
        raise SegTuneError(f"--regions must be a contiguous run in the order {','.join(ORDERED_REGIONS)}")
    return names


def run(args) -> int:
    from SegTuneCore.geometry import check_outputs, check_volume_output_name, write_volume

    from .phantom import make_phantom

    if args.seed < 0:
        raise SegTuneError("--seed must be >= 0")
    check_max_matrix(args.max_matrix)
    check_volume_output_name(args.output)
    check_outputs([args.output, args.truth])
    phantom = make_phantom(args.seed, regions=parse_regions(args.regions), protocol=args.protocol,
                           spine=args.spine, orientation=not args.canonical, max_matrix=args.max_matrix)
    truth = {"slice_labels": phantom.slice_labels, "seed": args.seed, "protocol": phantom.protocol,
             "spine": bool(args.spine), "slice_thickness_mm": phantom.acquisition.slice_thickness}
    with atomic_write(args.truth) as tmp_truth:
        tmp_truth.write_text(json.dumps(truth, indent=1))
        write_volume(phantom.volume(), args.output)
    summary = {"output": str(args.output), "truth": str(args.truth), "shape_kji": list(phantom.array.shape),
               "protocol": phantom.protocol, "regions": sorted({r for r in phantom.slice_labels if r},
                                                               key=lambda r: (r not in ORDERED_REGIONS, r))}
    if args.json:
        print(json.dumps(summary))
    return 0
