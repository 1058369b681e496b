"""Çiçek-style 3D U-Net (thesis §3.3.1) and the Dice loss.

Level l (0 = full resolution) of the analysis path has two 3x3x3 convolutions with
width·2^l and width·2^(l+1) filters (Çiçek et al. 2016 double the filters before each
max-pooling); the synthesis path upsamples (nearest neighbour, no parameters, as Keras'
UpSampling3D the thesis used), concatenates the skip connection and applies two convolutions
with width·2^(l+1) filters. Every convolution is followed by batch normalisation and ReLU;
spatial dropout (`Dropout3d`) closes each convolution-sampling block (§3.3.1). With 4 levels
and width 32 the network has 16.3M parameters (the thesis' Table 3.1 says 16M).

The convolutions are numbered in data order (`conv_layers()`): with 4 levels, 8 analysis
convolutions, then 6 synthesis convolutions and the final 1x1x1 — "the first 8" and "the
last 7" layers of §3.3.3 are those before and after the first upsampling.

`forward_logits` takes optional callables that transfer layers (§3.4) plug in without changing the
network: `bottleneck(features)` on the lowest level's output (the intensity layer) and
`after_sampling(index, features)` after each max-pooling and each upsampling (the "fixed
convolutions" of Table 3.1; indices 0..levels-2 going down, then levels-1.. going up).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

ARCHITECTURE = "unet3d"


@dataclass(frozen=True)
class UNetConfig:
    width: int = 32
    levels: int = 4
    dropout: float = 0.1
    in_channels: int = 1
    out_channels: int = 1

    def __post_init__(self):
        if self.width < 1 or self.levels < 2 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"invalid U-Net configuration {self}")

    def to_dict(self) -> dict:
        return {"name": ARCHITECTURE, **asdict(self)}

    @classmethod
    def from_dict(cls, architecture: dict) -> "UNetConfig":
        fields = {k: architecture[k] for k in ("width", "levels", "dropout", "in_channels", "out_channels")
                  if k in architecture}
        return cls(**fields)

    def conv_channels(self) -> list[tuple[int, int]]:
        """(in, out) channels of every 3x3x3 convolution in data order."""
        w, convs, channels = self.width, [], self.in_channels
        for level in range(self.levels):
            convs += [(channels, w * 2 ** level), (w * 2 ** level, w * 2 ** (level + 1))]
            channels = w * 2 ** (level + 1)
        for level in reversed(range(self.levels - 1)):
            out = w * 2 ** (level + 1)
            convs += [(channels + out, out), (out, out)]
            channels = out
        return convs

    def parameter_count(self) -> int:
        """Parameters without building the network (3x3x3 convs without bias + batch norm, 1x1x1 head)."""
        convs = self.conv_channels()
        return sum(27 * a * b + 2 * b for a, b in convs) + (convs[-1][1] + 1) * self.out_channels

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of this (one halving per level below the top)."""
        return 2 ** (self.levels - 1)


class ConvBlock(nn.Sequential):
    """3x3x3 convolution, batch normalisation, ReLU: one "layer" in the §3.3.3 numbering."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet3D(nn.Module):
    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        w, n = config.width, config.levels
        self.encoders = nn.ModuleList()
        in_ch = config.in_channels
        for level in range(n):
            mid, out = w * 2 ** level, w * 2 ** (level + 1)
            self.encoders.append(nn.ModuleList([ConvBlock(in_ch, mid), ConvBlock(mid, out)]))
            in_ch = out
        self.decoders = nn.ModuleList()
        for level in reversed(range(n - 1)):
            skip, out = w * 2 ** (level + 1), w * 2 ** (level + 1)
            self.decoders.append(nn.ModuleList([ConvBlock(in_ch + skip, out), ConvBlock(out, out)]))
            in_ch = out
        self.head = nn.Conv3d(in_ch, config.out_channels, 1)
        self.dropout = nn.Dropout3d(config.dropout)

    @property
    def bottleneck_channels(self) -> int:
        return self.config.width * 2 ** self.config.levels

    def sampled_channels(self) -> list[int]:
        """Channels of the features after each max-pooling, then after each upsampling."""
        w, n = self.config.width, self.config.levels
        return [w * 2 ** level for level in range(1, n)] + [w * 2 ** level for level in range(n, 1, -1)]

    def conv_layers(self) -> list[nn.Module]:
        """Every convolution layer in data order (the layer index of §3.3.3 / Fig. 3.7)."""
        layers = [block for level in self.encoders for block in level]
        layers += [block for level in self.decoders for block in level]
        return layers + [self.head]

    def forward_logits(self, x: torch.Tensor,
                       bottleneck: Callable[[torch.Tensor], torch.Tensor] | None = None,
                       after_sampling: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        skips = []
        sampling = 0
        for level, (first, second) in enumerate(self.encoders):
            if level:
                x = F.max_pool3d(x, 2)
                if after_sampling is not None:
                    x = after_sampling(sampling, x)
                sampling += 1
            x = self.dropout(second(first(x)))
            skips.append(x)
        if bottleneck is not None:
            x = bottleneck(x)
        for (first, second), skip in zip(self.decoders, reversed(skips[:-1])):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            if after_sampling is not None:
                x = after_sampling(sampling, x)
            sampling += 1
            x = self.dropout(second(first(torch.cat([x, skip], dim=1))))
        return self.head(x)

    def forward(self, x: torch.Tensor, **hooks) -> torch.Tensor:
        """Probabilities (sigmoid of the logits), the quantity the Dice loss compares."""
        return torch.sigmoid(self.forward_logits(x, **hooks).float())


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def dice_loss(probabilities: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """1 - soft Dice (eq. 3.1) per sample, averaged over the batch; sums in fp32."""
    p = probabilities.float().flatten(1)
    y = target.float().flatten(1)
    dice = (2 * (p * y).sum(1) + eps) / (p.sum(1) + y.sum(1) + eps)
    return 1 - dice.mean()


def dice_score(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard Dice per sample of binary masks (1 when both are empty)."""
    p = prediction.bool().flatten(1)
    y = target.bool().flatten(1)
    inter = (p & y).sum(1).double()
    total = (p.sum(1) + y.sum(1)).double()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))
