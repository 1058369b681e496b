"""Training of the template deformation segmenter (thesis §4.5–§4.6).

Jointly on adults and children with the children oversampled so each epoch is balanced
(training.epoch_order, §3.3.2), with the augmentation of Table 4.1 drawn afresh for every item
of every epoch (the thesis drew 10 augmented copies per image before training): Gaussian noise,
translation, rotation about each axis and scaling along each axis of image and label together.
The same loop trains the U-Net baselines of Table 4.2, so every row sees the same data.

Entry points: `train_template(...)`, `train_from_args(args)` (for `train --method template`, whose
parser gets the options of `templates.add_template_arguments`) and
`python -m KidneyUSLib train --method template --adults N|DIR --children N|DIR --output MODEL_DIR`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from SegTuneCore.errors import SegTuneError

from . import templates, training, transforms, unet
from .preprocessing import CUBE_SIZE
from .template_net import ARCHITECTURE, TemplateConfig, TemplateNet, folded_fraction

# Table 4.1 (normal distributions). Noise: 5 grey levels of 255 in our normalised intensities;
# translation: 3 voxels of the 4 mm cube (12 mm), whatever the training resolution.
NOISE_STD = 5.0 / 255.0
TRANSLATION_STD_MM = 3 * 4.0
ROTATION_STD = 0.05
SCALING_STD = 0.05
TEMPLATE_SEED = 2_000_000  # the phantom whose mask is the template: in neither training nor test sets


@dataclass
class TemplateTrainSettings:
    epochs: int = 20
    batch_size: int = 2
    lr: float = 1e-3
    augment: float = 1.0                # Table 4.1 standard deviations times this (0: none)
    oversample: bool = True
    seed: int = 0
    time_budget_s: float | None = None  # stop after the epoch that exceeds it
    bf16: bool | None = None            # convolutions in bf16 (None: where the device supports it); warp fp32
    feature_copies: int = 3             # frozen body: images whose features are cached per item (1 + augmented)

    def to_dict(self) -> dict:
        return asdict(self)


def augment(images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator,
            voxel_mm: float = 4.0, strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Table 4.1 on a batch [B, 1, D, H, W]: one random G (translation, rotations, scalings) per item
    moves image and label, then Gaussian noise; `strength` multiplies every standard deviation."""
    b = images.shape[0]
    params = np.concatenate([
        rng.normal(0.0, strength * TRANSLATION_STD_MM / voxel_mm, (b, 3)),
        rng.normal(0.0, strength * ROTATION_STD, (b, 3)),
        np.log(np.clip(rng.normal(1.0, strength * SCALING_STD, (b, 3)), 0.5, 2.0)),
    ], axis=1)
    g = transforms.matrix_from_parameters(torch.from_numpy(params).to(images.device), transforms.grid_centre(images.shape[2:]))
    images = transforms.warp(images.double(), g).float()
    labels = (transforms.warp(labels.double(), g) >= 0.5).float()
    noise = torch.from_numpy(rng.normal(0.0, strength * NOISE_STD, images.shape).astype(np.float32)).to(images.device)
    return images + noise, labels


def downsample_label(label: np.ndarray, factor: int) -> np.ndarray:
    return training.CubeSet("template", label[None].astype(np.float32), label[None], "label").downsampled(factor).labels[0]


def body_is_frozen(network: torch.nn.Module) -> bool:
    return isinstance(network, TemplateNet) and not any(p.requires_grad for p in network.body.parameters())


def cache_body_features(network: TemplateNet, train_sets: Sequence[training.CubeSet], settings: TemplateTrainSettings,
                        device: torch.device, voxel_mm: float, bf16: bool, rng: np.random.Generator) -> list[tuple]:
    """Per set: (bottlenecks, field features[, U-Net probabilities], labels) of every item and of
    `feature_copies - 1` augmented copies of it (Table 4.1), computed once by the frozen body and
    kept in bf16 on the host; the thesis, too, drew its augmented copies before training."""
    batching = training.TrainSettings(augment=0.0, crop=None)
    network.body.eval()
    cache = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for index, cubes in enumerate(train_sets):
            parts = []
            for copy in range(settings.feature_copies if settings.augment > 0 else 1):
                for first in range(0, len(cubes), 4):
                    x, y = training.make_batch(train_sets, [(index, i) for i in range(first, min(first + 4, len(cubes)))],
                                               batching, rng)
                    if copy:
                        x, y = augment(x, y, rng, voxel_mm, settings.augment)
                    outputs = network.body(x.to(device))
                    parts.append((*(o.to("cpu", torch.bfloat16) for o in outputs), y.to(torch.uint8)))
            cache.append(tuple(torch.cat(column) for column in zip(*parts)))
    return cache


