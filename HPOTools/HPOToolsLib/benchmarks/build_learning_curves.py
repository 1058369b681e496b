"""Build the learning-curve table: a small CNN family (after the thesis's Table 2.7) on scikit-learn's digits.

Every configuration is trained for `--epochs` epochs and its validation loss is recorded after each
epoch, so the table serves both the replay benchmark (final losses, §2.4.3) and the Hyperband
benchmark (budget = epochs, §2.5). Configurations are drawn without replacement from a finite
grid with a fixed seed; each one is trained with its own seed, so an entry does not depend on
which other entries were built. The output is JSON (no pickle) and is rewritten atomically every
few configurations, so an interrupted build resumes where it stopped.

    nice -n 10 python -m HPOToolsLib.benchmarks.build_learning_curves \
        --output HPOTools/HPOToolsLib/data/digits_cnn_curves.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

# The search space: architecture (blocks, conv layers per block, filters, filter size) and
# training (learning rate, batch size), like Table 2.7 scaled to 8x8 images (3 poolings at most).
SPACE = {
    "blocks": [1, 2, 3],
    "convs_per_block": [1, 2, 3],
    "filters": [4, 8, 16, 32],
    "filter_size": [3, 5],
    "learning_rate": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
    "batch_size": [16, 32, 64, 128],
}
HIDDEN_UNITS = 64
VALIDATION_FRACTION = 1 / 3
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "data" / "digits_cnn_curves.json"


def grid() -> list[dict]:
    names = list(SPACE)
    return [dict(zip(names, values)) for values in itertools.product(*(SPACE[n] for n in names))]


def load_split(seed: int):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # N x 1 x 8 x 8, in [0, 1]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_val = int(round(len(labels) * VALIDATION_FRACTION))
    val, train = order[:n_val], order[n_val:]
    return images[train], labels[train], images[val], labels[val]


def build_model(config: dict):
    import torch.nn as nn

    layers, channels, size = [], 1, 8
    for _ in range(config["blocks"]):
        for _ in range(config["convs_per_block"]):
            layers += [nn.Conv2d(channels, config["filters"], config["filter_size"],
                                 padding=config["filter_size"] // 2), nn.ReLU()]
            channels = config["filters"]
        layers.append(nn.MaxPool2d(2))
        size //= 2
    layers += [nn.Flatten(), nn.Linear(channels * size * size, HIDDEN_UNITS), nn.ReLU(),
               nn.Linear(HIDDEN_UNITS, 10)]
    return nn.Sequential(*layers)


def train_curve(config: dict, data, epochs: int, seed: int) -> tuple[list[float | None], list[float], float]:
    """Validation loss and accuracy after each epoch (None once the loss is not finite), seconds."""
    import torch
    import torch.nn.functional as F

    x_train, y_train, x_val, y_val = (torch.from_numpy(a) for a in data)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    losses: list[float | None] = []
    accuracies: list[float] = []
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        for begin in range(0, len(order), config["batch_size"]):
            batch = order[begin:begin + config["batch_size"]]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            loss = float(F.cross_entropy(logits, y_val))
            accuracy = float((logits.argmax(1) == y_val).float().mean())
        if not math.isfinite(loss):
            # Diverged: the remaining epochs cannot recover, record them as missing.
            losses += [None] * (epochs - len(losses))
            accuracies += [0.1] * (epochs - len(accuracies))
            break
        losses.append(round(loss, 6))
        accuracies.append(round(accuracy, 6))
    return losses, accuracies, time.perf_counter() - start


def write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, separators=(",", ":")))
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--n-configs", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=27)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0,
                        help="train configurations start..n-configs-1 only (a part built by a second process)")
    parser.add_argument("--merge", type=Path, nargs="*", default=[],
                        help="append these parts (built with --start) to --output, then continue")
    args = parser.parse_args(argv)

    import sklearn
    import torch

    torch.set_num_threads(1)
    configs = [grid()[i] for i in np.random.default_rng(args.seed).permutation(len(grid()))[:args.n_configs]]
    data = load_split(args.seed)
    table = {
        "format": 1,
        "description": "Validation cross-entropy after every epoch of a CNN family on sklearn digits",
        "space": SPACE,
        "epochs": args.epochs,
        "seed": args.seed,
        "split": {"train": int(len(data[1])), "validation": int(len(data[3]))},
        "optimizer": "Adam",
        "hidden_units": HIDDEN_UNITS,
        "command": "python -m HPOToolsLib.benchmarks.build_learning_curves " + " ".join(sys.argv[1:] if argv is None else argv),
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "sklearn": sklearn.__version__,
                     "python": platform.python_version()},
        "device": f"cpu ({platform.processor() or platform.machine()}), 1 thread",
        "configs": [],
    }
    table["first_index"] = args.start
    if args.output.exists():
        previous = json.loads(args.output.read_text())
        if previous.get("seed") == args.seed and previous.get("epochs") == args.epochs:
            table["configs"] = previous["configs"]
            table["build_seconds"] = previous.get("build_seconds", 0)
    for part_path in args.merge:
        part = json.loads(part_path.read_text())
        if (part.get("seed"), part.get("epochs")) != (args.seed, args.epochs):
            raise ValueError(f"{part_path}: built with another seed or number of epochs")
        have = args.start + len(table["configs"])
        entries = part["configs"][max(0, have - part["first_index"]):]
        if part["first_index"] > have:
            raise ValueError(f"{part_path}: starts at configuration {part['first_index']}, the table has {have}")
        table["configs"] += entries
        table["build_seconds"] = round(table.get("build_seconds", 0) + part.get("build_seconds", 0), 1)
    if args.merge:
        write_json(args.output, table)
    started = time.perf_counter()
    for index in range(args.start + len(table["configs"]), len(configs)):
        losses, accuracies, seconds = train_curve(configs[index], data, args.epochs, seed=args.seed * 100003 + index)
        table["configs"].append({"params": configs[index], "val_loss": losses, "val_accuracy": accuracies,
                                 "train_seconds": round(seconds, 3)})
        if index % 10 == 9 or index == len(configs) - 1:
            table["build_seconds"] = round(table.get("build_seconds", 0) + time.perf_counter() - started, 1)
            started = time.perf_counter()
            write_json(args.output, table)
            print(f"{index + 1}/{len(configs)} configurations, {table['build_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
