"""The slice classifier family of Table 2.7 (§2.6.2-2.6.3) and its cost estimate.

A config dict describes one member:
  blocks b (1..7), convs_per_block c, filters_log2 r (2^r filters per conv), filter_size s (3|5),
  separable (each s x s conv becomes a 1 x s conv then an s x 1 conv, no activation between),
  fc_units (widths of the fully connected layers; the baseline's are 4096 and 1024), dropout
  (after each fully connected ReLU), batch_norm (after each conv; not in the thesis, off in the
  baseline, it lets small models train in minutes), input_size, classes.
Each block is c x [conv, (batch norm), ReLU] then 2x2 max-pooling; convolutions pad to keep the
size ("same"), so the last feature map is (input_size / 2^b)^2 x 2^r. With b = 1 and 64 filters
the first fully connected layer alone has 64 * 64 * 64 * 4096 = 1.07e9 weights (the thesis's
600M figure comes from its 48 x 48 map): `estimate_cost` finds that from the config alone.
Training settings (learning_rate, batch_size, ...) may live in the same dict; the model ignores them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from SegTuneCore.errors import SegTuneError

from .preprocessing import PREPROCESSING, SIZE
from .regions import REGIONS

TASK = "MRIFieldOfView.slice-classifier"
ARCHITECTURE = "MRIFieldOfView.table27-cnn"

BASELINE_CONFIG: dict[str, Any] = {
    "blocks": 5, "convs_per_block": 1, "filters_log2": 6, "filter_size": 3, "separable": False,
    "fc_units": [4096, 1024], "dropout": 0.0, "batch_norm": False,
    "input_size": SIZE, "classes": len(REGIONS),
    "learning_rate": 1e-3, "batch_size": 8,
}
MODEL_KEYS = ("blocks", "convs_per_block", "filters_log2", "filter_size", "separable", "fc_units",
              "dropout", "batch_norm", "input_size", "classes")
BYTES_PER_VALUE = 4  # fp32


def model_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture part of a config, completed with the baseline's values and checked."""
    merged = {key: config.get(key, BASELINE_CONFIG[key]) for key in MODEL_KEYS}
    merged["blocks"] = int(merged["blocks"])
    merged["convs_per_block"] = int(merged["convs_per_block"])
    merged["filters_log2"] = int(merged["filters_log2"])
    merged["filter_size"] = int(merged["filter_size"])
    merged["separable"] = bool(merged["separable"])
    merged["batch_norm"] = bool(merged["batch_norm"])
    merged["fc_units"] = [int(u) for u in merged["fc_units"]]
    merged["dropout"] = float(merged["dropout"])
    merged["input_size"] = int(merged["input_size"])
    merged["classes"] = int(merged["classes"])
    if merged["blocks"] < 1 or merged["convs_per_block"] < 1:
        raise ValueError("blocks and convs_per_block must be >= 1")
    if not 0 <= merged["filters_log2"] <= 12:
        raise ValueError("filters_log2 must be in [0, 12]")
    if merged["filter_size"] < 1 or merged["filter_size"] % 2 == 0:
        raise ValueError("filter_size must be odd and positive")
    if any(u < 1 for u in merged["fc_units"]) or not 0 <= merged["dropout"] < 1:
        raise ValueError("fc_units must be positive and dropout in [0, 1)")
    if merged["input_size"] >> merged["blocks"] < 1:
        raise ValueError(f"{merged['blocks']} blocks pool a {merged['input_size']}-pixel input below one pixel")
    return merged


def estimate_cost(config: Mapping[str, Any], batch_size: int | None = None) -> dict[str, int]:
    """Parameters and memory of a family member, from the config alone (nothing allocated).

    activation_bytes: fp32 values kept for the backward pass of one training batch (every conv,
    norm, ReLU, pooling and fully connected output, plus the input). training_bytes adds the
    weights, their gradients and the SGD momentum. macs: multiply-accumulates per image forward.
    """
    cfg = model_config(config)
    batch = int(batch_size if batch_size is not None else config.get("batch_size", BASELINE_CONFIG["batch_size"]))
    filters, s, size = 2 ** cfg["filters_log2"], cfg["filter_size"], cfg["input_size"]
    parameters = macs = 0
    values = size * size  # the input
    channels = 1
    for _ in range(cfg["blocks"]):
        for _ in range(cfg["convs_per_block"]):
            if cfg["separable"]:
                layer_params = (channels * filters * s + filters) + (filters * filters * s + filters)
                layer_macs = (channels * filters * s + filters * filters * s) * size * size
                values += 2 * filters * size * size
            else:
                layer_params = channels * filters * s * s + filters
                layer_macs = channels * filters * s * s * size * size
                values += filters * size * size
            if cfg["batch_norm"]:
                layer_params += 2 * filters
                values += filters * size * size
            values += filters * size * size  # ReLU
            parameters += layer_params
            macs += layer_macs
            channels = filters
        size //= 2
        values += channels * size * size  # max-pooling
    features = channels * size * size
    for units in cfg["fc_units"] + [cfg["classes"]]:
        parameters += features * units + units
        macs += features * units
        values += 2 * units  # linear + ReLU (or softmax)
        features = units
    activation_bytes = values * batch * BYTES_PER_VALUE
    weight_bytes = parameters * BYTES_PER_VALUE
    return {
        "parameters": int(parameters),
        "weight_bytes": int(weight_bytes),
        "activation_bytes": int(activation_bytes),
        "training_bytes": int(3 * weight_bytes + activation_bytes),
        "macs": int(macs),
        "feature_map": [int(channels), int(size), int(size)],
        "batch_size": batch,
    }


