"""Load a KidneyUS segmentation network from the model store and run it on 80^3 cubes.

`load_segmenter(entry_or_folder, device)` verifies the model (checksum, task) through
SegTuneCore.models before any tensor is used, rebuilds the architecture named in model.json
(a U-Net or a U-Net with transfer layers) and returns a `Segmenter`: cube -> probabilities.
The U-Net runs in its inference form where that is exact (`inference_form`, `unet_inference`:
same function, 1.7-2.2x faster on the CPU). bf16 autocast and channels_last_3d are used where
SegTuneCore.device says they pay off.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from SegTuneCore.device import capabilities, select_device
from SegTuneCore.errors import SegTuneError
from SegTuneCore.models import load_model

from . import transfer, unet
from .unet_inference import InferenceUNet3D

TASK = "KidneyUS.segmentation"
CUBE_SIZE = 80


def build_network(architecture: dict) -> nn.Module:
    name = architecture.get("name")
    if name == unet.ARCHITECTURE:
        return unet.UNet3D(unet.UNetConfig.from_dict(architecture))
    if name == transfer.ARCHITECTURE:
        return transfer.TransferUNet.from_architecture(architecture)
    raise SegTuneError(f"unknown KidneyUS architecture {name!r} (expected {unet.ARCHITECTURE} or {transfer.ARCHITECTURE})")


def load_network(entry_or_folder, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """The verified network in eval mode on device, and its model.json metadata."""
    folder = Path(getattr(entry_or_folder, "path", entry_or_folder))
    tensors, meta = load_model(folder, task=TASK)
    network = build_network(meta["architecture"])
    try:
        network.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise SegTuneError(f"{folder}: weights do not match the architecture in model.json ({str(exc).splitlines()[0]})") from None
    return network.to(device).eval(), meta


def inference_form(network: nn.Module) -> nn.Module:
    """The eval-mode network with its U-Net as `InferenceUNet3D` where that is exact: plain U-Nets
    and transfer networks without fixed convolutions (those act on the upsampled features). A
    transfer network gets the new base in place."""
    if isinstance(network, unet.UNet3D):
        return InferenceUNet3D(network)
    if isinstance(network, transfer.TransferUNet) and network.fixed is None:
        network.base = InferenceUNet3D(network.base)
    return network


class Segmenter:
    """cube [80, 80, 80] float32 (the network frame) -> probability cube [80, 80, 80] float32."""

    def __init__(self, network: nn.Module, meta: dict, device: torch.device,
                 bf16: bool | None = None, channels_last: bool | None = None):
        caps = capabilities(device)
        self.network = network
        self.meta = meta
        self.device = device
        self.bf16 = caps["bf16"] if bf16 is None else bf16
        self.channels_last = caps["channels_last_3d"] if channels_last is None else channels_last
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last_3d)

    @property
    def precision(self) -> str:
        return ("bf16" if self.bf16 else "fp32") + ("+channels_last_3d" if self.channels_last else "")

    def predict(self, cubes: torch.Tensor) -> torch.Tensor:
        """[B, 1, D, H, W] -> probabilities [B, 1, D, H, W] float32, on the segmenter's device."""
        x = cubes.to(self.device, torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.network(x).float().contiguous()

    def __call__(self, cube: np.ndarray) -> np.ndarray:
        cube = np.asarray(cube)
        if cube.ndim != 3:
            raise SegTuneError(f"the network takes a 3D cube, got shape {cube.shape}")
        divisor = 2 ** (self._levels() - 1)
        if any(n % divisor for n in cube.shape):
            raise SegTuneError(f"cube sides must be multiples of {divisor}, got {cube.shape}")
        if not np.isfinite(cube).all():
            raise SegTuneError("the cube contains NaN or infinite values")
        x = torch.from_numpy(np.ascontiguousarray(cube, dtype=np.float32))[None, None]
        return self.predict(x)[0, 0].cpu().numpy()

    def _levels(self) -> int:
        arch = self.meta["architecture"]
        return (arch.get("base") or arch)["levels"]


def load_segmenter(entry_or_folder, device: torch.device | str = "auto") -> Segmenter:
    """entry_or_folder: a SegTuneCore.models.ModelEntry or a model folder path."""
    if isinstance(device, str):
        device = select_device(device)
    if not isinstance(entry_or_folder, (str, os.PathLike)) and not hasattr(entry_or_folder, "path"):
        raise SegTuneError(f"not a model: {entry_or_folder!r}")
    network, meta = load_network(entry_or_folder, device)
    return Segmenter(inference_form(network), meta, device)
