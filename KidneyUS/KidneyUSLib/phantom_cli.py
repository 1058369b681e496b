"""`python -m KidneyUSLib phantom`: write a 3D ultrasound kidney phantom and its label."""

from __future__ import annotations

import json

import numpy as np

from SegTuneCore.errors import SegTuneError

from .phantom import NATIVE_SIZE_RANGE, NATIVE_SPACING_RANGE, POPULATIONS

MAX_SIDE = 1024


def configure(parser) -> None:
    parser.add_argument("--population", choices=POPULATIONS, required=True,
                        help="adult (kidney 10-12 cm) or child (smaller, thinner cortex, 30 %% hydronephrosis, noisier)")
    parser.add_argument("--seed", type=int, required=True, help="random seed (same seed and options -> same phantom)")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"),
                        help=f"voxel spacing in mm along i, j, k (default: random, {NATIVE_SPACING_RANGE[0]}-{NATIVE_SPACING_RANGE[1]} mm)")
    parser.add_argument("--size", type=int, nargs=3, metavar=("NX", "NY", "NZ"),
                        help=f"voxels along i, j, k (default: random, {NATIVE_SIZE_RANGE[0]}-{NATIVE_SIZE_RANGE[1]})")
    parser.add_argument("--oblique", action="store_true", help="rotate the probe 15-35 degrees (oblique ijk-to-RAS)")
    parser.add_argument("--output", required=True, help="ultrasound volume (.nrrd, .nii.gz, .mha)")
    parser.add_argument("--label", required=True, help="kidney label volume, 0/1 (.nrrd, .nii.gz, .mha)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def run(args) -> int:
    from SegTuneCore.geometry import check_outputs, check_volume_output_name, write_volume
    from SegTuneCore.process import atomic_write

    from .phantom import draw_scene, generate_phantom

    if args.seed < 0:
        raise SegTuneError("--seed must be >= 0")
    if args.spacing is not None and not all(0.05 <= s <= 20 for s in args.spacing):
        raise SegTuneError("--spacing values must be in [0.05, 20] mm")
    if args.size is not None and not all(8 <= n <= MAX_SIDE for n in args.size):
        raise SegTuneError(f"--size values must be in [8, {MAX_SIDE}]")
    for path in (args.output, args.label):
        check_volume_output_name(path)
    check_outputs([args.output, args.label])
    scene = draw_scene(args.population, args.seed, args.spacing, args.size, args.oblique)
    if scene.size_ijk.max() > MAX_SIDE:
        raise SegTuneError(f"the phantom would have {scene.size_ijk.max()} voxels along an axis (at most {MAX_SIDE}): give a larger --spacing")

    volume, label = generate_phantom(args.population, args.seed, args.spacing, args.size, args.oblique)
    # the volume is written inside the label's atomic write: a failure leaves neither file
    with atomic_write(args.label) as tmp_label:
        write_volume(label, tmp_label)
        write_volume(volume, args.output)

    summary = {
        "output": str(args.output), "label": str(args.label), "population": args.population, "seed": args.seed,
        "size_ijk": [int(n) for n in scene.size_ijk], "spacing_ijk": [round(float(s), 4) for s in scene.spacing_ijk],
        "oblique": bool(args.oblique), "kidney_volume_ml": round(float(label.array.sum() * np.prod(label.spacing) / 1000.0), 2),
        "hydronephrosis": bool(scene.hydronephrosis), "organ": scene.organ,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {args.output} and {args.label}: {args.population} seed {args.seed}, "
              f"{'x'.join(map(str, summary['size_ijk']))} voxels, kidney {summary['kidney_volume_ml']} mL")
    return 0

