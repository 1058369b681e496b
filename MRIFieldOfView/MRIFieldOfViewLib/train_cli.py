"""`python -m MRIFieldOfViewLib train`: train a slice classifier of the Table 2.7 family.

Data: `--phantoms N` generates N study phantoms in memory (seeds --phantom-seed-start ...,
below dataset.HELD_OUT_SEED_START), or `--data DIR` reads NAME.nrrd + NAME.json pairs. The
volumes are split 50/25/25 (train/validation/test); the model folder records the validation and
test metrics. Progress: `--progress bar|json|quiet`.
"""

from __future__ import annotations

import argparse
import json
import math

from SegTuneCore.errors import SegTuneError
from SegTuneCore.process import add_progress_argument

from .classifier import BASELINE_CONFIG
from .phantom_cli import check_max_matrix

GIB = 2 ** 30


def add_config_arguments(parser) -> None:
    group = parser.add_argument_group("model and optimiser (Table 2.7; defaults: the §2.6.2 baseline)")
    group.add_argument("--config", default=None,
                       help="JSON object (or a file holding one) of config keys; the options below override it")
    group.add_argument("--blocks", type=int, help="b, convolution blocks (baseline 5)")
    group.add_argument("--convs-per-block", type=int, help="c, convolutions per block (baseline 1)")
    group.add_argument("--filters-log2", type=int, help="r, 2^r filters per convolution (baseline 6)")
    group.add_argument("--filter-size", type=int, choices=(3, 5), help="s (baseline 3)")
    group.add_argument("--separable", action=argparse.BooleanOptionalAction, default=None, help="separable 1xs + sx1 convolutions (baseline no)")
    group.add_argument("--fc-units", help="comma-separated fully connected widths (baseline 4096,1024)")
    group.add_argument("--dropout", type=float, help="dropout after each fully connected layer (baseline 0)")
    group.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None, help="batch normalisation after each convolution (baseline no)")
    group.add_argument("--learning-rate", type=float, help="SGD learning rate (baseline 1e-3)")
    group.add_argument("--batch-size", type=int, help="batch size (baseline 8)")
    group.add_argument("--weight-decay", type=float, help="L2 weight decay (default 0)")


def config_from_args(args) -> dict:
    config = dict(BASELINE_CONFIG)
    if args.config:
        text = args.config
        if not text.lstrip().startswith("{"):
            try:
                with open(text) as handle:
                    text = handle.read()
            except OSError as exc:
                raise SegTuneError(f"--config: {exc.strerror}: {text}") from None
        try:
            loaded = json.loads(text)
        except ValueError:
            raise SegTuneError("--config: not a JSON object") from None
        if not isinstance(loaded, dict):
            raise SegTuneError("--config: not a JSON object")
        unknown = set(loaded) - set(BASELINE_CONFIG) - {"weight_decay", "decay"}
        if unknown:
            raise SegTuneError(f"--config: unknown keys {', '.join(sorted(unknown))}")
        config.update(loaded)
    for key in ("blocks", "convs_per_block", "filters_log2", "filter_size", "separable", "dropout",
                "batch_norm", "learning_rate", "batch_size", "weight_decay"):
        value = getattr(args, key, None)
        if value is not None:
            config[key] = value
    if args.fc_units:
        try:
            config["fc_units"] = [int(v) for v in args.fc_units.split(",") if v.strip()]
        except ValueError:
            raise SegTuneError("--fc-units: expected comma-separated integers") from None
    return config


def configure(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--phantoms", type=int, help="number of study phantoms to generate in memory")
    source.add_argument("--data", help="folder of NAME.nrrd|.nii.gz|.mha + NAME.json ({\"slice_labels\": [...]})")
    parser.add_argument("--phantom-seed-start", type=int, default=0, help="first phantom seed (default 0)")
    parser.add_argument("--max-slices-per-volume", type=int, default=48,
                        help="random subset of slices kept per volume (default 48; 0 = all)")
    parser.add_argument("--max-matrix", type=int, default=256, help="largest phantom in-plane matrix (default 256)")
    parser.add_argument("--workers", type=int, default=1, help="processes generating phantoms (default 1)")
    add_config_arguments(parser)
    parser.add_argument("--init-from", default=None,
                        help="start from this model (version, bundled name or folder): fine-tuning; "
                             "its architecture is used and the architecture options above are ignored")
    parser.add_argument("--epochs", type=int, default=30, help="epochs (default 30, as §2.6.2)")
    parser.add_argument("--samples-per-epoch", type=int, default=80000,
                        help="augmented images drawn per epoch (default 80000, as §2.6.1)")
    parser.add_argument("--time-limit-min", type=float, default=None, help="stop after the epoch that passes this")
    parser.add_argument("--memory-limit-gb", type=float, default=12.0,
                        help="refuse configs whose estimated training memory exceeds this (default 12, as §2.6.3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, initialisation and sampling")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA or CPUs with native bf16)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--output", required=True, help="model folder to write (weights.safetensors + model.json)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    add_progress_argument(parser)


