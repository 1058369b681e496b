"""Loss, a tiny training run, the train/evaluate CLIs and the HPO objective."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from MRIFieldOfViewLib.dataset import EMPTY, SliceSet
from MRIFieldOfViewLib.training import confusion_table, evaluate, train, weighted_cross_entropy

TINY = {"blocks": 4, "convs_per_block": 1, "filters_log2": 2, "filter_size": 3, "fc_units": [16],
        "batch_norm": True, "learning_rate": 0.05, "batch_size": 16, "input_size": 64}


def test_weighted_cross_entropy_matches_torch_and_treats_empty_slices_as_uniform():
    torch.manual_seed(0)
    logits = torch.randn(7, 6)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 2])
    weights = torch.rand(6) + 0.5
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=weights)
    assert torch.allclose(weighted_cross_entropy(logits, labels, weights), expected, atol=1e-6)
    empty = weighted_cross_entropy(logits[:1], torch.tensor([EMPTY]), weights)
    log_p = torch.log_softmax(logits[0], 0)
    assert torch.allclose(empty, -(weights * log_p).sum() / weights.sum(), atol=1e-6)


def toy_set(count=96, seed=0):
    """Six classes told apart by where a bright square is: learnable in a few hundred steps."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 64, 64), np.uint8)
    labels = rng.integers(0, 6, count)
    for n, label in enumerate(labels):
        row, column = divmod(int(label), 3)
        images[n, 10 + 25 * row: 25 + 25 * row, 5 + 20 * column: 20 + 20 * column] = 220
    return SliceSet(images, labels.astype(np.int64), np.arange(count))


def test_a_tiny_training_run_decreases_the_loss():
    torch.set_num_threads(1)
    data = toy_set()
    device = torch.device("cpu")
    result = train(TINY, data, data, epochs=3, samples_per_epoch=160, seed=0, device=device)
    losses = [entry["validation_loss"] for entry in result.history]
    assert len(losses) == 3
    assert losses[-1] < 0.7 * np.log(6)  # clearly below chance (log 6 = 1.79)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    metrics = evaluate(result.model, data, device)
    assert np.asarray(metrics["confusion"]).sum() == len(data)
    assert metrics["accuracy"] == pytest.approx(np.trace(metrics["confusion"]) / len(data))
    # Fine-tuning starts from the given weights (with a zero learning rate they stay).
    state = {k: v.clone() for k, v in result.model.state_dict().items()}
    tuned = train(dict(TINY, learning_rate=0.0), data, None, epochs=1, samples_per_epoch=16, seed=1,
                  device=device, initial_state=state)
    assert torch.equal(tuned.model.state_dict()["0.weight"], state["0.weight"])


def test_confusion_table_is_row_percent_in_thesis_order():
    confusion = np.zeros((6, 6), int)
    confusion[4, 4], confusion[4, 3] = 3, 1  # head (index 4): 75 % head, 25 % chest
    table = confusion_table(confusion).splitlines()
    assert table[0].split()[-6:] == ["head", "chest", "abdomen", "pelvis", "legs", "spine"]
    assert table[1].split()[:3] == ["head", "75", "25"]


