"""The inference form of the U-Net (KidneyUSLib.unet_inference) against the network as trained."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from KidneyUSLib import unet, unet_inference
from KidneyUSLib.bench import conv_flops

torch.set_num_threads(1)


def _randomise_batch_norms(network: torch.nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, as training leaves them."""
    with torch.no_grad():
        for m in network.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.3, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)


def _trained_like(config: unet.UNetConfig, seed: int = 0) -> unet.UNet3D:
    torch.manual_seed(seed)
    network = unet.UNet3D(config)
    _randomise_batch_norms(network)
    with torch.no_grad():
        network.head.weight.mul_(10)  # logits of order 1, so agreement below is not two near-zeros
    return network.eval()


def test_parity_taps_equal_a_convolution_of_the_repeated_signal_in_1d():
    """numpy only: a zero-padded 3-tap correlation of np.repeat(s, 2) against the two-tap rule."""
    rng = np.random.default_rng(0)
    s, w = rng.normal(size=9), rng.normal(size=3)
    up = np.pad(np.repeat(s, 2), 1)
    direct = np.array([w @ up[o:o + 3] for o in range(2 * len(s))])
    padded = np.pad(s, 1)
    even = [w[0] * padded[i] + (w[1] + w[2]) * padded[i + 1] for i in range(len(s))]
    odd = [(w[0] + w[1]) * padded[i + 1] + w[2] * padded[i + 2] for i in range(len(s))]
    np.testing.assert_allclose(direct[0::2], even, atol=1e-12)
    np.testing.assert_allclose(direct[1::2], odd, atol=1e-12)
    taps = unet_inference._PARITY_TAPS.numpy()
    np.testing.assert_allclose(taps[0] @ w, [w[0], w[1] + w[2]])
    np.testing.assert_allclose(taps[1] @ w, [w[0] + w[1], w[2]])


def test_folded_batch_norm_equals_convolution_then_batch_norm():
    block = _trained_like(unet.UNetConfig(width=3, levels=2)).encoders[0][1]
    x = torch.randn(2, 3, 6, 5, 7, dtype=torch.float64)
    block = block.double()
    weight, bias = unet_inference.fold_batch_norm(block)
    with torch.no_grad():
        expected = block[1](block[0](x))
    torch.testing.assert_close(F.conv3d(x, weight, bias, padding=1), expected, rtol=1e-12, atol=1e-12)


def test_upsampled_convolution_equals_upsample_concatenate_convolve():
    network = _trained_like(unet.UNetConfig(width=2, levels=2))
    block = network.decoders[0][0]  # in: 8 upsampled + 4 skip channels
    layer = unet_inference.UpsampledConv(block, upsampled_channels=8)
    x, skip = torch.randn(2, 8, 3, 4, 5), torch.randn(2, 4, 6, 8, 10)
    with torch.no_grad():
        expected = block(torch.cat([F.interpolate(x, scale_factor=2, mode="nearest"), skip], dim=1))
        got = layer(x, skip)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("levels, shape", [(2, (6, 4, 10)), (3, (8, 12, 16)), (4, (16, 24, 8))])
def test_inference_form_computes_the_trained_networks_probabilities(levels, shape):
    network = _trained_like(unet.UNetConfig(width=3, levels=levels), seed=levels)
    fast = unet_inference.InferenceUNet3D(network)
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        expected_logits = network.forward_logits(x)
        torch.testing.assert_close(fast.forward_logits(x), expected_logits, rtol=0, atol=1e-4)
        torch.testing.assert_close(fast(x), network(x), rtol=0, atol=3e-5)
        assert expected_logits.std() > 0.1
        channels_last = fast.to(memory_format=torch.channels_last_3d)
        xc = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = channels_last(xc)
    assert (bf16 - network(x)).abs().max() < 0.05


def test_inference_form_keeps_the_network_and_needs_eval_mode():
    network = _trained_like(unet.UNetConfig(width=2, levels=2))
    before = {k: v.clone() for k, v in network.state_dict().items()}
    fast = unet_inference.InferenceUNet3D(network)
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())
    assert not any(p.requires_grad for p in fast.parameters())
    with pytest.raises(ValueError, match="eval"):
        unet_inference.InferenceUNet3D(network.train())


@pytest.mark.parametrize("settings", [{}, {"field_level": 2}, {"probability_input": True},
                                      {"deformation": False}])
