"""Saving through the model store and loading a Segmenter (KidneyUSLib.inference)."""

import json

import numpy as np
import pytest
import torch

from SegTuneCore.errors import SegTuneError
from SegTuneCore.models import ModelStore, save_model

from KidneyUSLib import inference, transfer, unet
from KidneyUSLib.training import History, TrainSettings, model_meta, save_network
from KidneyUSLib.unet_inference import InferenceUNet3D

torch.set_num_threads(1)  # 2 shared cores: extra threads only wait on each other


def _perturb(network):
    torch.manual_seed(3)
    with torch.no_grad():
        for p in network.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for m in network.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
    return network.eval()


def _save(network, folder):
    meta = model_meta(network, method="test", settings=TrainSettings(), train_sets=[], metrics={"dice_adults": 0.5},
                      device=torch.device("cpu"), history=History())
    return save_network(folder, network, meta)


@pytest.mark.parametrize("kind", ["unet", "transfer", "fixed convolutions"])
def test_save_then_load_reproduces_the_outputs(tmp_path, kind):
    """Exactly, or within fp32 rounding where the U-Net runs as its inference form."""
    torch.manual_seed(0)
    network = unet.UNet3D(unet.UNetConfig(width=4, levels=3))
    if kind == "transfer":
        network = transfer.TransferUNet(network, transfer.TransferConfig(geometric=True, intensity=True))
    elif kind == "fixed convolutions":
        network = transfer.TransferUNet(network, transfer.TransferConfig(geometric=False, fixed_convolutions=True))
    network = _perturb(network)
    cube = np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = network(torch.from_numpy(cube)[None, None])[0, 0].numpy()
    folder = _save(network, tmp_path / "model")
    segmenter = inference.load_segmenter(folder, "cpu")
    segmenter.bf16 = segmenter.channels_last = False  # exactness is an fp32 promise
    segmenter.network.to(memory_format=torch.contiguous_format)
    got = segmenter(cube)
    assert got.dtype == np.float32 and got.shape == cube.shape
    loaded, _ = inference.load_network(folder, "cpu")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in network.state_dict().items())
    if kind == "fixed convolutions":  # they act on the upsampled features: the trained form stays
        assert not any(isinstance(m, InferenceUNet3D) for m in segmenter.network.modules())
        np.testing.assert_array_equal(got, expected)
    else:  # the inference form: the same function, summed in another order
        assert any(isinstance(m, InferenceUNet3D) for m in segmenter.network.modules())
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    meta = json.loads((folder / "model.json").read_text())
    assert meta["task"] == inference.TASK and meta["architecture"] == (
        network.config.to_dict() if kind == "unet" else network.architecture())


def test_installed_model_is_found_through_the_store(tmp_path):
    network = _perturb(unet.UNet3D(unet.UNetConfig(width=2, levels=2)))
    store = ModelStore(tmp_path / "store", bundled_dirs=[])
    entry = store.install(_save(network, tmp_path / "model"), activate=True)
    resolved = store.resolve(inference.TASK)
    assert resolved.version == entry.version
    segmenter = inference.load_segmenter(resolved, "cpu")
    assert segmenter.precision in ("fp32", "bf16+channels_last_3d")
    assert segmenter(np.zeros((8, 8, 8), np.float32)).shape == (8, 8, 8)


def test_a_model_of_another_task_is_refused(tmp_path):
    network = unet.UNet3D(unet.UNetConfig(width=2, levels=2))
    folder = save_model(tmp_path / "foreign", network.state_dict(),
                        {"task": "MRIFieldOfView.slice-classifier", "architecture": network.config.to_dict()})
    with pytest.raises(SegTuneError, match="task"):
        inference.load_segmenter(folder, "cpu")


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path):
    network = unet.UNet3D(unet.UNetConfig(width=2, levels=2))
    meta = {"task": inference.TASK, "architecture": unet.UNetConfig(width=3, levels=2).to_dict()}
    folder = save_model(tmp_path / "mismatch", network.state_dict(), meta)
    with pytest.raises(SegTuneError, match="do not match"):
        inference.load_segmenter(folder, "cpu")


def test_segmenter_rejects_bad_cubes(tmp_path):
    folder = _save(unet.UNet3D(unet.UNetConfig(width=2, levels=3)), tmp_path / "model")
    segmenter = inference.load_segmenter(folder, "cpu")
    with pytest.raises(SegTuneError, match="NaN"):
        segmenter(np.full((8, 8, 8), np.nan, np.float32))
    with pytest.raises(SegTuneError, match="multiples"):
        segmenter(np.zeros((8, 8, 10), np.float32))
    with pytest.raises(SegTuneError, match="3D"):
        segmenter(np.zeros((8, 8), np.float32))