def train_model(network: torch.nn.Module, train_sets: Sequence[training.CubeSet], settings: TemplateTrainSettings,
                device: torch.device, voxel_mm: float = 4.0,
                on_epoch: Callable[[int, training.History], None] | None = None) -> training.History:
    """Adam on Dice (+ the displacement penalty for a TemplateNet); returns per-epoch losses and times.

    A TemplateNet whose body is frozen trains its branches on the body's features cached once
    (`cache_body_features`): the body's forward pass, most of the cost, then runs once per cached
    image instead of once per step.
    """
    from SegTuneCore.device import capabilities

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    bf16 = capabilities(device)["bf16"] if settings.bf16 is None else settings.bf16
    network.to(device)
    optimiser = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=settings.lr)
    cache = cache_body_features(network, train_sets, settings, device, voxel_mm, bf16, rng) if body_is_frozen(network) else None
    sizes = [len(c[-1]) for c in cache] if cache is not None else [len(s) for s in train_sets]
    batching = training.TrainSettings(augment=0.0, crop=None)
    history = training.History()
    started = time.perf_counter()
    for epoch in range(settings.epochs):
        start = time.perf_counter()
        network.train()
        training.freeze_batchnorm_of_frozen_layers(network)
        order = training.epoch_order(sizes, settings.oversample, rng)
        losses = []
        for first in range(0, len(order), settings.batch_size):
            items = order[first:first + settings.batch_size]
            if cache is not None:
                *outputs, y = (torch.stack([cache[s][column][i] for s, i in items]).to(device).float()
                               for column in range(len(cache[0])))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = network.loss(network.deform_features(*outputs), y)
            else:
                x, y = training.make_batch(train_sets, items, batching, rng)
                x, y = x.to(device), y.to(device)
                if settings.augment > 0:
                    x, y = augment(x, y, rng, voxel_mm, settings.augment)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = network.loss(network.deform(x), y) if isinstance(network, TemplateNet) else unet.dice_loss(network(x), y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.detach())
        history.train_loss.append(float(torch.stack(losses).mean()))
        history.epoch_seconds.append(time.perf_counter() - start)
        if on_epoch is not None:
            on_epoch(epoch, history)
        if settings.time_budget_s is not None and time.perf_counter() - started > settings.time_budget_s:
            break
    network.eval()
    return history


def count_components(mask: np.ndarray) -> int:
    from scipy import ndimage

    return int(ndimage.label(mask)[1])


def evaluate_cases(network: torch.nn.Module, cubes: training.CubeSet, device: torch.device,
                   batch_size: int = 4) -> dict:
    """Per case: hard Dice (threshold 0.5), connected components, and for a TemplateNet the
    folded-voxel fraction and the 9 global parameters."""
    network.eval()
    dice, components, folded, parameters = [], [], [], []
    with torch.inference_mode():
        for first in range(0, len(cubes), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(cubes.images[first:first + batch_size]))[:, None].to(device)
            y = torch.from_numpy(cubes.labels[first:first + batch_size])[:, None]
            if isinstance(network, TemplateNet):
                deformation = network.deform(x)
                probabilities = deformation.probabilities
                folded += folded_fraction(deformation.grid).cpu().tolist()
                parameters += deformation.parameters.cpu().tolist()
            else:
                probabilities = network(x)
            masks = probabilities.float().cpu() > 0.5
            dice += unet.dice_score(masks, y).tolist()
            components += [count_components(m[0].numpy()) for m in masks]
    result = {"dice": dice, "dice_mean": float(np.mean(dice)), "dice_std": float(np.std(dice)),
              "components": components, "single_component": float(np.mean(np.asarray(components) == 1))}
    if folded:
        result.update(folded=folded, folded_max=float(np.max(folded)), parameters=parameters)
    return result


# --- one model, end to end --------------------------------------------------------------------

def template_labels(kind: str, train_sets: Sequence[training.CubeSet], excluded_label: np.ndarray | None) -> list:
    """The masks a template is built from: the excluded one ("mask") or every training mask ("mean")."""
    if kind == "mask":
        if excluded_label is None:
            raise SegTuneError("a mask template needs a label excluded from training and testing")
        return [excluded_label]
    return [label for s in train_sets for label in s.labels]


def build_network(config: TemplateConfig, train_sets: Sequence[training.CubeSet],
                  excluded_label: np.ndarray | None) -> TemplateNet:
    template = templates.build_template(config.template_kind, template_labels(config.template_kind, train_sets,
                                                                                excluded_label))
    return TemplateNet(config, torch.from_numpy(template))


