"""Transfer layers (thesis §3.4) around a frozen adult U-Net.

- Geometric input layer (§3.4.1): a 3-layer ConvNet predicts the 9 parameters of
  G = T·C+·Rz·Ry·Rx·S·C− (transforms.py) from the image; the input is warped by G (trilinear),
  the frozen U-Net segments it, and the probabilities are warped back by G⁻¹.
- Intensity layer (§3.4.2): a 3-layer ConvNet predicts a scale and a bias per feature map of the
  U-Net's lowest level from those feature maps (FiLM, Perez et al. 2018): O_i = k_i·I_i + b_i.
- Fixed convolutions (the "Fixed Convolutions" row of Table 3.1): a 3x3x3 convolution after every
  max-pooling and upsampling, the same for every image; the comparison the thesis rejects.

All start as the identity (zero-initialised heads, Dirac kernels), so a fresh model is exactly
the base network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from . import transforms
from .unet import UNet3D, UNetConfig

ARCHITECTURE = "unet3d-transfer"


def default_predictor_width(base_width: int) -> int:
    """Half the base width (16 for the thesis-sized width 32: ~0.22M added parameters, Table 3.1: 0.27M)."""
    return max(2, base_width // 2)


@dataclass(frozen=True)
class TransferConfig:
    geometric: bool = True
    intensity: bool = True
    fixed_convolutions: bool = False
    predictor_width: int = 16

    def __post_init__(self):
        if not (self.geometric or self.intensity or self.fixed_convolutions):
            raise ValueError("a transfer model needs at least one transfer layer")


def _predictor_trunk(in_channels: int, width: int, strides: tuple[int, int, int]) -> nn.Sequential:
    """Three 3x3x3 convolutions with ReLU, then global average pooling -> [B, 4·width]."""
    layers, channels = [], in_channels
    for i, stride in enumerate(strides):
        out = width * 2 ** min(i, 2)
        layers += [nn.Conv3d(channels, out, 3, stride=stride, padding=1), nn.ReLU(inplace=True)]
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten())


def _zero_linear(in_features: int, out_features: int) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class GeometricInputLayer(nn.Module):
    """Image [B, 1, D, H, W] -> the 9 transform parameters (zeros = identity at initialisation)."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.trunk = _predictor_trunk(1, width, (2, 2, 2))
        self.parameters_head = _zero_linear(4 * width, transforms.N_PARAMETERS)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.parameters_head(self.trunk(image.float()))


class IntensityLayer(nn.Module):
    """FiLM on the bottleneck feature maps: features·(1 + Δk) + b with (Δk, b) predicted, zero at init."""

    def __init__(self, channels: int, width: int = 16):
        super().__init__()
        self.channels = channels
        self.reduce = nn.Conv3d(channels, width, 1)
        self.trunk = nn.Sequential(nn.ReLU(inplace=True), *_predictor_trunk(width, width, (1, 2, 1)))
        self.film_head = _zero_linear(4 * width, 2 * channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        film = self.film_head(self.trunk(self.reduce(features)).float())
        scale = 1 + film[:, : self.channels, None, None, None]
        bias = film[:, self.channels:, None, None, None]
        return (features.float() * scale + bias).to(features.dtype)


def _identity_convolution(channels: int) -> nn.Conv3d:
    conv = nn.Conv3d(channels, channels, 3, padding=1)
    nn.init.dirac_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class TransferUNet(nn.Module):
    """A frozen base U-Net with geometric and/or intensity transfer layers."""

    def __init__(self, base: UNet3D, config: TransferConfig = TransferConfig()):
        super().__init__()
        self.config = config
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.geometric = GeometricInputLayer(config.predictor_width) if config.geometric else None
        self.intensity = IntensityLayer(base.bottleneck_channels, config.predictor_width) if config.intensity else None
        self.fixed = (nn.ModuleList(_identity_convolution(c) for c in base.sampled_channels())
                      if config.fixed_convolutions else None)

    def train(self, mode: bool = True):
        super().train(mode)
        self.base.eval()  # frozen: batch-norm statistics and dropout stay those of the base network
        return self

    def added_modules(self) -> list[nn.Module]:
        return [m for m in (self.geometric, self.intensity, self.fixed) if m is not None]

    def added_parameter_count(self) -> int:
        return sum(p.numel() for m in self.added_modules() for p in m.parameters())

    def transform(self, image: torch.Tensor) -> torch.Tensor:
        """G [B, 4, 4] in voxel coordinates predicted for image (fp32, also under autocast)."""
        params = self.geometric(image)
        with torch.autocast(image.device.type, enabled=False):
            return transforms.matrix_from_parameters(params.float(), transforms.grid_centre(image.shape[2:]))

    def _segment(self, image: torch.Tensor) -> torch.Tensor:
        if self.fixed is None:  # the base may be its inference form, which has no after_sampling
            return self.base(image, bottleneck=self.intensity)
        return self.base(image, bottleneck=self.intensity, after_sampling=lambda index, x: self.fixed[index](x))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.geometric is None:
            return self._segment(image)
        g = self.transform(image)
        with torch.autocast(image.device.type, enabled=False):
            moved = transforms.warp(image.float(), g)
        probabilities = self._segment(moved)
        with torch.autocast(image.device.type, enabled=False):
            return transforms.warp(probabilities.float(), transforms.inverse(g))

    def architecture(self) -> dict:
        return {"name": ARCHITECTURE, "base": self.base.config.to_dict(), **asdict(self.config)}

    @classmethod
    def from_architecture(cls, architecture: dict) -> "TransferUNet":
        config = TransferConfig(**{k: architecture[k] for k in
                                   ("geometric", "intensity", "fixed_convolutions", "predictor_width")})
        return cls(UNet3D(UNetConfig.from_dict(architecture["base"])), config)