def run(args) -> int:
    from SegTuneCore.device import describe, select_device
    from SegTuneCore.process import ProgressReporter

    from .classifier import check_fits, model_config
    from .dataset import folder_slice_set, phantom_slice_set, split_slice_set
    from .training import confusion_table, evaluate, model_meta, save_trained, train

    reporter = ProgressReporter(args.progress)
    config = config_from_args(args)
    initial_state = None
    if args.init_from:
        from SegTuneCore.models import ModelStore, load_model

        from .classifier import ARCHITECTURE, TASK

        entry = ModelStore().resolve(TASK, args.init_from)
        initial_state, init_meta = load_model(entry.path, task=TASK, architecture=ARCHITECTURE)
        config.update(init_meta["architecture"]["config"])
    try:
        model_config(config)
    except ValueError as exc:
        raise SegTuneError(f"invalid model config: {exc}") from None
    check_fits(config, int(args.memory_limit_gb * GIB))
    for name in ("epochs", "samples_per_epoch", "batch_size"):
        if int(getattr(args, name, None) or config.get(name, 1)) < 1:
            raise SegTuneError(f"--{name.replace('_', '-')} must be >= 1")
    learning_rate = float(config["learning_rate"])
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise SegTuneError(f"--learning-rate must be a finite number > 0, got {learning_rate:g}")
    if args.phantoms is not None and args.phantoms < 3:
        raise SegTuneError("--phantoms must be >= 3 (train, validation and test volumes)")
    check_max_matrix(args.max_matrix)
    if args.phantom_seed_start < 0:
        raise SegTuneError("--phantom-seed-start must be >= 0")
    device = select_device(args.device)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    max_slices = args.max_slices_per_volume or None

    def on_volume(done, total):
        reporter.progress(0.2 * done / total, f"data: volume {done}/{total}")

    if args.data:
        data = folder_slice_set(args.data, max_slices, on_volume=on_volume)
        data_record = {"source": "folder", "path": str(args.data), "volumes": int(data.volumes.max()) + 1}
    else:
        seeds = range(args.phantom_seed_start, args.phantom_seed_start + args.phantoms)
        data = phantom_slice_set(seeds, max_slices, args.max_matrix, args.workers, on_volume=on_volume)
        data_record = {"source": "phantoms", "seeds": [seeds.start, seeds.stop], "max_matrix": args.max_matrix}
    data_record["max_slices_per_volume"] = max_slices
    if args.init_from:
        data_record["initialised_from"] = {"model": str(args.init_from), "sha256": init_meta.get("sha256")}
    sets = split_slice_set(data, args.seed)
    data_record.update({f"{name}_slices": len(part) for name, part in sets.items()})
    reporter.log(f"data: {len(data)} slices; " + ", ".join(f"{n} {len(p)}" for n, p in sets.items()))

    def on_step(fraction, message):
        reporter.progress(0.2 + 0.78 * fraction, message)

    def on_epoch(entry):
        reporter.log("epoch {epoch}: train loss {train_loss:.4f}".format(**entry)
                     + (" validation loss {validation_loss:.4f} accuracy {validation_accuracy:.4f}".format(**entry)
                        if "validation_loss" in entry else ""))

    time_limit = args.time_limit_min * 60 if args.time_limit_min else None
    try:
        result = train(config, sets["train"], sets["validation"], epochs=args.epochs,
                       samples_per_epoch=args.samples_per_epoch, seed=args.seed, device=device, bf16=args.bf16,
                       on_step=on_step, on_epoch=on_epoch, time_limit_s=time_limit, initial_state=initial_state)
    except FloatingPointError as exc:
        # nothing is saved yet: a diverged run leaves no model folder
        raise SegTuneError(f"{exc}; lower --learning-rate (now {learning_rate:g}, baseline "
                           f"{BASELINE_CONFIG['learning_rate']:g})") from None
    metrics = {}
    for name in ("validation", "test"):
        if len(sets[name]):
            metrics[name] = evaluate(result.model, sets[name], device, result.class_weights, bf16=args.bf16)
    meta = model_meta(config, result, seed=args.seed, data=data_record, metrics=metrics,
                      training={"epochs": args.epochs, "epochs_run": len(result.history),
                                "samples_per_epoch": args.samples_per_epoch, "bf16": bool(args.bf16)},
                      device_record=describe(device))
    save_trained(args.output, result, meta)
    reporter.progress(1.0, "done")
    summary = {"output": str(args.output), "seconds": round(result.seconds, 1),
               "epochs_run": len(result.history),
               "validation": {k: metrics["validation"][k] for k in ("loss", "accuracy")} if "validation" in metrics else None,
               "test": {k: metrics["test"][k] for k in ("loss", "accuracy")} if "test" in metrics else None,
               "device": str(device)}
    if "test" in metrics:
        reporter.log("test confusion (percent of each true class):\n" + confusion_table(metrics["test"]["confusion"]))
    reporter.result(summary)
    if args.json and args.progress != "json":
        print(json.dumps(summary))
    return 0
