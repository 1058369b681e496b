"""`python -m MRIFieldOfViewLib evaluate`: slice accuracy and the Table 2.6 confusion matrix.

Evaluates a classifier from the model store (default: the active or bundled one) on held-out
study phantoms (seeds from dataset.HELD_OUT_SEED_START = 1,000,000 up, never used in training) or
on a folder of volumes with truth files. Slices with no region (empty, above the head) are not
counted. Prints the confusion matrix in percent of each true class, thesis order.
"""

from __future__ import annotations

import json

import numpy as np

from SegTuneCore.errors import SegTuneError
from SegTuneCore.process import add_progress_argument

from .dataset import HELD_OUT_SEED_START
from .phantom_cli import check_max_matrix


def configure(parser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--phantoms", type=int, default=None, help="held-out study phantoms to generate (default 40)")
    source.add_argument("--data", help="folder of NAME.nrrd|.nii.gz|.mha + NAME.json ({\"slice_labels\": [...]})")
    parser.add_argument("--seed-start", type=int, default=HELD_OUT_SEED_START,
                        help=f"first phantom seed (default {HELD_OUT_SEED_START}: never used in training)")
    parser.add_argument("--max-matrix", type=int, default=256, help="largest phantom in-plane matrix (default 256)")
    parser.add_argument("--model", default=None, help="model version, bundled name or folder (default: active, else bundled)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--output", default=None, help="also write the metrics as JSON to this file")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    add_progress_argument(parser)


def run(args) -> int:
    from SegTuneCore.device import describe, select_device
    from SegTuneCore.models import ModelStore
    from SegTuneCore.process import ProgressReporter, atomic_write

    from .classifier import TASK, SliceClassifier
    from .dataset import EMPTY, folder_slice_set, phantom_slice_set
    from .regions import REGIONS
    from .training import confusion_table

    reporter = ProgressReporter(args.progress)
    phantoms = 40 if args.phantoms is None and not args.data else args.phantoms
    if phantoms is not None and phantoms < 1:
        raise SegTuneError("--phantoms must be >= 1")
    check_max_matrix(args.max_matrix)
    if args.seed_start < HELD_OUT_SEED_START and not args.data:
        reporter.log(f"warning: seeds below {HELD_OUT_SEED_START} may have been used in training")
    device = select_device(args.device)
    entry = ModelStore().resolve(TASK, args.model)
    classifier = SliceClassifier.load(entry, device)

    def on_volume(done, total):
        reporter.progress(0.8 * done / total, f"data: volume {done}/{total}")

    if args.data:
        data = folder_slice_set(args.data, on_volume=on_volume)
        source = {"source": "folder", "path": str(args.data)}
    else:
        seeds = range(args.seed_start, args.seed_start + phantoms)
        data = phantom_slice_set(seeds, None, args.max_matrix, on_volume=on_volume)
        source = {"source": "phantoms", "seeds": [seeds.start, seeds.stop]}
    probabilities = classifier.predict(data.float_images(), bf16=args.bf16)
    predicted = probabilities.argmax(1)
    known = data.labels != EMPTY
    confusion = np.zeros((len(REGIONS), len(REGIONS)), dtype=np.int64)
    np.add.at(confusion, (data.labels[known], predicted[known]), 1)
    per_class = {name: (float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None)
                 for i, name in enumerate(REGIONS)}
    metrics = {
        "model": {"version": entry.version, "path": str(entry.path), "bundled": entry.bundled},
        "data": source,
        "slices": int(known.sum()),
        "empty_slices": int((~known).sum()),
        "slice_accuracy": float((predicted[known] == data.labels[known]).mean()) if known.any() else None,
        "per_class_accuracy": per_class,
        "confusion": confusion.tolist(),
        "classes": list(REGIONS),
        "device": describe(device),
    }
    reporter.progress(1.0, "done")
    if args.output:
        with atomic_write(args.output) as tmp:
            tmp.write_text(json.dumps(metrics, indent=1))
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"slice accuracy: {metrics['slice_accuracy']:.4f} on {metrics['slices']} slices "
              f"({metrics['empty_slices']} empty slices not counted)")
        print(confusion_table(confusion))
    reporter.result({"slice_accuracy": metrics["slice_accuracy"], "slices": metrics["slices"]})
    return 0
