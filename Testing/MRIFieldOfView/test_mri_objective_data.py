"""The HPO objective trains on a folder of real files (the HPOTools panel's "training data")."""

import json

import pytest

from MRIFieldOfViewLib.objective import ClassifierObjective
from MRIFieldOfViewLib.phantom import make_phantom
from SegTuneCore.errors import SegTuneError
from SegTuneCore.geometry import write_volume


def _write_study(folder, seed):
    phantom = make_phantom(seed, max_matrix=64)
    write_volume(phantom.volume(), folder / f"study{seed}.nrrd")
    (folder / f"study{seed}.json").write_text(json.dumps({"slice_labels": phantom.slice_labels}))
    return len(phantom.slice_labels)


def test_objective_trains_on_a_data_folder(tmp_path):
    slices = sum(_write_study(tmp_path, seed) for seed in range(4))
    objective = ClassifierObjective(data=str(tmp_path), max_slices_per_volume=8, samples_per_epoch=32,
                                    fixed={"filters_log2": 2, "fc_units": [16]}, device="cpu")
    record = objective.data_record()
    assert record["source"] == "folder" and record["path"] == str(tmp_path)
    assert 0 < sum(v for k, v in record.items() if k.endswith("_slices")) <= min(slices, 4 * 8)
    loss = objective({"learning_rate": 0.01, "batch_size": 8}, 1)
    assert loss == loss and loss > 0  # finite validation loss from one epoch


def test_bad_data_folder_is_refused_before_any_training(tmp_path):
    _write_study(tmp_path, 0)
    (tmp_path / "study0.json").unlink()
    with pytest.raises(SegTuneError, match="study0"):
        ClassifierObjective(data=str(tmp_path))


def test_a_promoted_configuration_continues_from_its_checkpoint(tmp_path):
    from HPOToolsLib.study.evaluate import TrialContext

    data = tmp_path / "data"
    data.mkdir()
    for seed in range(4):
        _write_study(data, seed)
    objective = ClassifierObjective(data=str(data), max_slices_per_volume=8, samples_per_epoch=32,
                                    fixed={"filters_log2": 2, "fc_units": [16]}, device="cpu")
    params, reported = {"learning_rate": 0.01, "batch_size": 8}, []
    checkpoint = tmp_path / "checkpoints" / "3"
    objective(params, 1, context=TrialContext(number=0, folder=tmp_path / "t0", device="cpu", seed=5, budget=1,
                                              config_id=3, checkpoint_folder=checkpoint))
    objective(params, 3, context=TrialContext(number=1, folder=tmp_path / "t1", device="cpu", seed=6, budget=3,
                                              resume_from=1, config_id=3, checkpoint_folder=checkpoint,
                                              reporter=lambda step, value: reported.append(step)))
    assert objective.curves[-1]["resumed_from"] == 1 and len(objective.curves[-1]["validation_loss"]) == 2
    assert reported == [2.0, 3.0]  # epochs in total, continuing rung 0's one
    meta = json.loads((tmp_path / "t1" / "model" / "model.json").read_text())
    assert meta["hyperparameters"]["resumed_from"] == 1 and meta["seed"] == 6
