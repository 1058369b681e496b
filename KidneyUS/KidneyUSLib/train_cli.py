"""`python -m KidneyUSLib train`: U-Net baselines, fine-tuning and transfer layers (thesis §3.3–§3.4).

Examples:
  python -m KidneyUSLib train --method unet --adults 40 --children 12 --output models/joint
  python -m KidneyUSLib train --method finetune --base models/adults --layers last:7 --children 12 --output models/ft
  python -m KidneyUSLib train --method transfer --base models/adults --transfer-layers geometric,intensity \\
      --children 12 --output models/gi

--adults/--children take a folder of image + label pairs (case.nrrd with case_label.nrrd, NIfTI
too) or a number of phantoms to generate. Folders are split 80/20 into training and test
(seeded); generated sets get --test-adults/--test-children separate held-out phantoms. Fine-tuning
and transfer train on the children only (the source data is gone, §3.4) and are evaluated on both.
"""

from __future__ import annotations

import json

from SegTuneCore.errors import SegTuneError
from SegTuneCore.process import add_progress_argument

METHODS = ("unet", "finetune", "transfer", "template")
TRANSFER_LAYERS = ("geometric", "intensity", "fixed")


def configure(parser) -> None:
    parser.add_argument("--method", choices=METHODS, default="unet")
    parser.add_argument("--adults", metavar="DIR|N", help="adult training data: a folder of image/label pairs or a phantom count")
    parser.add_argument("--children", metavar="DIR|N", help="child training data: a folder or a phantom count")
    parser.add_argument("--test-adults", type=int, default=8, metavar="N", help="held-out adult phantoms (generated data only)")
    parser.add_argument("--test-children", type=int, default=8, metavar="N", help="held-out child phantoms (generated data only)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="test share of a folder (default 0.2, §3.2.3)")
    parser.add_argument("--native-fraction", type=float, default=0.0, metavar="F",
                        help="share of the generated training phantoms made on their native grid and pre-processed "
                             "as `segment` does (slow, exact) instead of the fast 80^3 path")
    parser.add_argument("--test-native", action="store_true",
                        help="generated test phantoms go through the native grid and pre-processing (what `segment` sees)")
    parser.add_argument("--output", required=True, metavar="MODEL_DIR", help="model folder to write (weights.safetensors + model.json)")
    parser.add_argument("--base", metavar="MODEL", help="finetune/transfer: the adult model (folder, or a version/name in the model store)")
    parser.add_argument("--init", metavar="MODEL", help="unet: start from this model's weights and architecture (continue training); "
                             "template: start the body from this plain U-Net (its width and levels), or continue "
                             "training this template model")
    parser.add_argument("--layers", default="all", help="finetune: all, first:N or last:N convolution layers (§3.3.3)")
    parser.add_argument("--transfer-layers", default="geometric,intensity",
                        help="transfer: comma list of geometric, intensity, fixed (default geometric,intensity)")
    parser.add_argument("--width", type=int, default=16, help="U-Net base width (32 gives 16.3M parameters)")
    parser.add_argument("--levels", type=int, default=4, help="U-Net resolution levels")
    parser.add_argument("--dropout", type=float, default=0.1, help="spatial dropout rate")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="stop after the epoch that exceeds this training time (--epochs is then a maximum)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--crop", type=int, default=0, help="train on random crops of this side around the kidney (0: whole cubes)")
    parser.add_argument("--augment", type=float, default=1.0, help="augmentation strength (0: none)")
    parser.add_argument("--no-oversample", action="store_true", help="joint training without balancing children against adults")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--workers", type=int, default=1, help="processes generating phantoms")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    add_progress_argument(parser)
    from .templates import add_template_arguments  # torch-free

    add_template_arguments(parser)


def load_sets(spec: str | None, population: str, args):
    """(training set, test set) from a folder or a phantom count; (None, None) when spec is None."""
    from . import training

    if spec is None:
        return None, None
    if not spec.isdigit():
        return training.split_set(training.folder_set(spec, population), args.test_fraction, args.seed)
    count = int(spec)
    n_native = int(round(args.native_fraction * count))
    first = args.seed * 10_000
    parts = []
    if count - n_native > 0:
        parts.append(training.generated_set(population, count - n_native, first, args.workers))
    if n_native > 0:  # their own seeds: never the fast path's
        parts.append(training.generated_set(population, n_native, first + 5_000, args.workers, native=True))
    test = None
    test_count = args.test_adults if population == "adult" else args.test_children
    if test_count > 0:
        test = training.generated_set(population, test_count, training.TEST_SEED_OFFSET, args.workers,
                                      native=args.test_native)
    return training.concatenate(parts), test


def _check_arguments(args) -> None:
    """Every argument that needs no file or network, before anything is loaded."""
    if args.adults is None and args.children is None:
        raise SegTuneError("give --adults and/or --children (a folder or a phantom count)")
    for option, spec in (("--adults", args.adults), ("--children", args.children)):
        if spec is not None and spec.isdigit() and int(spec) < 1:
            raise SegTuneError(f"{option} {spec}: give a folder or a phantom count >= 1")
    if args.method in ("finetune", "transfer") and not args.base:
        raise SegTuneError(f"--method {args.method} needs --base (the trained adult model)")
    if args.method in ("finetune", "transfer") and args.children is None:
        raise SegTuneError(f"--method {args.method} trains on children: give --children")
    if not 0.0 <= args.native_fraction <= 1.0:
        raise SegTuneError("--native-fraction must lie in [0, 1]")
    if not 0.0 < args.test_fraction < 1.0:
        raise SegTuneError("--test-fraction must lie in (0, 1)")
    if args.test_adults < 0 or args.test_children < 0:
        raise SegTuneError("--test-adults and --test-children must be >= 0")
    if args.epochs < 1 or args.batch_size < 1 or args.workers < 1 or not args.lr > 0:
        raise SegTuneError("--epochs, --batch-size and --workers must be >= 1 and --lr > 0")
    if not args.augment >= 0 or (args.time_budget is not None and not args.time_budget > 0) or args.crop < 0:
        raise SegTuneError("--augment and --crop must be >= 0 and --time-budget > 0")


