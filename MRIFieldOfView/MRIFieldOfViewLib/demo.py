"""`python -m MRIFieldOfViewLib demo --output DIR`: phantom -> localize -> JSON, .seg.nrrd, PNG.

Generates a held-out whole-body phantom, localizes it with the bundled (or active) model and
writes into DIR: phantom.nrrd, truth.json, regions.json, regions.seg.nrrd and regions.png, a
figure in the layout of the thesis's Fig. 2.16 (image and truth, raw probabilities, smoothed
probabilities, final regions with the errors in red).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from SegTuneCore.process import add_progress_argument

FIRST_DEMO_SEED = 1_000_000  # held out from training (dataset.HELD_OUT_SEED_START)
DEMO_MATRIX = 192
DEMO_SLICES = (150, 350)     # keeps `make demo` under a minute on a CPU


def demo_seed(start: int = FIRST_DEMO_SEED) -> int:
    """The first seed from `start` whose whole-body study has 150-350 slices and a strap (§2.6.4).

    Only the acquisition is drawn (the first draws of make_phantom, milliseconds); the slice
    count of a whole-body phantom otherwise ranges from about 200 to 1700.
    """
    from .phantom import random_acquisition, random_subject
    from .regions import ORDERED_REGIONS

    for seed in range(start, start + 1000):
        rng = np.random.default_rng(seed)
        acquisition = random_acquisition(random_subject(rng), rng, list(ORDERED_REGIONS), max_matrix=DEMO_MATRIX)
        if DEMO_SLICES[0] <= acquisition.slices <= DEMO_SLICES[1] and acquisition.straps:
            return seed
    return start


def configure(parser) -> None:
    parser.add_argument("--output", required=True, help="folder to write (created)")
    parser.add_argument("--seed", type=int, default=None,
                        help="phantom seed (default: the first held-out seed from 1000000 with 150-350 slices and a strap)")
    parser.add_argument("--model", help="model version, bundled name or folder (default: active, else bundled)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--json", action="store_true", help="print a summary as JSON")
    add_progress_argument(parser)


def plot_localization(document: dict, images: np.ndarray, truth, path) -> Path:
    """Fig. 2.16 layout: coronal view + truth, raw, smoothed, final decision (errors in red).

    images: the preprocessed axial slices [N, H, W] in slice-index order; truth: one region name
    (or None) per slice, or None when unknown.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from SegTuneCore.process import atomic_write

    from .regions import REGION_COLORS, REGIONS

    positions = np.asarray(document["slice_positions_mm"])
    order = np.argsort(positions, kind="stable")
    x = positions[order]
    raw = np.asarray(document["slice_probabilities"])[order]
    smoothed = np.asarray(document["smoothed_probabilities"])[order]
    labels = [document["slice_labels"][i] for i in order]

    def colour_strip(names):
        return np.array([[REGION_COLORS[n] if n else (1.0, 1.0, 1.0) for n in names]])

    fig, axes = plt.subplots(5 if truth is not None else 4, 1, figsize=(11, 9), sharex=True,
                             gridspec_kw={"height_ratios": [2.2, 0.35, 1.5, 1.5, 0.35] if truth is not None else [2.2, 1.5, 1.5, 0.35]})
    axes = list(axes)
    extent = (x[0], x[-1], 0, 1)
    coronal = images[order][:, images.shape[1] // 2, :].T  # rows: left-right, columns: slices
    axes[0].imshow(coronal, cmap="gray", aspect="auto", extent=(x[0], x[-1], 0, coronal.shape[0]))
    axes[0].set_title("(a) image: coronal line through the axial slices" + (" and ground truth" if truth is not None else ""))
    axes[0].set_yticks([])
    next_axis = 1
    if truth is not None:
        truth_sorted = [truth[i] for i in order]
        axes[1].imshow(colour_strip(truth_sorted), aspect="auto", extent=extent)
        axes[1].set_yticks([])
        axes[1].set_ylabel("truth", rotation=0, ha="right", va="center")
        next_axis = 2
    for axis, values, title in ((axes[next_axis], raw, "(b) raw network output"),
                                (axes[next_axis + 1], smoothed, f"(c) smoothed (Gaussian, sigma {document['smoothing_mm']:g} mm)")):
        for index, name in enumerate(REGIONS):
            axis.plot(x, values[:, index], color=REGION_COLORS[name], lw=1.2, label=name)
        axis.set_ylim(-0.02, 1.02)
        axis.set_ylabel("probability")
        axis.set_title(title)
    final = axes[-1]
    final.imshow(colour_strip(labels), aspect="auto", extent=extent)
    if truth is not None:
        wrong = np.array([a != b for a, b in zip(labels, truth_sorted)])
        for position in x[wrong]:
            final.axvline(position, color="red", lw=1.5, alpha=0.8)
        final.set_title(f"(d) final regions; errors in red ({wrong.sum()} of {len(wrong)} slices)")
    else:
        final.set_title("(d) final regions")
    final.set_yticks([])
    final.set_xlabel("position along the patient axis S (mm), inferior to superior")
    handles = [Patch(color=REGION_COLORS[n], label=n) for n in REGIONS] + [Patch(facecolor="white", edgecolor="gray", label="empty")]
    fig.legend(handles=handles, loc="upper center", ncol=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def run(args) -> int:
    from SegTuneCore.geometry import write_segmentation, write_volume
    from SegTuneCore.process import ProgressReporter, atomic_write

    from .localize import load_classifier, localize, region_labels, region_segments
    from .phantom import make_phantom
    from .preprocessing import axial_slices
    from .regions import ORDERED_REGIONS

    reporter = ProgressReporter(args.progress)
    output = Path(args.output)
    model = load_classifier(args.model, args.device)
    seed = demo_seed() if args.seed is None else args.seed
    reporter.progress(0.02, f"generating the whole-body phantom of seed {seed}")
    phantom = make_phantom(seed, regions=list(ORDERED_REGIONS), max_matrix=DEMO_MATRIX)
    volume = phantom.volume()

    def progress(fraction, message):
        reporter.progress(0.2 + 0.7 * fraction, message)

    result = localize(volume, model, progress=progress)
    document = dict(result.to_json(), input="phantom.nrrd", seed=seed)
    truth = phantom.slice_labels
    correct = float(np.mean([p == t for p, t in zip(result.decision.slice_labels, truth)]))
    document["accuracy_vs_truth"] = correct

    with atomic_write(output) as tmp:  # the folder appears complete or not at all
        tmp.mkdir()
        write_volume(volume, tmp / "phantom.nrrd")
        (tmp / "truth.json").write_text(json.dumps({"slice_labels": truth}) + "\n")
        (tmp / "regions.json").write_text(json.dumps(document, indent=1) + "\n")
        write_segmentation(volume.with_array(region_labels(volume.array.shape, result)), region_segments(result),
                           tmp / "regions.seg.nrrd")
        plot_localization(document, axial_slices(volume).images, truth, tmp / "regions.png")
    reporter.progress(1.0, "done")
    summary = {"output": str(output), "seed": seed, "regions": document["regions"], "slices": len(truth),
               "slice_accuracy": round(correct, 4), "model": model.summary.get("version"),
               "device": document["device"]["device"]}
    reporter.log(f"{output}: " + ", ".join(f"{r['name']} [{r['first_slice']}-{r['last_slice']}]" for r in document["regions"])
                 + f"; {correct:.1%} of {len(truth)} slices correct")
    reporter.result(summary)
    if args.json and args.progress != "json":
        print(json.dumps(summary))
    return 0
