"""The inference form of a trained `UNet3D`: the same function with fewer operations.

- Batch normalisation is folded into the convolution before it (eval statistics), so each
  layer is one convolution with a bias and a ReLU.
- The first convolution after each nearest-neighbour upsampling runs on the low-resolution
  features. Along one axis, a 3-tap kernel (w-, w0, w+) on a 2x-repeated signal reads, at an
  even output, the input taps (i-1, i) with weights (w-, w0 + w+) and, at an odd output, the taps
  (i, i+1) with weights (w- + w0, w+). In 3D that gives 8 parity kernels of 2x2x2 taps, which run
  as one convolution with 8x the output channels on the once-padded low-resolution input. The
  upsampled tensor is never built, and that convolution costs 8 instead of 27 multiply-adds per
  output voxel and channel pair: width 32 at 80^3 drops from 924 to 662 GFLOP.
- The skip connection's part of that convolution runs on the skip at full resolution, and the
  parity outputs are added into its strided views, so the concatenation is never built either.

Plain U-Nets, the U-Net inside geometric and intensity transfer networks, and the template
network's U-Net body take this form; networks with the "fixed convolutions" of Table 3.1, which
act on the upsampled features, keep the trained form (`inference.inference_form`).
"""

from __future__ import annotations

import itertools
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from . import unet

# Rows: for output parity p, the weights of the two low-resolution taps (offsets p-1, p) as
# sums of the three full-resolution taps (offsets -1, 0, +1).
_PARITY_TAPS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]],
                             [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
PARITIES = list(itertools.product((0, 1), repeat=3))  # (pz, py, px), the order of the parity kernels


def fold_batch_norm(block: unet.ConvBlock) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the convolution that equals conv -> batch norm (eval) of `block`."""
    conv, norm = block[0], block[1]
    scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
    weight = conv.weight.double() * scale[:, None, None, None, None]
    bias = norm.bias.double() - norm.running_mean.double() * scale
    return weight, bias


def parity_kernels(weight: torch.Tensor) -> torch.Tensor:
    """[O, I, 3, 3, 3] -> [8·O, I, 2, 2, 2]: the 3x3x3 convolution of a 2x-nearest-upsampled
    input, one 2x2x2 kernel per output parity (in `PARITIES` order)."""
    taps = _PARITY_TAPS.to(weight)
    kernels = [torch.einsum("oiabc,za,yb,xc->oizyx", weight, taps[pz], taps[py], taps[px])
               for pz, py, px in PARITIES]
    return torch.cat(kernels)


class FoldedConv(nn.Module):
    """Convolution with the folded batch norm as its bias, then ReLU."""

    def __init__(self, block: unet.ConvBlock):
        super().__init__()
        weight, bias = fold_batch_norm(block)
        self.weight = nn.Parameter(weight.float(), requires_grad=False)
        self.bias = nn.Parameter(bias.float(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.conv3d(x, self.weight, self.bias, padding=1), inplace=True)


class UpsampledConv(nn.Module):
    """relu(bn(conv(cat[upsample(x), skip]))) without the upsampled tensor or the concatenation."""

    def __init__(self, block: unet.ConvBlock, upsampled_channels: int):
        super().__init__()
        weight, bias = fold_batch_norm(block)
        self.out_channels = weight.shape[0]
        self.low = nn.Parameter(parity_kernels(weight[:, :upsampled_channels]).float(), requires_grad=False)
        self.skip = nn.Parameter(weight[:, upsampled_channels:].float(), requires_grad=False)
        self.bias = nn.Parameter(bias.float(), requires_grad=False)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        out = F.conv3d(skip, self.skip, self.bias, padding=1)
        d, h, w = x.shape[-3:]
        # padding 1 and 2 taps: n + 1 outputs per axis; parity p's output i sits at i + p
        parities = F.conv3d(x, self.low, padding=1).split(self.out_channels, dim=1)
        for (pz, py, px), part in zip(PARITIES, parities):
            out[..., pz::2, py::2, px::2] += part[..., pz:pz + d, py:py + h, px:px + w]
        return F.relu(out, inplace=True)


class InferenceUNet3D(nn.Module):
    """Probabilities of a trained UNet3D in eval mode (no dropout), fewer operations.

    Also takes the template network's U-Net body, which has the same `encoders`, possibly fewer
    `decoders` and perhaps no `head`; `features` gives what that body needs.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        if network.training:
            raise ValueError("the inference form needs the network's eval-mode batch-norm statistics: call .eval() first")
        self.encoders = nn.ModuleList(nn.ModuleList([FoldedConv(a), FoldedConv(b)]) for a, b in network.encoders)
        self.decoders = nn.ModuleList()
        channels = network.encoders[-1][1][0].out_channels
        for first, second in network.decoders:
            self.decoders.append(nn.ModuleList([UpsampledConv(first, channels), FoldedConv(second)]))
            channels = second[0].out_channels
        self.head = None
        if network.head is not None:
            self.head = nn.Conv3d(channels, network.head.out_channels, 1)
            self.head.load_state_dict(network.head.state_dict())
        self.requires_grad_(False)
        self.to(next(network.parameters()).device)

    def features(self, x: torch.Tensor, bottleneck: Callable[[torch.Tensor], torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The lowest level's output and every decoder level's output, full resolution last;
        `bottleneck` (the intensity transfer layer) acts on the lowest level's output."""
        skips = []
        for level, (first, second) in enumerate(self.encoders):
            if level:
                x = F.max_pool3d(x, 2)
            x = second(first(x))
            skips.append(x)
        if bottleneck is not None:
            x = bottleneck(x)
        lowest, outputs = x, []
        for (first, second), skip in zip(self.decoders, reversed(skips[:-1])):
            x = second(first(x, skip))
            outputs.append(x)
        return lowest, outputs

    def forward_logits(self, x: torch.Tensor, bottleneck: Callable[[torch.Tensor], torch.Tensor] | None = None
                       ) -> torch.Tensor:
        return self.head(self.features(x, bottleneck)[1][-1])

    def forward(self, x: torch.Tensor, bottleneck: Callable[[torch.Tensor], torch.Tensor] | None = None
                ) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x, bottleneck).float())
