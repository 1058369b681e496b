"""The researcher loop, headless (issue 8): a small HPO study of the MRIFieldOfView classifier
family on phantoms -> install the best trial (activated) into the isolated model store -> the
MRIFieldOfView MRML logic localizes a phantom with it, and its results differ from the bundled
model's only through the model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from HPOToolsLib.study.install import install_trial
from HPOToolsLib.study.runner import create_study, run_study
from HPOToolsLib.study.storage import StudyStore
from HPOToolsLib.trials import TrialState
from MRIFieldOfViewLib import selftest
from MRIFieldOfViewLib.classifier import TASK
from MRIFieldOfViewLib.logic import FieldOfViewLogic
from MRIFieldOfViewLib.regions import ORDERED_REGIONS
from SegTuneCore.models import ModelStore, verify_model

# Tiny on purpose (about 30 s on 2 busy cores): 4 phantoms at 64x64, 4 trials of 1-2 epochs
# of 96 augmented slices, a 4-block network of 4-8 filters with one 16-unit dense layer.
SPEC = {
    "objective": "MRIFieldOfView:classifier",
    "objective_options": {"phantoms": 4, "max_slices_per_volume": 12, "max_matrix": 64, "samples_per_epoch": 96,
                          "fixed": {"blocks": 4, "convs_per_block": 1, "filter_size": 3, "separable": False,
                                    "batch_size": 8, "fc_units": [16]}},
    "space": {"learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
              "filters_log2": {"type": "int", "low": 2, "high": 3}},
    "method": "hyperband",
    "method_options": {"max_budget": 2, "eta": 2},
    "budget": {"trials": 4},
    "seed": 0,
}
COMPARED_KEYS = ("slice_positions_mm", "empty_slices", "slice_axis", "smoothing_mm", "classes")


def _regions_are_ordered_and_contiguous(document) -> None:
    regions = document["regions"]
    order = [ORDERED_REGIONS.index(r["name"]) for r in regions if r["name"] in ORDERED_REGIONS]
    assert order == sorted(order) and len(set(order)) == len(order), regions
    for region in regions:
        assert region["first_slice"] <= region["last_slice"]


def test_study_winner_is_installed_and_localizes_through_the_mrml_logic(tmp_path, slicer_runtime, monkeypatch):
    import torch

    # one thread in the trial processes too: two threads on a loaded 2-core machine are 5-10x slower
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    folder = create_study(tmp_path / "study", SPEC)
    run_study(folder, device="cpu")
    study = StudyStore.open(folder)
    assert study.spec()["task"] == TASK     # the objective's model_task, stored with the study
    trials = study.trials()
    study.close()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials), \
        [(t.number, t.state, t.error) for t in trials]
    assert any(t.resume_from for t in trials)  # Hyperband promoted a configuration
    for trial in trials:  # the validation loss after every epoch trained: a promoted one continues its checkpoint
        assert [step for step, _ in trial.intermediate] == list(range(int(trial.resume_from or 0) + 1,
                                                                      int(trial.budget) + 1))
        assert trial.intermediate[-1][1] == pytest.approx(trial.value)
        assert trial.artifact and trial.artifact_sha256
    best = min(trials, key=lambda t: (t.value, t.number))

    entry, number, recorded = install_trial(folder, activate=True)
    assert recorded
    assert number == best.number
    store_root = Path(os.environ["SEGTUNE_HOME"]) / "models"
    assert entry.task == TASK and entry.active and not entry.bundled
    assert entry.path.resolve().is_relative_to(store_root.resolve())
    assert entry.meta["hpo"]["trial"] == best.number
    # the searched values, and the training settings the trial's model recorded (not searched)
    trained = verify_model(folder / best.artifact)["hyperparameters"]
    assert entry.meta["hyperparameters"] == {**trained, **best.params}
    assert {"momentum", "epochs", "samples_per_epoch", "batch_size"} <= set(entry.meta["hyperparameters"])
    assert entry.meta["architecture"]["config"]["filters_log2"] == best.params["filters_log2"]
    assert entry.meta["metrics"]["objective_value"] == pytest.approx(best.value)
    assert ModelStore().resolve(TASK).version == entry.version  # the active model is what `localize` loads

    volume, _ = selftest.phantom_volume(seed=selftest.SELFTEST_SEED, regions=("abdomen", "chest"))
    node = selftest.node_in_study(volume, "phantom")
    voxels_before = slicer_runtime.util.arrayFromVolume(node).copy()
    logic = FieldOfViewLogic()
    installed = logic.run(node, device="cpu")          # no model named: the active (installed) one
    selftest.check_nodes(slicer_runtime, node, installed)
    document = installed.document
    assert document["model"]["version"] == entry.version and not document["model"]["bundled"]
    assert document["model"]["sha256"] == entry.meta["sha256"]
    _regions_are_ordered_and_contiguous(document)

    # the installed weights are the trial's: the trial's own model folder gives the same probabilities
    from_trial = logic.run(node, model=str(folder / best.artifact), device="cpu").document
    assert np.array_equal(from_trial["slice_probabilities"], document["slice_probabilities"])

    bundled_entry = next((e for e in ModelStore().list(TASK) if e.bundled), None)
    if bundled_entry is None:
        pytest.skip("no bundled MRIFieldOfView model in MRIFieldOfView/Resources/Models")
    bundled = logic.run(node, model=bundled_entry.path.name, device="cpu")
    selftest.check_nodes(slicer_runtime, node, bundled)
    other = bundled.document
    _regions_are_ordered_and_contiguous(other)
    # only the model differs: same input, same slices, grid and geometry of every output
    assert np.array_equal(slicer_runtime.util.arrayFromVolume(node), voxels_before)
    assert set(other) == set(document)
    for key in COMPARED_KEYS:
        assert other[key] == document[key], key
    assert np.shape(other["slice_probabilities"]) == np.shape(document["slice_probabilities"])
    assert other["device"]["device"] == document["device"]["device"]
    assert other["model"]["sha256"] != document["model"]["sha256"] and other["model"]["bundled"]
    for result in (installed, bundled):
        reference = result.segmentation.GetNodeReference(result.segmentation.GetReferenceImageGeometryReferenceRole())
        assert reference.GetID() == node.GetID()
        assert result.probabilities_table.GetNumberOfRows() == volume.array.shape[0]


def test_kidney_unet_objective_saves_an_installable_model_in_a_study_context(tmp_path, monkeypatch):
    import torch

    from HPOToolsLib.objectives import get_objective
    from HPOToolsLib.study.evaluate import TrialContext
    from KidneyUSLib import inference

    torch.set_num_threads(1)
    objective = get_objective("KidneyUS:unet", adults=1, children=1, validation=1, crop=32, device="cuda")
    reports = []
    context = TrialContext(number=0, folder=tmp_path / "trial", device="cpu", seed=0,
                           reporter=lambda step, value: reports.append((step, value)))
    params = {"width": 4, "levels": 3, "dropout": 0.0, "learning_rate": 1e-3, "batch_size": 1, "augment": 0.0}
    value = objective.function(params, 2, context=context)   # as a study's trial process calls it
    assert [step for step, _ in reports] == [1.0, 2.0] and reports[-1][1] == pytest.approx(value)
    entry = ModelStore().install(context.model_folder, activate=True)   # verifies the checksum and task
    assert entry.task == inference.TASK and entry.meta["architecture"]["width"] == 4
    assert entry.meta["metrics"]["validation_dice_loss"] == pytest.approx(value)
    assert entry.meta["run"]["device"] == "cpu"                          # the context's device, not "cuda"
    network, _ = inference.load_network(ModelStore().resolve(inference.TASK), "cpu")
    assert sum(p.numel() for p in network.parameters()) == entry.meta["parameters"]