def check_fits(config: Mapping[str, Any], memory_bytes: int, batch_size: int | None = None) -> dict[str, int]:
    """estimate_cost, or SegTuneError (one line) when training would need more than memory_bytes."""
    cost = estimate_cost(config, batch_size)
    if cost["training_bytes"] > memory_bytes:
        raise SegTuneError(
            f"model too large: {cost['parameters']:,} weights and {cost['training_bytes'] / 2**30:.1f} GiB "
            f"to train, more than the {memory_bytes / 2**30:.1f} GiB allowed")
    return cost


def build_model(config: Mapping[str, Any]):
    """The torch module of a family member (returns raw logits; softmax in predict/loss)."""
    import torch.nn as nn

    cfg = model_config(config)
    filters, s = 2 ** cfg["filters_log2"], cfg["filter_size"]
    layers: list[nn.Module] = []
    channels = 1
    for _ in range(cfg["blocks"]):
        for _ in range(cfg["convs_per_block"]):
            if cfg["separable"]:
                layers += [nn.Conv2d(channels, filters, (1, s), padding=(0, s // 2)),
                           nn.Conv2d(filters, filters, (s, 1), padding=(s // 2, 0))]
            else:
                layers.append(nn.Conv2d(channels, filters, s, padding=s // 2))
            if cfg["batch_norm"]:
                layers.append(nn.BatchNorm2d(filters))
            layers.append(nn.ReLU(inplace=True))
            channels = filters
        layers.append(nn.MaxPool2d(2))
    layers.append(nn.Flatten())
    features = channels * (cfg["input_size"] >> cfg["blocks"]) ** 2
    for units in cfg["fc_units"]:
        layers += [nn.Linear(features, units), nn.ReLU(inplace=True)]
        if cfg["dropout"] > 0:
            layers.append(nn.Dropout(cfg["dropout"]))
        features = units
    layers.append(nn.Linear(features, cfg["classes"]))
    return nn.Sequential(*layers)


class SliceClassifier:
    """A trained classifier: preprocessed slices [N, 128, 128] in, class probabilities [N, 6] out."""

    def __init__(self, model, meta: dict, device) -> None:
        self.model = model
        self.meta = meta
        self.device = device
        self.config = model_config(meta["architecture"]["config"])

    @classmethod
    def load(cls, source, device="cpu") -> "SliceClassifier":
        """source: a ModelEntry (anything with .path) or a model folder."""
        import torch
        from SegTuneCore.models import load_model

        folder = Path(getattr(source, "path", source))
        tensors, meta = load_model(folder, task=TASK, architecture=ARCHITECTURE)
        preprocessing = meta.get("preprocessing", {})
        if preprocessing.get("name") != PREPROCESSING["name"] or preprocessing.get("version") != PREPROCESSING["version"]:
            raise SegTuneError(f"{folder}: model expects preprocessing {preprocessing}, this version provides {PREPROCESSING}")
        if list(meta.get("classes", REGIONS)) != list(REGIONS):
            raise SegTuneError(f"{folder}: model classes {meta.get('classes')} differ from {list(REGIONS)}")
        device = torch.device(device)
        model = build_model(meta["architecture"]["config"])
        try:
            model.load_state_dict({name: tensor for name, tensor in tensors.items()}, strict=True)
        except RuntimeError as exc:
            raise SegTuneError(f"{folder}: weights do not match the architecture ({str(exc).splitlines()[0]})") from None
        model.to(device).eval()
        return cls(model, meta, device)

    def predict(self, images: np.ndarray, batch_size: int = 64, bf16: bool = False) -> np.ndarray:
        """Softmax probabilities float32 [N, classes] for preprocessed images [N, H, W]."""
        import torch

        images = np.asarray(images, dtype=np.float32)
        size = self.config["input_size"]
        if images.ndim != 3 or images.shape[1:] != (size, size):
            raise SegTuneError(f"expected images of shape [N, {size}, {size}], got {images.shape}")
        out = np.empty((len(images), self.config["classes"]), dtype=np.float32)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            for start in range(0, len(images), batch_size):
                batch = torch.from_numpy(images[start:start + batch_size])[:, None].to(self.device)
                logits = self.model(batch).float()
                out[start:start + batch_size] = torch.softmax(logits, dim=1).cpu().numpy()
        return out