@dataclass
class BodyInit:
    """Start from a trained plain U-Net's body, or from a whole template model (`--init`)."""
    tensors: dict
    freeze: bool = False  # train only the global and local branches
    whole: bool = False   # the tensors are a TemplateNet's (template included), not a U-Net's


def train_template(train_sets: Sequence[training.CubeSet], config: TemplateConfig, settings: TemplateTrainSettings,
                   device: torch.device, *, excluded_label: np.ndarray | None = None,
                   test_sets: Sequence[training.CubeSet] = (), output: str | Path | None = None,
                   voxel_mm: float = 4.0, on_epoch=None, extra_meta: dict | None = None,
                   body_init: BodyInit | None = None) -> tuple[TemplateNet, dict]:
    """Build the template, train, evaluate on test_sets, save to `output` (model store format)."""
    if body_init is not None and body_init.whole:
        network = TemplateNet(config)
        network.load_state_dict(body_init.tensors, strict=True)
    else:
        network = build_network(config, train_sets, excluded_label)
    if body_init is not None:
        if not body_init.whole:
            network.load_body_from_unet(body_init.tensors)
        network.body.requires_grad_(not body_init.freeze)
    history = train_model(network, train_sets, settings, device, voxel_mm, on_epoch)
    metrics = {"seconds_per_epoch": float(np.mean(history.epoch_seconds))}
    for test in test_sets:
        name = "adults" if test.population == "adult" else "children"
        score = evaluate_cases(network, test, device)
        metrics.update({f"dice_{name}": score["dice_mean"], f"dice_{name}_std": score["dice_std"],
                        f"single_component_{name}": score["single_component"],
                        f"folded_max_{name}": score["folded_max"], f"test_{name}": len(test)})
    if output is not None:
        legacy = training.TrainSettings(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
                                        augment=settings.augment, oversample=settings.oversample,
                                        seed=settings.seed, time_budget_s=settings.time_budget_s)
        meta = training.model_meta(network, method="template", settings=legacy, train_sets=train_sets,
                                   metrics=metrics, device=device, history=history,
                                   extra={"template_settings": settings.to_dict(), **(extra_meta or {})})
        meta["preprocessing"]["size"] = list(config.template_shape)
        training.save_network(output, network, meta)
    return network, metrics


# --- command line -----------------------------------------------------------------------------

def configure(parser) -> None:
    """`train`'s options (train_cli) plus the template ones: this module is `train --method template`."""
    from .train_cli import configure as configure_train

    configure_train(parser)
    if "--template" not in parser._option_string_actions:  # train_cli may add them itself
        templates.add_template_arguments(parser)


def excluded_template_label(spec: str, sets: training.CubeSet) -> tuple[np.ndarray, training.CubeSet]:
    """(template mask, remaining training set): for generated data a phantom used nowhere else;
    for a folder its first training case, taken out of the training set."""
    if spec.isdigit():
        return training.generated_set("adult", 1, first_seed=TEMPLATE_SEED).labels[0], sets
    if len(sets) < 2:
        raise SegTuneError("a mask template takes one training case out: give at least 2")
    return sets.labels[0], sets.subset(range(1, len(sets)))


def model_init(name: str, freeze: bool) -> tuple[BodyInit, dict, dict]:
    """(initialisation, the model's architecture, model.json provenance) for `--init`: a plain
    U-Net gives the body; a template model gives every weight and the template (continue training)."""
    from SegTuneCore.models import load_model

    from .inference import TASK
    from .train_cli import resolve_base

    entry = resolve_base(name)
    architecture = entry.meta["architecture"]["name"]
    if architecture not in (unet.ARCHITECTURE, ARCHITECTURE):
        raise SegTuneError(f"{entry.path}: --init must be a plain U-Net or a template model, not {architecture}")
    tensors, meta = load_model(entry.path, task=TASK, architecture=architecture)
    return BodyInit(tensors, freeze, whole=architecture == ARCHITECTURE), meta["architecture"], {
        "initial_model": {"path": str(entry.path), "sha256": meta["sha256"], "body_frozen": freeze}}


