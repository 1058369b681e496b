"""`info VOLUME [--json]`: the volume as the MRML volumes logic loads it."""

from __future__ import annotations

import json

import numpy as np

from SegTuneCore.mrml import load_volume_node, volume_from_node
from SegTuneCore.runtime import headless_slicer


def configure(parser) -> None:
    parser.add_argument("volume", help="NRRD, NIfTI or MHA file")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def describe_volume(node) -> dict:
    volume = volume_from_node(node)
    image = node.GetImageData()
    array = volume.array
    finite = array[np.isfinite(array)] if np.issubdtype(array.dtype, np.floating) else array
    return {
        "name": node.GetName(),
        "size": list(volume.shape_ijk),
        "spacing": volume.spacing.tolist(),
        "origin": volume.origin.tolist(),
        "ijk_to_ras": volume.ijk_to_ras.tolist(),
        "scalar_type": image.GetScalarTypeAsString(),
        # JSON has no NaN or infinity: the range is that of the finite voxels, the others are counted.
        "range": [float(finite.min()), float(finite.max())] if finite.size else None,
        "non_finite_voxels": int(array.size - finite.size),
    }


def run(args) -> int:
    with headless_slicer():
        info = describe_volume(load_volume_node(args.volume))
    if args.json:
        print(json.dumps(info, indent=2, allow_nan=False))
    else:
        print(f"{args.volume}")
        print(f"  size (i, j, k):  {' x '.join(str(n) for n in info['size'])}")
        print(f"  spacing (mm):    {' '.join(f'{s:.6g}' for s in info['spacing'])}")
        print(f"  origin (RAS):    {' '.join(f'{o:.6g}' for o in info['origin'])}")
        print(f"  scalar type:     {info['scalar_type']}")
        print(f"  value range:     {info['range']}" + (f" ({info['non_finite_voxels']} NaN/inf voxels)"
                                                          if info["non_finite_voxels"] else ""))
        print("  IJK-to-RAS:")
        for row in info["ijk_to_ras"]:
            print("    " + " ".join(f"{v:12.6g}" for v in row))
    return 0