def resolve_base(name: str):
    from SegTuneCore.models import ModelStore

    from .inference import TASK

    return ModelStore().resolve(TASK, name)


def run(args) -> int:
    import torch

    from SegTuneCore.device import select_device
    from SegTuneCore.process import ProgressReporter

    from . import inference, training, transfer, unet

    _check_arguments(args)
    if args.method == "template":  # thesis §4: its own trainer, same options
        from .template_training import train_from_args

        return train_from_args(args)
    for spec in (args.adults, args.children):
        if spec is not None and not spec.isdigit():
            training.find_pairs(spec)  # every file's header, before minutes of work
    device = select_device(args.device)
    reporter = ProgressReporter(args.progress)
    torch.manual_seed(args.seed)

    # the network first: a bad --base, --init, --layers, --transfer-layers or --crop fails before
    # minutes of phantom generation
    extra = {}
    if args.method == "unet":
        if args.init:
            init = resolve_base(args.init)
            network, init_meta = inference.load_network(init, "cpu")
            if not isinstance(network, unet.UNet3D):
                raise SegTuneError(f"{init.path}: --init must be a plain U-Net, not {init_meta['architecture']['name']}")
            extra["initial_model"] = {"path": str(init.path), "sha256": init_meta["sha256"]}
        else:
            network = unet.UNet3D(unet.UNetConfig(width=args.width, levels=args.levels, dropout=args.dropout))
    else:
        base = resolve_base(args.base)
        network, base_meta = inference.load_network(base, "cpu")
        if not isinstance(network, unet.UNet3D):
            raise SegTuneError(f"{base.path}: --base must be a plain U-Net, not {base_meta['architecture']['name']}")
        extra["base_model"] = {"path": str(base.path), "sha256": base_meta["sha256"]}
    # every level halves the crop; the lowest must keep >= 2 voxels for batch normalisation
    step = 2 ** (network.config.levels - 1)
    if args.crop and not (args.crop <= 80 and args.crop % step == 0 and args.crop // step >= 2):
        raise SegTuneError(f"--crop {args.crop}: use 0 (whole cubes) or a multiple of {step} from {2 * step} to 80 "
                           f"for a {network.config.levels}-level U-Net")
    if args.method == "finetune":
        extra["trained_layers"] = args.layers
        training.set_trainable(network, args.layers)
    elif args.method == "transfer":
        chosen = [s.strip() for s in args.transfer_layers.split(",") if s.strip()]
        unknown = sorted(set(chosen) - set(TRANSFER_LAYERS))
        if unknown or not chosen:
            raise SegTuneError(f"--transfer-layers: unknown {unknown or chosen} (choose from {', '.join(TRANSFER_LAYERS)})")
        network = transfer.TransferUNet(network, transfer.TransferConfig(
            geometric="geometric" in chosen, intensity="intensity" in chosen, fixed_convolutions="fixed" in chosen,
            predictor_width=transfer.default_predictor_width(network.config.width)))
        extra["added_parameters"] = network.added_parameter_count()

    reporter.log("preparing data")
    adults, adults_test = load_sets(args.adults, "adult", args)
    children, children_test = load_sets(args.children, "child", args)
    train_sets = [s for s in (adults, children) if s is not None] if args.method == "unet" else [children]

    settings = training.TrainSettings(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, crop=args.crop or None, augment=args.augment,
        oversample=not args.no_oversample, bf16=None if args.precision == "auto" else args.precision == "bf16",
        channels_last=None if args.precision == "auto" else args.precision == "bf16", seed=args.seed,
        time_budget_s=args.time_budget)

    def on_epoch(epoch, history):
        elapsed = sum(history.epoch_seconds)
        fraction = (epoch + 1) / args.epochs
        if args.time_budget:
            fraction = max(fraction, min(elapsed / args.time_budget, 1.0))
        reporter.progress(fraction,
                          f"epoch {epoch + 1}/{args.epochs} loss {history.train_loss[-1]:.4f} ({history.epoch_seconds[-1]:.1f} s)")

    reporter.log(f"training {args.method} on {', '.join(f'{len(s)} {s.population}' for s in train_sets)} ({device})")
    history = training.train_network(network, train_sets, settings, device, on_epoch=on_epoch)
    metrics = {}
    for name, test in (("adults", adults_test), ("children", children_test)):
        if test is not None:
            score = training.evaluate(network, test, device)
            metrics[f"dice_{name}"] = score["dice_mean"]
            metrics[f"dice_{name}_std"] = score["dice_std"]
            metrics[f"test_{name}"] = len(test)
    metrics["seconds_per_epoch"] = sum(history.epoch_seconds) / len(history.epoch_seconds)
    meta = training.model_meta(network, method=args.method, settings=settings, train_sets=train_sets,
                               metrics=metrics, device=device, history=history,
                               extra={**extra, "arguments": vars(args)})
    training.save_network(args.output, network, meta)
    result = {"output": str(args.output), "method": args.method, "metrics": metrics, "device": str(device)}
    reporter.result(result)
    if args.json:
        if args.progress != "json":
            print(json.dumps(result, indent=2))
    else:
        reporter.log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    return 0
