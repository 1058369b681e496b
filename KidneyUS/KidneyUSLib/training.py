"""Training of the KidneyUS networks (thesis §3.3–§3.4): baselines, fine-tuning, transfer layers.

Data are cubes in the network frame (80^3, 4 mm, normalised), either generated phantoms
(`generated_set`, the phantom engineer's fast path) or a folder of image + label files
(`folder_set`, the only place that needs SimpleITK, imported lazily). Everything else is torch,
numpy and scipy, so training runs on machines without SimpleITK or Slicer.

- Baselines (§3.3.2): `train_network` on adults, children, or both; with both, each epoch draws
  every adult once and as many children, each child repeated (oversampling, Buda et al. 2018).
- Fine-tuning (§3.3.3): `set_trainable(network, "all" | "first:N" | "last:N")` on the
  numbered convolution layers of the U-Net.
- Transfer (§3.4): `transfer.TransferUNet` around the frozen base; only the added layers train.

Batch-normalisation layers whose weights are frozen stay in inference mode while training
(as frozen Keras layers do), so a frozen base keeps its statistics.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from SegTuneCore.device import capabilities, describe
from SegTuneCore.errors import SegTuneError

from . import inference, unet

POPULATIONS = ("adult", "child")
TEST_SEED_OFFSET = 1_000_000  # generated test phantoms never share a seed with training ones


# --- data -----------------------------------------------------------------------------------

@dataclass
class CubeSet:
    """Cubes [N, 80, 80, 80] float32 and labels uint8 of one population."""

    population: str
    images: np.ndarray
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int]) -> "CubeSet":
        idx = np.asarray(indices, dtype=int)
        return CubeSet(self.population, self.images[idx], self.labels[idx], f"{self.source}[{len(idx)}]")

    def downsampled(self, factor: int) -> "CubeSet":
        """Images averaged and labels majority-voted over factor^3 blocks (the experiments' CPU scale)."""
        if factor == 1:
            return self
        images = nn.functional.avg_pool3d(torch.from_numpy(self.images)[:, None], factor)[:, 0]
        labels = nn.functional.avg_pool3d(torch.from_numpy(self.labels).float()[:, None], factor)[:, 0] >= 0.5
        return CubeSet(self.population, images.numpy(), labels.to(torch.uint8).numpy(), f"{self.source}/{factor}")


def _generator_version() -> str:
    """Hash of the generator's code: cached phantoms from another version are never reused."""
    import hashlib

    from . import phantom, preprocessing

    digest = hashlib.sha256()
    for module in (phantom, preprocessing):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def native_pair(population: str, seed: int, oblique: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A phantom on its native grid taken through the segmentation pipeline's own pre-processing:
    exactly what `segment` feeds the network (the fast path approximates it ~50x faster)."""
    from .phantom import generate_phantom
    from .preprocessing import preprocess, resample_to_cube

    volume, label = generate_phantom(population, seed, oblique=oblique)
    cube, info = preprocess(volume)
    label_cube = resample_to_cube(label.array.astype(np.float32), info) >= 0.5
    return cube.astype(np.float32), label_cube.astype(np.uint8)


def _generate_one(task: tuple[str, int, bool, str | None]) -> tuple[np.ndarray, np.ndarray]:
    from .phantom import generate_training_pair

    population, seed, native, cache = task
    path = Path(cache) / f"{population}-{seed}{'-native' if native else ''}.npz" if cache else None
    if path is not None and path.is_file():
        with np.load(path) as stored:
            return stored["image"], stored["label"]
    # every third native phantom is oblique, as users' volumes may be
    image, label = native_pair(population, seed, oblique=seed % 3 == 0) if native else generate_training_pair(population, seed)
    if path is not None:
        tmp = path.with_name(f".{path.stem}-{os.getpid()}.npz")
        np.savez(tmp, image=image, label=label)
        os.replace(tmp, path)
    return image, label


def generated_set(population: str, count: int, first_seed: int = 0, workers: int = 1,
                  native: bool = False) -> CubeSet:
    """`count` phantoms with seeds first_seed.. (deterministic), generated in `workers` processes;
    with `native`, through the native grid and `preprocess` (`native_pair`) instead of the fast path.

    With $KIDNEYUS_PHANTOM_CACHE set, phantoms are kept there (per generator version) and reused.
    """
    if population not in POPULATIONS:
        raise SegTuneError(f"unknown population {population!r} (adult, child)")
    if count < 1:
        raise SegTuneError(f"need at least one {population} phantom, got {count}")
    cache = os.environ.get("KIDNEYUS_PHANTOM_CACHE")
    if cache:
        cache = str(Path(cache) / _generator_version())
        Path(cache).mkdir(parents=True, exist_ok=True)
    tasks = [(population, first_seed + i, native, cache) for i in range(count)]
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            pairs = pool.map(_generate_one, tasks, chunksize=max(1, count // (4 * workers)))
    else:
        pairs = [_generate_one(t) for t in tasks]
    images = np.stack([p[0] for p in pairs]).astype(np.float32, copy=False)
    labels = np.stack([p[1] for p in pairs]).astype(np.uint8, copy=False)
    kind = "native phantoms" if native else "phantoms"
    return CubeSet(population, images, labels, f"{kind}:{population}:seeds {first_seed}..{first_seed + count - 1}")


def concatenate(sets: Sequence[CubeSet]) -> CubeSet:
    """One set from several of the same population."""
    return CubeSet(sets[0].population, np.concatenate([s.images for s in sets]),
                   np.concatenate([s.labels for s in sets]), " + ".join(s.source for s in sets))


def find_pairs(folder: str | Path) -> list[tuple[Path, Path]]:
    """(image, label) pairs in a folder: `X.nrrd` with `X_label.nrrd` (or -label, _seg, .seg, _mask),
    all checked (headers, grids) before anything trains; one error names every offending file."""
    from SegTuneCore.training_data import check_training_folder

    return check_training_folder(folder, label_kind="volume")


def folder_set(folder: str | Path, population: str) -> CubeSet:
    """Pre-process every image/label pair of a folder into the network frame."""
    from SegTuneCore.geometry import read_volume

    from .preprocessing import preprocess, resample_to_cube

    images, labels = [], []
    for image_path, label_path in find_pairs(folder):
        volume, label = read_volume(image_path), read_volume(label_path)
        cube, info = preprocess(volume)
        label_cube = resample_to_cube((label.array > 0).astype(np.float32), info)
        images.append(cube.astype(np.float32))
        labels.append((label_cube >= 0.5).astype(np.uint8))
    return CubeSet(population, np.stack(images), np.stack(labels), f"folder:{Path(folder).resolve()}")


def split_set(cubes: CubeSet, test_fraction: float, seed: int) -> tuple[CubeSet, CubeSet]:
    """Seeded split into training and test (80 / 20 in §3.2.3)."""
    order = np.random.default_rng(seed).permutation(len(cubes))
    n_test = max(1, int(round(test_fraction * len(cubes)))) if len(cubes) > 1 else 0
    return cubes.subset(order[n_test:]), cubes.subset(order[:n_test])


def fingerprint(sets: Sequence[CubeSet]) -> list[dict]:
    return [{"population": s.population, "count": len(s), "source": s.source} for s in sets]


# --- settings and sampling ------------------------------------------------------------------

@dataclass
class TrainSettings:
    epochs: int = 20
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.0
    crop: int | None = None        # train on random crops around the kidney (None: whole cubes)
    augment: float = 1.0           # strength of intensity/translation augmentation (0: none)
    oversample: bool = True        # balance children against adults in joint training (§3.3.2)
    bf16: bool | None = None       # None: where the device supports it (SegTuneCore.device)
    channels_last: bool | None = None
    seed: int = 0
    time_budget_s: float | None = None  # stop after the epoch that exceeds it (epochs is then a maximum)

    def to_dict(self) -> dict:
        return asdict(self)


def epoch_order(sizes: Sequence[int], oversample: bool, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(set index, item index) for one epoch. With oversampling every set contributes as many
    items as the largest one, the smaller ones repeating each item (a shuffled tiling)."""
    target = max(sizes) if oversample else None
    order = []
    for s, n in enumerate(sizes):
        if n == 0:
            continue
        count = target or n
        tiles = np.concatenate([rng.permutation(n) for _ in range(math.ceil(count / n))])[:count]
        order += [(s, int(i)) for i in tiles]
    return [order[i] for i in rng.permutation(len(order))]


def _crop_origin(label: np.ndarray, crop: int, rng: np.random.Generator, jitter: int) -> tuple[int, int, int]:
    """A crop corner so the crop holds the kidney's centre, moved by up to ±jitter voxels."""
    coords = np.argwhere(label)
    centre = coords.mean(0) if len(coords) else np.array(label.shape) / 2
    origin = []
    for axis, c in enumerate(centre):
        start = int(round(c - crop / 2)) + int(rng.integers(-jitter, jitter + 1))
        origin.append(min(max(start, 0), label.shape[axis] - crop))
    return tuple(origin)


def make_batch(sets: Sequence[CubeSet], items: Sequence[tuple[int, int]], settings: TrainSettings,
               rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [B, 1, ...] float32 and labels [B, 1, ...] float32, cropped and augmented."""
    images, labels = [], []
    for s, i in items:
        image, label = sets[s].images[i], sets[s].labels[i]
        if settings.crop:
            jitter = int(round(8 * settings.augment))
            z, y, x = _crop_origin(label, settings.crop, rng, jitter)
            c = settings.crop
            image, label = image[z:z + c, y:y + c, x:x + c], label[z:z + c, y:y + c, x:x + c]
        if settings.augment > 0:
            gain = 1 + settings.augment * rng.uniform(-0.15, 0.15)
            offset = settings.augment * rng.uniform(-0.15, 0.15)
            # fine multiplicative noise: residual speckle the fast phantom path smooths away
            speckle = settings.augment * rng.uniform(0.0, 0.25)
            noise = rng.standard_normal(image.shape, dtype=np.float32)
            image = image * (gain * (1 + speckle * noise)) + offset * (image > 0)
        images.append(np.ascontiguousarray(image, dtype=np.float32))
        labels.append(np.ascontiguousarray(label, dtype=np.float32))
    return torch.from_numpy(np.stack(images))[:, None], torch.from_numpy(np.stack(labels))[:, None]


# --- trainable layers -----------------------------------------------------------------------

def set_trainable(network: unet.UNet3D, layers: str) -> int:
    """Freeze all but "all" | "first:N" | "last:N" convolution layers (§3.3.3); return their count."""
    convs = network.conv_layers()
    if layers == "all":
        chosen = convs
    else:
        kind, _, number = layers.partition(":")
        if kind not in ("first", "last") or not number.isdigit() or not 1 <= int(number) <= len(convs):
            raise SegTuneError(f"invalid layers {layers!r}: use all, first:N or last:N with 1 <= N <= {len(convs)}")
        n = int(number)
        chosen = convs[:n] if kind == "first" else convs[-n:]
    for p in network.parameters():
        p.requires_grad_(False)
    for layer in chosen:
        for p in layer.parameters():
            p.requires_grad_(True)
    return len(chosen)


def freeze_batchnorm_of_frozen_layers(network: nn.Module) -> None:
    """Batch norm of frozen layers keeps its running statistics (eval mode) while the rest trains."""
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not module.weight.requires_grad:
            module.eval()


# --- the loop -------------------------------------------------------------------------------

@dataclass
class History:
    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)


def predict(network: nn.Module, images: np.ndarray, device: torch.device, bf16: bool,
            channels_last: bool, batch_size: int = 2) -> np.ndarray:
    """Probabilities [N, D, H, W] for cubes [N, D, H, W]."""
    network.eval()
    out = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))[:, None].to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            out.append(network(x).float()[:, 0].cpu().numpy())
    return np.concatenate(out)


def evaluate(network: nn.Module, cubes: CubeSet, device: torch.device, bf16: bool = False,
             channels_last: bool = False) -> dict:
    """Hard Dice (threshold 0.5) per case, with mean and std, and the soft Dice loss."""
    probabilities = predict(network, cubes.images, device, bf16, channels_last)
    truth = torch.from_numpy(cubes.labels)
    dice = unet.dice_score(torch.from_numpy(probabilities > 0.5), truth).numpy()
    loss = float(unet.dice_loss(torch.from_numpy(probabilities), truth))
    return {"dice_mean": float(dice.mean()), "dice_std": float(dice.std()), "dice": dice.tolist(), "loss": loss}


def train_network(network: nn.Module, train_sets: Sequence[CubeSet], settings: TrainSettings,
                  device: torch.device, validation: Sequence[CubeSet] = (),
                  on_epoch: Callable[[int, History], None] | None = None) -> History:
    """Adam on the Dice loss over the trainable parameters; returns per-epoch losses and times.

    `on_epoch(epoch, history)` runs after each epoch (progress, HPO reporting; it may raise to stop).
    """
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    caps = capabilities(device)
    bf16 = caps["bf16"] if settings.bf16 is None else settings.bf16
    channels_last = caps["channels_last_3d"] if settings.channels_last is None else settings.channels_last
    network.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if channels_last:
        network.to(memory_format=torch.channels_last_3d)
    params = [p for p in network.parameters() if p.requires_grad]
    if not params:
        raise SegTuneError("nothing to train: every parameter is frozen")
    optimiser = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    sizes = [len(s) for s in train_sets]
    history = History()
    started = time.perf_counter()
    for epoch in range(settings.epochs):
        start = time.perf_counter()
        network.train()
        freeze_batchnorm_of_frozen_layers(network)
        order = epoch_order(sizes, settings.oversample, rng)
        losses = []
        for b in range(0, len(order), settings.batch_size):
            x, y = make_batch(train_sets, order[b:b + settings.batch_size], settings, rng)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                probabilities = network(x)
            loss = unet.dice_loss(probabilities, y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.detach())
        history.train_loss.append(float(torch.stack(losses).mean()))
        history.epoch_seconds.append(time.perf_counter() - start)
        if validation:
            scores = [evaluate(network, v, device, bf16, channels_last)["loss"] for v in validation]
            history.validation_loss.append(float(np.mean(scores)))
        if on_epoch is not None:
            on_epoch(epoch, history)
        if settings.time_budget_s is not None and time.perf_counter() - started > settings.time_budget_s:
            break
    network.eval()
    return history


# --- saving ---------------------------------------------------------------------------------

def model_meta(network: nn.Module, *, method: str, settings: TrainSettings, train_sets: Sequence[CubeSet],
               metrics: dict, device: torch.device, history: History, extra: dict | None = None) -> dict:
    architecture = network.architecture() if hasattr(network, "architecture") else network.config.to_dict()
    return {
        "task": inference.TASK,
        "architecture": architecture,
        "preprocessing": {"frame": "canonical RAS, 4 mm isotropic, centred 80^3 cube, normalised",
                          "spacing_mm": 4.0, "size": inference.CUBE_SIZE},
        "method": method,
        "hyperparameters": settings.to_dict(),
        "training_data": fingerprint(train_sets),
        "metrics": metrics,
        "history": asdict(history),
        "parameters": unet.count_parameters(network),
        "seed": settings.seed,
        "run": describe(device),
        **(extra or {}),
    }


def save_network(folder: str | Path, network: nn.Module, meta: dict) -> Path:
    from SegTuneCore.models import save_model

    network = network.to("cpu").to(memory_format=torch.contiguous_format)
    tensors = {k: v.contiguous() for k, v in network.state_dict().items()}
    return save_model(folder, tensors, meta)
