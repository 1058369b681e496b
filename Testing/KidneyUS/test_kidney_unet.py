"""The 3D U-Net (thesis §3.3.1): size, layer numbering, Dice loss, reduced precision."""

import numpy as np
import pytest
import torch

from KidneyUSLib import unet
from KidneyUSLib.bench import conv_flops

torch.set_num_threads(1)  # 2 shared cores: extra threads only wait on each other


def _expected_parameters(width: int, levels: int = 4) -> int:
    """Çiçek et al. 2016 by hand: (c_in, c_out) of every 3x3x3 conv; BN adds 2 per channel."""
    convs, channels = [], 1
    for level in range(levels):
        convs += [(channels, width * 2 ** level), (width * 2 ** level, width * 2 ** (level + 1))]
        channels = width * 2 ** (level + 1)
    for level in reversed(range(levels - 1)):
        skip = width * 2 ** (level + 1)
        convs += [(channels + skip, skip), (skip, skip)]
        channels = skip
    convolutions = sum(27 * a * b + 2 * b for a, b in convs)  # no conv bias (batch norm follows)
    return convolutions + channels + 1  # 1x1x1 head with bias


def test_width_32_has_about_16_million_parameters():
    network = unet.UNet3D(unet.UNetConfig(width=32))
    count = unet.count_parameters(network)
    assert count == _expected_parameters(32) == network.config.parameter_count()
    assert 15e6 <= count <= 17e6  # the thesis' Table 3.1: 16M


@pytest.mark.parametrize("width,levels", [(4, 4), (6, 3)])
def test_parameter_formula_holds_for_other_shapes(width, levels):
    network = unet.UNet3D(unet.UNetConfig(width=width, levels=levels))
    assert unet.count_parameters(network) == _expected_parameters(width, levels) == network.config.parameter_count()


def test_conv_layers_are_numbered_as_in_section_3_3_3():
    network = unet.UNet3D(unet.UNetConfig(width=2))
    layers = network.conv_layers()
    assert len(layers) == 15  # "the first 8" + "the last 7"
    assert all(layer in [b for level in network.encoders for b in level] for layer in layers[:8])
    assert layers[-1] is network.head


def test_forward_gives_probabilities_of_the_input_shape():
    torch.manual_seed(0)
    network = unet.UNet3D(unet.UNetConfig(width=4)).eval()
    x = torch.randn(2, 1, 16, 24, 32)
    with torch.no_grad():
        y = network(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert (y >= 0).all() and (y <= 1).all()


def test_bf16_channels_last_stays_close_to_fp32():
    torch.manual_seed(0)
    network = unet.UNet3D(unet.UNetConfig(width=4)).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        reference = network(x)
        fast = network.to(memory_format=torch.channels_last_3d)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reduced = fast(x.contiguous(memory_format=torch.channels_last_3d))
    assert reduced.dtype == torch.float32
    assert (reduced - reference).abs().max() < 0.05


def test_dice_loss_matches_numpy():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=(3, 1, 5, 6, 7)).astype(np.float32)
    y = (rng.uniform(size=p.shape) > 0.6).astype(np.float32)
    expected = np.mean([1 - 2 * (p[i] * y[i]).sum() / (p[i].sum() + y[i].sum()) for i in range(3)])
    loss = unet.dice_loss(torch.from_numpy(p), torch.from_numpy(y))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_dice_loss_sums_in_fp32_for_bf16_inputs():
    p = torch.full((1, 1, 64, 64, 64), 0.5, dtype=torch.bfloat16)
    y = torch.ones_like(p)
    # 2·0.5·N / (0.5·N + N) = 2/3: a bf16 sum of 262144 halves would be far off
    assert unet.dice_loss(p, y).item() == pytest.approx(1 / 3, abs=1e-6)


def test_dice_score_of_masks():
    a = torch.zeros(2, 1, 4, 4, 4, dtype=torch.bool)
    b = torch.zeros_like(a)
    a[0, 0, :2] = True
    b[0, 0, :1] = True
    np.testing.assert_allclose(unet.dice_score(a, b).numpy(), [2 * 16 / (32 + 16), 1.0])


def _expected_flops(w: int, side: int = 80) -> int:
    """2·voxels·c_in·c_out·27 per 3x3x3 conv (levels at side, side/2, ...), plus the 1x1x1 head."""
    flops, channels = 0, 1
    for level in range(4):
        voxels = (side >> level) ** 3
        for a, b in ((channels, w * 2 ** level), (w * 2 ** level, w * 2 ** (level + 1))):
            flops += 2 * voxels * a * b * 27
        channels = w * 2 ** (level + 1)
    for level in (2, 1, 0):
        skip = w * 2 ** (level + 1)
        flops += 2 * (side >> level) ** 3 * 27 * ((channels + skip) * skip + skip * skip)
        channels = skip
    return flops + 2 * side ** 3 * channels


def test_conv_flops_counts_every_convolution_that_runs():
    small = unet.UNet3D(unet.UNetConfig(width=2)).eval()
    assert conv_flops(small, (80, 80, 80)) == _expected_flops(2)
    assert 900e9 < _expected_flops(32) < 950e9  # width 32 at 80^3: the H100 floor is ~0.94 ms
