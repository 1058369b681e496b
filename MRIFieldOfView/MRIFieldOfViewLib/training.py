"""Training and evaluation of the slice classifier (§2.6.2): class-weighted cross entropy, SGD
with Nesterov momentum (0.9) and the Keras-style decay lr / (1 + decay * step) of the thesis,
augmented random draws from the training slices each epoch, validation loss per epoch.

Needs only torch and numpy (phantom data sets are generated in memory).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .classifier import ARCHITECTURE, TASK, build_model, estimate_cost, model_config
from .dataset import EMPTY, SliceSet, augment, class_weights
from .preprocessing import PREPROCESSING
from .regions import REGIONS

MOMENTUM = 0.9
DECAY = 1e-6


@dataclass
class TrainingResult:
    model: object
    history: list[dict] = field(default_factory=list)
    class_weights: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False


def soft_targets(labels, classes: int):
    """One-hot rows for labels, uniform rows for EMPTY slices."""
    import torch

    targets = torch.full((len(labels), classes), 1.0 / classes, device=labels.device)
    known = labels != EMPTY
    targets[known] = torch.nn.functional.one_hot(labels[known], classes).float()
    return targets


def weighted_cross_entropy(logits, labels, weights):
    """sum_i sum_c w_c t_ic (-log p_ic) / sum_i sum_c w_c t_ic, with t the soft targets.

    For hard labels this equals torch's cross_entropy(weight=w, reduction="mean").
    """
    import torch

    targets = soft_targets(labels, logits.shape[1]) * weights[None, :]
    log_probs = torch.log_softmax(logits.float(), dim=1)
    return -(targets * log_probs).sum() / targets.sum()


def _batches(count: int, batch_size: int):
    for start in range(0, count, batch_size):
        yield slice(start, min(count, start + batch_size))


def evaluate(model, data: SliceSet, device, weights=None, batch_size: int = 128, bf16: bool = False) -> dict:
    """Loss (class-weighted), slice accuracy and confusion matrix (counts, rows = truth) on a set.

    Accuracy and confusion count only slices with a region (empty slices have no right answer);
    the loss includes them (their target is uniform).
    """
    import torch

    classes = len(REGIONS)
    weights_t = torch.as_tensor(np.ones(classes) if weights is None else weights, dtype=torch.float32, device=device)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    loss_sum = weight_sum = 0.0
    probabilities = np.zeros((len(data), classes), dtype=np.float32)
    was_training = model.training
    model.eval()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for batch in _batches(len(data), batch_size):
            images = torch.from_numpy(data.float_images(batch))[:, None].to(device)
            labels = torch.from_numpy(data.labels[batch]).to(device)
            logits = model(images).float()
            targets = soft_targets(labels, classes) * weights_t[None, :]
            loss_sum += float(-(targets * torch.log_softmax(logits, 1)).sum())
            weight_sum += float(targets.sum())
            probabilities[batch] = torch.softmax(logits, 1).cpu().numpy()
    model.train(was_training)
    truth = data.labels
    predicted = probabilities.argmax(1)
    known = truth != EMPTY
    np.add.at(confusion, (truth[known], predicted[known]), 1)
    return {
        "loss": loss_sum / max(weight_sum, 1e-12),
        "accuracy": float((predicted[known] == truth[known]).mean()) if known.any() else float("nan"),
        "slices": int(known.sum()),
        "confusion": confusion.tolist(),
    }


def train(config: dict, train_set: SliceSet, validation_set: SliceSet | None, *, epochs: int,
          samples_per_epoch: int, seed: int, device, bf16: bool = False,
          on_step: Callable[[float, str], None] | None = None,
          on_epoch: Callable[[dict], bool | None] | None = None,
          time_limit_s: float | None = None, initial_state: dict | None = None) -> TrainingResult:
    """Train a family member (fresh, or from `initial_state`, a state dict of the same
    architecture: fine-tuning); `on_epoch(entry)` returning False stops early."""
    import torch

    if len(train_set) == 0:
        raise ValueError("the training set is empty")
    torch.manual_seed(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    sampler = np.random.default_rng([seed, 3])
    cfg = model_config(config)
    batch_size = int(config.get("batch_size", 8))
    learning_rate = float(config.get("learning_rate", 1e-3))
    model = build_model(cfg)
    if initial_state is not None:
        model.load_state_dict(initial_state, strict=True)
    model.to(device)
    weights = class_weights(train_set.labels)
    weights_t = torch.as_tensor(weights, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=MOMENTUM, nesterov=True,
                                weight_decay=float(config.get("weight_decay", 0.0)))
    decay = float(config.get("decay", DECAY))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1.0 + decay * step))
    steps_per_epoch = max(1, samples_per_epoch // batch_size)
    result = TrainingResult(model=model, class_weights=weights.tolist())
    start = time.perf_counter()
    model.train()
    for epoch in range(1, epochs + 1):
        running = 0.0
        for step in range(steps_per_epoch):
            indices = sampler.integers(0, len(train_set), batch_size)
            images = torch.from_numpy(train_set.float_images(indices))[:, None].to(device)
            labels = torch.from_numpy(train_set.labels[indices]).to(device)
            images = augment(images, generator)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(images)
            loss = weighted_cross_entropy(logits, labels, weights_t)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training diverged (loss {loss.item()}) at epoch {epoch}, step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item()
            if on_step and (step % 10 == 0 or step == steps_per_epoch - 1):
                on_step(((epoch - 1) * steps_per_epoch + step + 1) / (epochs * steps_per_epoch),
                        f"epoch {epoch}/{epochs} loss {running / (step + 1):.3f}")
        entry = {"epoch": epoch, "train_loss": running / steps_per_epoch,
                 "seconds": time.perf_counter() - start}
        if validation_set is not None and len(validation_set):
            metrics = evaluate(model, validation_set, device, weights, bf16=bf16)
            entry.update(validation_loss=metrics["loss"], validation_accuracy=metrics["accuracy"])
        result.history.append(entry)
        if on_epoch and on_epoch(entry) is False:
            result.stopped_early = True
            break
        if time_limit_s is not None and time.perf_counter() - start > time_limit_s and epoch < epochs:
            result.stopped_early = True
            break
    result.seconds = time.perf_counter() - start
    model.eval()
    return result


def model_meta(config: dict, result: TrainingResult, *, seed: int, data: dict, metrics: dict,
               training: dict, device_record: dict) -> dict:
    """model.json content for SegTuneCore.models.save_model."""
    cfg = model_config(config)
    return {
        "task": TASK,
        "architecture": {"name": ARCHITECTURE, "config": cfg},
        "classes": list(REGIONS),
        "preprocessing": dict(PREPROCESSING),
        "hyperparameters": {"learning_rate": float(config.get("learning_rate", 1e-3)),
                            "batch_size": int(config.get("batch_size", 8)), "momentum": MOMENTUM,
                            "nesterov": True, "decay": float(config.get("decay", DECAY)),
                            "weight_decay": float(config.get("weight_decay", 0.0)), **training},
        "cost": estimate_cost(cfg, int(config.get("batch_size", 8))),
        "class_weights": result.class_weights,
        "history": result.history,
        "metrics": metrics,
        "seed": seed,
        "data": data,
        "device": device_record,
        "training_seconds": round(result.seconds, 1),
    }


def save_trained(folder, result: TrainingResult, meta: dict):
    from SegTuneCore.models import save_model

    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in result.model.state_dict().items()}
    return save_model(folder, tensors, meta)


def confusion_table(confusion) -> str:
    """Row-normalised confusion matrix in percent, laid out like Table 2.6 (thesis order)."""
    order = ["head", "chest", "abdomen", "pelvis", "legs", "spine"]
    index = [REGIONS.index(name) for name in order]
    matrix = np.asarray(confusion, dtype=np.float64)[np.ix_(index, index)]
    lines = ["Actual \\ Predicted " + "".join(f"{name:>9}" for name in order)]
    for name, row in zip(order, matrix):
        total = row.sum()
        cells = "".join(f"{(100 * v / total if total else float('nan')):9.0f}" for v in row)
        lines.append(f"{name:<19}{cells}   ({int(total)} slices)")
    return "\n".join(lines)