def train_from_args(args) -> int:
    """`train --method template` and this module's command line."""
    from SegTuneCore.device import select_device
    from SegTuneCore.process import ProgressReporter

    from .train_cli import load_sets

    # the options all methods share are checked by train_cli._check_arguments
    unused = [option for option, value in (("--base", args.base), ("--crop", args.crop)) if value]
    if unused:
        raise SegTuneError(f"{', '.join(unused)} do not apply to --method template (it trains on whole cubes)")
    if args.feature_copies < 1:
        raise SegTuneError("--feature-copies must be >= 1")
    if args.freeze_body and not args.init:
        raise SegTuneError("--freeze-body needs --init (the U-Net whose body is kept)")
    if args.init and args.downsample != 1:
        raise SegTuneError("--init needs --downsample 1: the U-Net's body was trained on 4 mm cubes")
    if args.global_loss < 0 or (args.global_loss > 0 and args.no_geometric):
        raise SegTuneError("--global-loss must be >= 0 and needs the geometric branch (no --no-geometric)")
    if args.local_width < 1:
        raise SegTuneError("--local-width must be >= 1")
    if args.no_geometric and args.no_deformation:
        raise SegTuneError("--no-geometric and --no-deformation leave nothing to predict")
    device = select_device(args.device)
    reporter = ProgressReporter(args.progress)
    body_init, width, levels, dropout, extra, resumed = None, args.width, args.levels, args.dropout, {}, None
    if args.init:  # before any data is made: a wrong model fails fast
        body_init, architecture, extra = model_init(args.init, args.freeze_body)
        width, levels, dropout = architecture["width"], architecture["levels"], architecture.get("dropout", dropout)
        if body_init.whole:  # its architecture and template; the loss weights are this run's
            resumed = dataclasses.replace(TemplateConfig.from_dict(architecture), penalty=args.penalty,
                                          global_loss=args.global_loss)
    factor, kind = args.downsample, args.template
    size = (CUBE_SIZE // factor,) * 3  # every data source is pre-processed into this cube
    if resumed is not None and size != resumed.template_shape:
        raise SegTuneError(f"--init {args.init}: the model takes {resumed.template_shape} cubes, --downsample "
                           f"{factor} gives {size}")
    try:
        config = resumed or TemplateConfig(width=width, levels=levels, dropout=dropout,
                                geometric=not args.no_geometric, deformation=not args.no_deformation,
                                field_level=args.field_level, penalty=args.penalty, global_pooling=args.global_pooling,
                                local_branch=args.local_branch, local_width=args.local_width,
                                global_loss=args.global_loss, probability_input=args.probability_input,
                                template_shape=size, template_kind=kind)
    except ValueError as exc:
        raise SegTuneError(str(exc)) from None
    reporter.log("preparing data")
    adults, adults_test = load_sets(args.adults, "adult", args)
    children, children_test = load_sets(args.children, "child", args)
    excluded = None
    if kind == "mask":
        spec, source = (args.adults, adults) if adults is not None else (args.children, children)
        excluded, source = excluded_template_label(spec, source)
        adults, children = (source, children) if adults is not None else (adults, source)
    train_sets = [s.downsampled(factor) for s in (adults, children) if s is not None and len(s)]
    test_sets = [s.downsampled(factor) for s in (adults_test, children_test) if s is not None]
    if excluded is not None:
        excluded = downsample_label(excluded, factor)
    if tuple(train_sets[0].images.shape[1:]) != config.template_shape:
        raise SegTuneError(f"the training cubes are {train_sets[0].images.shape[1:]}, the network takes "
                           f"{config.template_shape}")
    settings = TemplateTrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, augment=args.augment,
                                     oversample=not args.no_oversample, seed=args.seed, time_budget_s=args.time_budget,
                                     bf16=None if args.precision == "auto" else args.precision == "bf16",
                                     feature_copies=args.feature_copies)

    def on_epoch(epoch, history):
        reporter.progress((epoch + 1) / args.epochs,
                          f"epoch {epoch + 1}/{args.epochs} loss {history.train_loss[-1]:.4f} ({history.epoch_seconds[-1]:.1f} s)")

    reporter.log(f"training template deformation on {', '.join(f'{len(s)} {s.population}' for s in train_sets)} ({device})")
    _, metrics = train_template(train_sets, config, settings, device, excluded_label=excluded, test_sets=test_sets,
                                output=args.output, voxel_mm=4.0 * factor, on_epoch=on_epoch,
                                extra_meta={**extra, "arguments": {k: v for k, v in vars(args).items()
                                                                   if isinstance(v, (int, float, str, type(None)))}},
                                body_init=body_init)
    result = {"output": str(args.output), "method": "template", "metrics": metrics, "device": str(device)}
    reporter.result(result)
    if args.json and args.progress != "json":
        print(json.dumps(result, indent=2))
    elif not args.json:
        reporter.log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    return 0
