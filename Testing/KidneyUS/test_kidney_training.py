"""Training (thesis §3.3.2–§3.3.3): oversampling, partial fine-tuning, the loop, the train CLI."""

import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from SegTuneCore.errors import SegTuneError

from KidneyUSLib import training, unet

torch.set_num_threads(1)  # 2 shared cores: extra threads only wait on each other


def _spheres(population, count, seed, side=32):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:side, :side, :side]
    images, labels = [], []
    for _ in range(count):
        c = side / 2 + rng.uniform(-4, 4, 3)
        r = rng.uniform(5, 8)
        label = ((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r).astype(np.uint8)
        images.append((0.7 * label + rng.normal(0, 0.25, label.shape)).astype(np.float32))
        labels.append(label)
    return training.CubeSet(population, np.stack(images), np.stack(labels), "spheres")


def test_oversampling_balances_each_epoch_and_repeats_every_child():
    order = training.epoch_order([10, 3], True, np.random.default_rng(0))
    per_set = Counter(s for s, _ in order)
    assert per_set == {0: 10, 1: 10}
    children = Counter(i for s, i in order if s == 1)
    assert sorted(children) == [0, 1, 2] and max(children.values()) - min(children.values()) <= 1
    assert sorted(i for s, i in order if s == 0) == list(range(10))
    plain = training.epoch_order([10, 3], False, np.random.default_rng(0))
    assert Counter(s for s, _ in plain) == {0: 10, 1: 3}


@pytest.mark.parametrize("spec,trainable", [("all", 15), ("first:8", 8), ("last:7", 7)])
def test_partial_fine_tuning_unfreezes_the_chosen_layers(spec, trainable):
    network = unet.UNet3D(unet.UNetConfig(width=2))
    assert training.set_trainable(network, spec) == trainable
    layers = network.conv_layers()
    chosen = layers[:trainable] if spec.startswith("first") else layers[-trainable:]
    for layer in layers:
        assert all(p.requires_grad == (layer in chosen) for p in layer.parameters())


@pytest.mark.parametrize("spec", ["first:0", "last:16", "middle:3", "first:x"])
def test_invalid_layer_specs_are_refused(spec):
    with pytest.raises(SegTuneError):
        training.set_trainable(unet.UNet3D(unet.UNetConfig(width=2)), spec)


def test_a_tiny_training_run_reduces_the_loss_and_keeps_frozen_statistics():
    torch.manual_seed(0)
    network = unet.UNet3D(unet.UNetConfig(width=4, dropout=0.0))
    training.set_trainable(network, "last:7")
    frozen_bn = network.encoders[0][0][1]
    before = frozen_bn.running_mean.clone()
    settings = training.TrainSettings(epochs=6, batch_size=2, lr=1e-2, augment=0.5, crop=24, bf16=False,
                                      channels_last=False, seed=1)
    history = training.train_network(network, [_spheres("adult", 6, 0), _spheres("child", 2, 1)], settings,
                                     torch.device("cpu"), validation=[_spheres("child", 2, 2)])
    assert len(history.train_loss) == len(history.validation_loss) == 6
    assert history.train_loss[-1] < history.train_loss[0] - 0.05
    assert torch.equal(frozen_bn.running_mean, before)


def test_time_budget_stops_training_early():
    network = unet.UNet3D(unet.UNetConfig(width=2, levels=2))
    settings = training.TrainSettings(epochs=50, batch_size=2, time_budget_s=0.0, bf16=False, channels_last=False)
    history = training.train_network(network, [_spheres("adult", 2, 0, side=16)], settings, torch.device("cpu"))
    assert len(history.train_loss) == 1


def test_folder_pairs_are_found_and_preprocessed(tmp_path):
    from SegTuneCore.geometry import Volume, write_volume

    rng = np.random.default_rng(0)
    for case in ("a", "b"):
        z, y, x = np.mgrid[:40, :44, :48]
        label = (((z - 20) / 8) ** 2 + ((y - 22) / 10) ** 2 + ((x - 24) / 14) ** 2 <= 1).astype(np.uint8)
        image = (100 + 80 * label + rng.normal(0, 10, label.shape)).astype(np.float32)
        ijk_to_ras = np.diag([1.5, 1.2, 2.0, 1.0])
        write_volume(Volume(image, ijk_to_ras), tmp_path / f"{case}.nrrd")
        write_volume(Volume(label, ijk_to_ras), tmp_path / f"{case}_label.nrrd")
    (tmp_path / "notes.txt").write_text("ignored")
    assert [p.name for p, _ in training.find_pairs(tmp_path)] == ["a.nrrd", "b.nrrd"]
    cubes = training.folder_set(tmp_path, "adult")
    assert cubes.images.shape == (2, 80, 80, 80) and cubes.labels.dtype == np.uint8
    # ellipsoid volume 4/3·π·(8·2.0)(10·1.2)(14·1.5) mm³ in 64 mm³ voxels
    expected = 4 / 3 * np.pi * 16 * 12 * 21 / 64
    assert cubes.labels[0].sum() == pytest.approx(expected, rel=0.1)
    train, test = training.split_set(cubes, 0.2, seed=0)
    assert len(train) == 1 and len(test) == 1


def _cli(*args, cwd=None, **env):
    return subprocess.run([sys.executable, "-m", "KidneyUSLib", "train", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def test_train_cli_trains_and_saves_a_model_on_phantoms(tmp_path):
    out = tmp_path / "model"
    proc = _cli("--adults", "2", "--children", "2", "--test-adults", "1", "--test-children", "1", "--width", "2",
                "--levels", "3", "--epochs", "1", "--crop", "32", "--device", "cpu", "--output", str(out),
                "--progress", "quiet", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result["metrics"]) >= {"dice_adults", "dice_children", "seconds_per_epoch"}
    meta = json.loads((out / "model.json").read_text())
    assert meta["task"] == "KidneyUS.segmentation" and meta["seed"] == 0
    assert meta["training_data"][0]["count"] == 2 and "device" in meta["run"]
    # continue training from it, then train transfer layers on top of it
    more = _cli("--init", str(out), "--adults", "1", "--test-adults", "1", "--epochs", "1", "--crop", "32",
                "--device", "cpu", "--output", str(tmp_path / "more"), "--progress", "quiet")
    assert more.returncode == 0, more.stderr
    assert json.loads((tmp_path / "more" / "model.json").read_text())["initial_model"]["sha256"] == meta["sha256"]
    moved = _cli("--method", "transfer", "--base", str(out), "--children", "1", "--test-children", "1", "--epochs", "1",
                 "--device", "cpu", "--output", str(tmp_path / "gi"), "--progress", "quiet")
    assert moved.returncode == 0, moved.stderr
    transfer_meta = json.loads((tmp_path / "gi" / "model.json").read_text())
    assert transfer_meta["architecture"]["name"] == "unet3d-transfer" and transfer_meta["added_parameters"] > 0


@pytest.mark.parametrize("args,message", [
    (["--adults", "2"], "the following arguments are required: --output"),
    (["--method", "finetune", "--children", "2", "--output", "X"], "needs --base"),
    (["--method", "transfer", "--base", "/nonexistent/model", "--children", "2", "--output", "X"], "not a model folder"),
    (["--adults", "/nonexistent/folder", "--output", "X"], "not a folder"),
    (["--adults", "0", "--output", "X"], "--adults 0: give a folder or a phantom count >= 1"),
    (["--adults", "2", "--test-adults", "-3", "--output", "X"], "--test-adults and --test-children must be >= 0"),
    (["--adults", "2", "--crop", "-5", "--output", "X"], "--crop must be >= 0"),
    (["--adults", "2", "--crop", "12", "--output", "X"], "--crop 12: use 0 (whole cubes) or a multiple of 8 from 16 to 80"),
    (["--adults", "2", "--crop", "100", "--output", "X"], "--crop 100"),
    (["--method", "finetune", "--base", "unet-default", "--children", "2", "--layers", "last:99", "--output", "X"],
     "invalid layers 'last:99'"),
    (["--method", "transfer", "--base", "unet-default", "--children", "2", "--transfer-layers", "geometrc",
      "--output", "X"], "--transfer-layers: unknown ['geometrc']"),
    (["--method", "template", "--adults", "0", "--output", "X"], "--adults 0: give a folder or a phantom count >= 1"),
    (["--method", "template", "--adults", "2", "--penalty", "-1", "--output", "X"], "penalty -1.0 be >= 0"),
    (["--method", "template", "--adults", "2", "--field-level", "7", "--output", "X"], "0 <= field level < levels"),
    (["--method", "template", "--adults", "2", "--time-budget", "-5", "--output", "X"], "--time-budget > 0"),
])
def test_train_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    cache = tmp_path / "phantom-cache"
    proc = _cli(*args, cwd=tmp_path, KIDNEYUS_PHANTOM_CACHE=str(cache))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert "usage:" in proc.stderr or len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "X").exists()
    assert not cache.exists()  # refused before any phantom was generated


def test_hpo_objective_trains_for_the_budget_and_refuses_what_cannot_fit():
    from KidneyUSLib import objective

    function = objective.UNetObjective(adults=1, children=1, validation=1, crop=None, device="cpu")
    function._sets = {"train": [_spheres("adult", 2, 0, side=16), _spheres("child", 2, 1, side=16)],
                      "validation": [_spheres("adult", 1, 2, side=16), _spheres("child", 1, 3, side=16)]}
    params = {"width": 4, "levels": 3, "dropout": 0.1, "learning_rate": 3e-3, "batch_size": 2, "augment": 0.5}
    value = function(params, 2)
    assert 0 <= value <= 1 and function.curves[-1]["validation_loss"][-1] == value
    assert len(function.curves[-1]["validation_loss"]) == 2
    huge = dict(params, width=32, levels=5, batch_size=8)
    small_memory = objective.UNetObjective(crop=None, memory_limit_gb=1.0)
    assert function.fits(params) and not small_memory.fits(huge)
    with pytest.raises(MemoryError):
        small_memory(huge, 1)


def test_hpo_objective_continues_a_promoted_configuration_from_its_checkpoint(tmp_path):
    from HPOToolsLib.study.evaluate import TrialContext
    from SegTuneCore.models import load_model

    from KidneyUSLib import objective

    function = objective.UNetObjective(adults=1, children=1, validation=1, crop=None, device="cpu")
    function._sets = {"train": [_spheres("adult", 2, 0, side=16), _spheres("child", 2, 1, side=16)],
                      "validation": [_spheres("adult", 1, 2, side=16), _spheres("child", 1, 3, side=16)]}
    params = {"width": 4, "levels": 3, "dropout": 0.0, "learning_rate": 3e-3, "batch_size": 2, "augment": 0.5}
    checkpoint = tmp_path / "checkpoints" / "7"
    first = TrialContext(number=0, folder=tmp_path / "t0", device="cpu", seed=11, budget=1, config_id=7,
                         checkpoint_folder=checkpoint)
    function(params, 1, context=first)
    after_rung_0, _ = load_model(checkpoint)
    promoted = TrialContext(number=1, folder=tmp_path / "t1", device="cpu", seed=12, budget=3, resume_from=1,
                            config_id=7, checkpoint_folder=checkpoint)
    function(params, 3, context=promoted)
    assert function.curves[-1]["resumed_from"] == 1 and len(function.curves[-1]["validation_loss"]) == 2
    meta = json.loads((tmp_path / "t1" / "model" / "model.json").read_text())
    assert meta["epochs_in_total"] == 3 and meta["hyperparameters"]["epochs"] == 2 and meta["hyperparameters"]["seed"] == 12
    # the checkpoint moved on from rung 0's weights
    after_rung_1, _ = load_model(checkpoint)
    assert any(not np.array_equal(after_rung_0[k], after_rung_1[k]) for k in after_rung_0)


def test_an_hpo_study_of_the_unet_must_search_every_parameter_it_reads():
    from HPOToolsLib.study.spec import SpecError, parse_spec

    from KidneyUSLib import objective

    objective.register()
    space = {"width": {"type": "categorical", "choices": [4, 8]}, "levels": {"type": "int", "low": 3, "high": 4}}
    with pytest.raises(SpecError, match=r"missing parameter\(s\) \['dropout', 'learning_rate', 'batch_size', 'augment'\]"):
        parse_spec({"objective": "KidneyUS:unet", "budget": {"trials": 2}, "space": space})


def test_downsampling_averages_images_and_majority_votes_labels():
    cubes = _spheres("adult", 2, 0, side=16)
    half = cubes.downsampled(2)
    assert half.images.shape == (2, 8, 8, 8) and half.labels.dtype == np.uint8
    np.testing.assert_allclose(half.images[1, 3, 2, 5], cubes.images[1, 6:8, 4:6, 10:12].mean(), rtol=1e-5)
    block = cubes.labels[0, 6:8, 6:8, 6:8]
    assert half.labels[0, 3, 3, 3] == (block.mean() >= 0.5)
    assert cubes.downsampled(1) is cubes
