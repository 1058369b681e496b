"""`python -m KidneyUSLib demo --output DIR`: phantoms -> the bundled model -> segmentations, Dice, pictures.

Generates a held-out adult and child phantom on native grids, segments both with the model
(default: the active one, else the bundled one), writes for each case the volume, its true label
and the `.seg.nrrd`, then `kidney_demo.png` (three middle planes through each kidney, truth in
green, result in red) and `summary.json` (Dice, volumes, model, device, timings).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from SegTuneCore.process import add_progress_argument

CASES = (("adult", 70_000_001), ("child", 70_000_002))  # seeds far from any training seed


def configure(parser) -> None:
    parser.add_argument("--output", required=True, help="folder for the volumes, segmentations, picture and summary")
    parser.add_argument("--model", default=None, help="model version, bundled name or folder (default: active, else bundled)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    add_progress_argument(parser)


def middle_planes(volume, truth: np.ndarray, result: np.ndarray):
    """Three orthogonal planes of the canonical (RAS-ordered) arrays through the kidney's centre."""
    from .preprocessing import canonical_directions

    # array axes (k, j, i) reordered and flipped so that they run towards S, A, R
    directions = volume.directions
    nearest = canonical_directions(volume.ijk_to_ras)
    order, flips = [], []
    for ras_axis in (2, 1, 0):
        grid_axis = int(np.argmax(np.abs(directions.T @ nearest[:, ras_axis])))
        order.append(2 - grid_axis)
        flips.append(directions[:, grid_axis] @ nearest[:, ras_axis] < 0)
    arrays = []
    for array in (volume.array, truth, result):
        array = np.transpose(array, order)
        arrays.append(array[tuple(slice(None, None, -1) if f else slice(None) for f in flips)])
    spacing = volume.spacing[[2 - a for a in order]]  # (S, A, R) spacing of the reordered axes
    centre = np.round(np.argwhere(arrays[1] > 0).mean(axis=0)).astype(int)
    planes = []
    for axis, name in ((0, "axial"), (1, "coronal"), (2, "sagittal")):
        taken = [np.take(a, centre[axis], axis=axis) for a in arrays]
        rest = [s for i, s in enumerate(spacing) if i != axis]
        planes.append((name, taken, rest[0] / rest[1]))
    return planes


def save_picture(cases: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(cases), 3, figsize=(12, 4 * len(cases)), squeeze=False)
    for row, case in enumerate(cases):
        for column, (name, (image, truth, result), aspect) in enumerate(case["planes"]):
            ax = axes[row, column]
            ax.imshow(image, cmap="gray", origin="lower", aspect=aspect)
            if truth.any():
                ax.contour(truth, [0.5], colors="lime", linewidths=1.2)
            if result.any():
                ax.contour(result, [0.5], colors="red", linewidths=1.2)
            ax.set_title(f"{case['population']} {name} (Dice {case['dice']:.3f})", fontsize=10)
            ax.axis("off")
    figure.suptitle("KidneyUS phantoms: truth (green) and segmentation (red)")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def run(args) -> int:
    from SegTuneCore.device import describe
    from SegTuneCore.geometry import write_segmentation, write_volume
    from SegTuneCore.process import ProgressReporter

    from .phantom import generate_phantom
    from .segmentation import KIDNEY, dice, load_segmenter, resolve_model, segment_volume

    reporter = ProgressReporter(args.progress)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    entry = resolve_model(args.model)
    segmenter = load_segmenter(entry, args.device)
    cases = []
    for index, (population, seed) in enumerate(CASES):
        reporter.progress(index / len(CASES), f"{population} phantom")
        start = time.perf_counter()
        volume, label = generate_phantom(population, seed)
        generate_s = time.perf_counter() - start
        result = segment_volume(volume, segmenter)
        write_volume(volume, output / f"{population}.nrrd")
        write_volume(label, output / f"{population}_truth.nrrd")
        write_segmentation(volume.with_array(result.labels), [KIDNEY], output / f"{population}.seg.nrrd")
        cases.append({
            "population": population, "seed": seed, "size_ijk": list(volume.shape_ijk),
            "spacing_ijk": [round(float(s), 3) for s in volume.spacing],
            "dice": dice(result.labels, label.array), "volume_ml": round(result.volume_ml, 2),
            "true_volume_ml": round(float(label.array.sum() * np.prod(volume.spacing) / 1000.0), 2),
            "timings_s": {"generate": round(generate_s, 3), **result.timings_s},
            "planes": middle_planes(volume, label.array, result.labels),
        })
    reporter.progress(0.95, "picture")
    save_picture(cases, output / "kidney_demo.png")
    summary = {"model": entry.summary(), "device": describe(segmenter.device),
               "cases": [{k: v for k, v in case.items() if k != "planes"} for case in cases],
               "picture": str(output / "kidney_demo.png")}
    (output / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    reporter.progress(1.0, "done")
    if args.progress == "json":
        reporter.result(summary)
    elif args.json:
        print(json.dumps(summary, default=str))
    else:
        for case in summary["cases"]:
            print(f"{case['population']}: Dice {case['dice']:.3f}, kidney {case['volume_ml']:.1f} mL "
                  f"(truth {case['true_volume_ml']:.1f} mL) -> {output / (case['population'] + '.seg.nrrd')}")
        print(f"picture: {summary['picture']}")
    return 0
