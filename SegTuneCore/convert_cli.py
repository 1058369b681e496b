"""`convert IN OUT`: read and write through MRML storage nodes (volumes and .seg.nrrd)."""

from __future__ import annotations

from SegTuneCore.errors import SegTuneError
from SegTuneCore.geometry import VOLUME_SUFFIXES, check_outputs, check_segmentation_output_name, check_volume_output_name
from SegTuneCore.mrml import load_segmentation_node, load_volume_node, save_node
from SegTuneCore.runtime import headless_slicer


def configure(parser) -> None:
    parser.add_argument("input", help="volume (NRRD, NIfTI, MHA) or segmentation (.seg.nrrd)")
    parser.add_argument("output", help="output file; the suffix chooses the format")


def _kind(path: str) -> str:
    lower = path.lower()
    if lower.endswith(".seg.nrrd"):
        return "segmentation"
    if lower.endswith(VOLUME_SUFFIXES):
        return "volume"
    raise SegTuneError(f"{path}: unsupported file type (volumes: {', '.join(VOLUME_SUFFIXES)}; segmentations: .seg.nrrd)")


def run(args) -> int:
    source, target = _kind(args.input), _kind(args.output)
    (check_volume_output_name if target == "volume" else check_segmentation_output_name)(args.output)
    check_outputs([args.output], [args.input])
    if source != target:
        raise SegTuneError(f"cannot convert a {source} into a {target}")
    with headless_slicer():
        node = load_segmentation_node(args.input) if source == "segmentation" else load_volume_node(args.input)
        save_node(node, args.output)
    print(f"wrote {args.output}")
    return 0