def test_template_body_inference_form_gives_the_bodys_outputs(settings):
    """Bottleneck, field-level features and (with probability_input) the probability of the
    template network's U-Net body, as the segmenter's InferenceBody computes them."""
    from KidneyUSLib import template_net as tn

    config = tn.TemplateConfig(width=3, template_shape=(16, 16, 16), global_width=4, **settings)
    body = tn.TemplateNet(config).body
    _randomise_batch_norms(body)
    body.eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        expected, got = body(x), tn.InferenceBody(body)(x)
    assert len(got) == len(expected) == (3 if config.probability_input else 2)
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def _expected_flops(w: int, inference: bool = True, side: int = 80, levels: int = 4) -> int:
    """Encoders as in the U-Net. Each first decoder convolution: as trained, 27 taps over the
    upsampled and skip channels at full resolution; in the inference form, a skip part at full
    resolution plus 8 parity kernels of 8 taps on the once-padded half-resolution input."""
    flops, channels = 0, 1
    for level in range(levels):
        voxels = (side >> level) ** 3
        for a, b in ((channels, w * 2 ** level), (w * 2 ** level, w * 2 ** (level + 1))):
            flops += 2 * voxels * a * b * 27
        channels = w * 2 ** (level + 1)
    for level in reversed(range(levels - 1)):
        out, n = w * 2 ** (level + 1), side >> level
        flops += 2 * n ** 3 * 27 * (out * out + out * out)  # skip part, then the second convolution
        if inference:
            flops += 2 * (n // 2 + 1) ** 3 * 8 * channels * 8 * out
        else:
            flops += 2 * n ** 3 * 27 * channels * out
        channels = out
    return flops + 2 * side ** 3 * channels


def test_inference_form_runs_fewer_flops():
    network = _trained_like(unet.UNetConfig(width=2))
    fast = unet_inference.InferenceUNet3D(network)
    assert conv_flops(network, (80, 80, 80)) == _expected_flops(2, inference=False)
    assert conv_flops(fast, (80, 80, 80)) == _expected_flops(2)
    assert 0.70 < _expected_flops(32) / _expected_flops(32, inference=False) < 0.73  # 662 of 924 GFLOP


def test_bench_forward_times_the_inference_form_against_the_fp32_baseline():
    # --compile before the positional: a flag, so "forward" is not taken for its value
    result = subprocess.run([sys.executable, "-m", "KidneyUSLib", "bench", "--compile", "forward", "--width", "2",
                             "--repeats", "1", "--device", "cpu", "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = {row["mode"]: row for row in json.loads(result.stdout)["forward"]}
    assert not any("torch.compile" in mode for mode in rows)  # CUDA-only rows
    assert list(rows)[0] == "fp32 eager" and rows["fp32 eager"]["max_abs_diff_vs_fp32"] == 0
    fast = rows["inference form, fp32"]
    assert fast["max_abs_diff_vs_fp32"] < 1e-5 and fast["speedup_vs_fp32"] > 0
    assert round(fast["gflop"] * 1e9) == _expected_flops(2)
    assert rows["inference form, bf16 + channels_last_3d"]["max_abs_diff_vs_fp32"] < 0.05
    weights = rows["inference form, bf16 weights + channels_last_3d"]  # counted and run in bf16
    assert weights["max_abs_diff_vs_fp32"] < 0.05 and weights["gflop"] == fast["gflop"]


def test_bench_forward_times_transfer_networks_under_autocast_only():
    """Transfer layers keep parts of their work in fp32, so a transfer network gets no bf16-weight
    rows (which would fail on its dtypes) and every row it gets runs."""
    from argparse import Namespace

    from KidneyUSLib import bench, transfer

    torch.manual_seed(0)
    base = unet.UNet3D(unet.UNetConfig(width=2, dropout=0.0)).eval()
    model = transfer.TransferUNet(base, transfer.TransferConfig(geometric=True, intensity=True, predictor_width=2)).eval()
    args = Namespace(repeats=1, compile=False, compile_mode="reduce-overhead", peak_tflops=None)
    rows = {row["mode"]: row for row in bench.bench_forward("transfer", model, torch.device("cpu"), args)}
    assert all("error" not in row for row in rows.values()), rows
    assert not any("weights" in mode for mode in rows)
    assert rows["inference form, bf16 + channels_last_3d"]["max_abs_diff_vs_fp32"] < 0.05