def run_cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "MRIFieldOfViewLib", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_train_and_evaluate_clis_end_to_end(tmp_path, capsys):
    # In-process (the subprocess behaviour of the CLIs is covered by the bad-input tests).
    from MRIFieldOfViewLib.__main__ import main
    from MRIFieldOfViewLib.classifier import TASK, SliceClassifier
    from SegTuneCore.models import load_model

    model = tmp_path / "model"
    assert main(["train", "--phantoms", "3", "--max-matrix", "64", "--max-slices-per-volume", "6",
                 "--config", json.dumps({k: v for k, v in TINY.items() if k != "input_size"}),
                 "--epochs", "2", "--samples-per-epoch", "32", "--device", "cpu",
                 "--progress", "json", "--output", str(model)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "result" and events[-1]["epochs_run"] == 2
    assert any(e["event"] == "progress" for e in events)
    _, meta = load_model(model, task=TASK)
    assert meta["architecture"]["config"]["filters_log2"] == 2
    assert len(meta["history"]) == 2 and "validation_loss" in meta["history"][0]
    assert {"seed", "device", "preprocessing", "metrics", "class_weights"} <= set(meta)
    SliceClassifier.load(model)
    assert main(["evaluate", "--model", str(model), "--phantoms", "1", "--max-matrix", "64",
                 "--device", "cpu", "--progress", "quiet", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["slices"] == np.asarray(metrics["confusion"]).sum() > 0
    assert 0.0 <= metrics["slice_accuracy"] <= 1.0


@pytest.mark.parametrize("args,message", [
    (["--phantoms", "2"], "--phantoms"),
    (["--phantoms", "3", "--blocks", "1"], "too large"),
    (["--phantoms", "3", "--config", "{\"colour\": 1}"], "unknown keys"),
    (["--phantoms", "3", "--max-matrix", "8"], "--max-matrix must be in [32, 1024]"),
    (["--phantoms", "3", "--learning-rate", "nan"], "--learning-rate must be a finite number > 0"),
    (["--phantoms", "3", "--learning-rate", "0"], "--learning-rate must be a finite number > 0"),
    (["--phantoms", "3", "--config", "{\"learning_rate\": -0.1}"], "--learning-rate must be a finite number > 0"),
])
def test_train_cli_refuses_bad_input_without_output(tmp_path, args, message):
    result = run_cli("train", *args, "--output", str(tmp_path / "model"), timeout=60)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "model").exists()


def test_a_diverging_training_run_is_one_error_line_that_names_the_learning_rate(tmp_path):
    result = run_cli("train", "--phantoms", "4", "--max-matrix", "64", "--filters-log2", "3", "--fc-units", "32,16",
                     "--learning-rate", "1000", "--epochs", "2", "--samples-per-epoch", "64", "--device", "cpu", "--progress", "quiet",
                     "--output", str(tmp_path / "model"), timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]  # one line, no traceback or warning
    assert result.stderr.startswith("error: training diverged") and "lower --learning-rate (now 1000" in result.stderr
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("argv,message", [
    (["bench", "accuracy", "--volumes", "0"], "--volumes must be >= 1"),
    (["bench", "accuracy", "--volumes", "1", "--max-matrix", "8"], "--max-matrix must be in [32, 1024]"),
    (["evaluate", "--phantoms", "1", "--max-matrix", "8"], "--max-matrix must be in [32, 1024]"),
])
def test_bench_and_evaluate_refuse_bad_arguments_in_one_line(tmp_path, capsys, argv, message):
    from MRIFieldOfViewLib.__main__ import main
    from SegTuneCore.errors import run_cli as run_main

    output = tmp_path / "metrics.json"
    with pytest.raises(SystemExit) as exit_info:
        run_main(main, argv + (["--output", str(output)] if argv[0] == "evaluate" else []))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not output.exists()


def test_hpo_objective_refuses_the_600m_weight_model_as_out_of_memory():
    from HPOToolsLib.objectives import get_objective
    from HPOToolsLib.optimize import evaluate as hpo_evaluate
    from HPOToolsLib.trials import TrialState

    objective = get_objective("MRIFieldOfView:classifier", phantoms=3)
    huge = {"blocks": 1, "convs_per_block": 1, "filters_log2": 6, "filter_size": 3, "separable": False,
            "learning_rate": 1e-3, "batch_size": 8}
    assert objective.multi_fidelity and objective.max_budget == 27
    assert not objective.fits(huge)
    assert objective.fits(dict(huge, blocks=5))
    objective.space.validate(huge)
    _, state, error = hpo_evaluate(lambda: objective(huge, 1))
    assert state == TrialState.OOM and "static estimate" in error


def test_training_path_needs_no_simpleitk_slicer_or_vtk():
    # The GPU machine has only torch, numpy, scipy and safetensors.
    code = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('SimpleITK', 'slicer', 'vtk', 'vtkmodules'):
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
import torch
from MRIFieldOfViewLib.dataset import phantom_slice_set, split_slice_set
from MRIFieldOfViewLib.training import train
data = phantom_slice_set([1, 2, 3], max_slices=4, max_matrix=48)
sets = split_slice_set(data, 0)
config = dict(blocks=4, filters_log2=2, fc_units=[8], batch_size=4)
result = train(config, sets['train'], sets['validation'], epochs=1, samples_per_epoch=8, seed=0, device=torch.device('cpu'))
print(len(data), len(result.history))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["12", "1"]
