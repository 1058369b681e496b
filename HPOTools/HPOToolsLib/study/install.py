"""Install a study's winner (or a chosen trial) into the SegTune model store as a new version.

The trial must be COMPLETE and have saved a model (``context.model_folder``); the model must pass
``SegTuneCore.models.verify_model`` and still have the checksum recorded when the trial finished.
The installed model.json carries the trial's hyper-parameters, its metrics and value, and where it
came from (study folder, trial, objective, method, seed).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from SegTuneCore.errors import SegTuneError
from SegTuneCore.models import ModelEntry, ModelStore, load_model, save_model, verify_model

from ..trials import TrialState
from .status import best_trial
from .storage import StudyStore


def choose_trial(store: StudyStore, number: int | None):
    trials = store.trials()
    if number is None:
        trial = best_trial(trials)
        if trial is None:
            raise SegTuneError(f"{store.folder}: no completed trial to install yet")
        return trial
    trial = next((t for t in trials if t.number == number), None)
    if trial is None:
        raise SegTuneError(f"{store.folder}: no trial {number} (the study has {len(trials)} trials)")
    return trial


def install_trial(folder, *, trial: int | None = None, activate: bool = False,
                  store_root=None) -> tuple[ModelEntry, int]:
    study = StudyStore.open(folder)
    try:
        chosen = choose_trial(study, trial)
        spec = study.spec()
        if chosen.state != TrialState.COMPLETE:
            raise SegTuneError(f"trial {chosen.number} is {chosen.state.value}, not complete: only complete trials "
                               "can be installed")
        if not chosen.artifact:
            raise SegTuneError(f"trial {chosen.number} saved no model (objective {spec['objective']!r} does not "
                               "produce models)")
        model = study.folder / chosen.artifact
        meta = verify_model(model, task=spec.get("task"))
        if meta["sha256"] != chosen.artifact_sha256:
            raise SegTuneError(f"{model}: the model changed after trial {chosen.number} finished (checksum differs "
                               "from the one recorded in the study); refusing to install it")
        tensors, meta = load_model(model, task=spec.get("task"), framework="np")
        record = {k: v for k, v in meta.items() if k not in ("sha256", "version", "format")}
        record["hyperparameters"] = chosen.params
        record["metrics"] = {**meta.get("metrics", {}), **chosen.metrics, "objective_value": chosen.value}
        record["hpo"] = {"study": str(study.folder.resolve()), "trial": chosen.number, "objective": spec["objective"],
                         "method": spec["method"], "seed": spec["seed"], "value": chosen.value,
                         "budget": chosen.budget, "device": chosen.device}
        with tempfile.TemporaryDirectory(prefix=".install-", dir=study.folder) as staging:
            staged = save_model(Path(staging) / "model", tensors, record)
            entry = ModelStore(store_root).install(staged, activate=activate)
        with study.write() as connection:
            StudyStore.event(connection, "installed", trial=chosen.number,
                             message=f"{entry.task} {entry.version}" + (" (active)" if activate else ""))
        return entry, chosen.number
    finally:
        study.close()
