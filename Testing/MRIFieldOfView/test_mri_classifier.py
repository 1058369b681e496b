"""Table 2.7 family: cost estimate against built models, the 600M-weight case, model store round trip."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from SegTuneCore.errors import SegTuneError
from MRIFieldOfViewLib.classifier import (ARCHITECTURE, BASELINE_CONFIG, TASK, SliceClassifier, build_model,
                                          check_fits, estimate_cost)
from MRIFieldOfViewLib.preprocessing import PREPROCESSING
from MRIFieldOfViewLib.regions import REGIONS

SMALL = dict(BASELINE_CONFIG, filters_log2=3, fc_units=[32, 16], input_size=64)
CONFIGS = [
    BASELINE_CONFIG,
    dict(SMALL, convs_per_block=2, separable=True),
    dict(SMALL, filter_size=5, batch_norm=True, dropout=0.5),
    dict(SMALL, blocks=2, filters_log2=2, fc_units=[8]),
    dict(SMALL, blocks=4, convs_per_block=3, separable=True, filter_size=5, batch_norm=True),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_parameter_estimate_equals_the_built_model(config):
    model = build_model(config)
    assert estimate_cost(config)["parameters"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("config", CONFIGS[1:])
def test_activation_estimate_equals_the_values_a_forward_pass_keeps(config):
    model = build_model(config)
    batch, kept = 3, []
    counted = (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU, torch.nn.MaxPool2d, torch.nn.Linear)
    for module in model.modules():
        if isinstance(module, counted):
            module.register_forward_hook(lambda m, i, o: kept.append(o.numel()))
    size = config["input_size"]
    logits = model(torch.zeros(batch, 1, size, size))
    values = batch * size * size + sum(kept) + logits.numel()  # input + layers + softmax
    assert estimate_cost(config, batch_size=batch)["activation_bytes"] == 4 * values


def test_the_one_block_64_filter_model_is_refused_without_allocating():
    config = dict(BASELINE_CONFIG, blocks=1)
    tracemalloc.start()
    cost = estimate_cost(config)
    with pytest.raises(SegTuneError, match="too large"):
        check_fits(config, memory_bytes=12 * 2 ** 30)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # 64 channels x 64 x 64 after one pooling of 128 x 128, into 4096 units.
    assert cost["parameters"] > 64 * 64 * 64 * 4096 > 6e8
    assert peak < 1_000_000
    assert check_fits(BASELINE_CONFIG, memory_bytes=12 * 2 ** 30)["parameters"] < 10_000_000


def test_invalid_configs_are_rejected():
    with pytest.raises(ValueError):
        estimate_cost(dict(BASELINE_CONFIG, blocks=8))  # 128 pooled 8 times is below one pixel
    with pytest.raises(ValueError):
        estimate_cost(dict(BASELINE_CONFIG, filter_size=4))


def save_random_model(folder, config, seed=0):
    from SegTuneCore.models import save_model

    torch.manual_seed(seed)
    model = build_model(config).eval()
    meta = {"task": TASK, "architecture": {"name": ARCHITECTURE, "config": config},
            "classes": list(REGIONS), "preprocessing": dict(PREPROCESSING)}
    save_model(folder, model.state_dict(), meta)
    return model


def test_store_round_trip_gives_the_same_probabilities(tmp_path):
    from SegTuneCore.models import ModelStore

    config = dict(SMALL, input_size=128, batch_norm=True)
    model = save_random_model(tmp_path / "m", config)
    store = ModelStore(root=tmp_path / "store", bundled_dirs=[])
    entry = store.install(tmp_path / "m", activate=True)
    classifier = SliceClassifier.load(store.resolve(TASK), "cpu")
    images = np.random.default_rng(0).random((5, 128, 128), dtype=np.float32)
    probabilities = classifier.predict(images, batch_size=2)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(images)[:, None]), 1).numpy()
    assert probabilities.shape == (5, len(REGIONS))
    assert np.allclose(probabilities, expected, atol=1e-6)
    assert np.allclose(probabilities.sum(1), 1.0, atol=1e-5)
    assert entry.task == TASK
    with pytest.raises(SegTuneError):
        classifier.predict(np.zeros((2, 64, 64), np.float32))


def test_a_model_of_another_task_is_refused(tmp_path):
    from SegTuneCore.models import save_model

    save_model(tmp_path / "other", {"w": np.zeros(3, np.float32)},
               {"task": "KidneyUS.segmentation", "architecture": {"name": "unet3d"}})
    with pytest.raises(SegTuneError):
        SliceClassifier.load(tmp_path / "other")


def test_the_bundled_model_loads_and_is_small(repo_root):
    folder = repo_root / "MRIFieldOfView" / "Resources" / "Models" / "slice-classifier-default"
    if not (folder / "model.json").exists():
        pytest.skip("bundled model not trained yet")
    assert (folder / "weights.safetensors").stat().st_size <= 10 * 2 ** 20
    classifier = SliceClassifier.load(folder)
    assert classifier.predict(np.zeros((2, 128, 128), np.float32)).shape == (2, 6)


def test_the_bundled_model_sees_a_head_in_the_real_colin27_mri():
    from pathlib import Path

    from SegTuneCore.geometry import read_volume
    from MRIFieldOfViewLib.preprocessing import axial_slices

    path = Path("/usr/share/mricron/templates/ch2.nii.gz")
    if not path.exists():
        pytest.skip("Debian mricron-data (Colin27) is not installed")
    classifier = SliceClassifier.load(Path(__file__).resolve().parents[2] / "MRIFieldOfView" / "Resources"
                                      / "Models" / "slice-classifier-default")
    predicted = classifier.predict(axial_slices(read_volume(path)).images).argmax(1)
    assert (predicted == REGIONS.index("head")).mean() >= 0.8  # 86 % when trained (docs/MRIFieldOfView-model.md)
