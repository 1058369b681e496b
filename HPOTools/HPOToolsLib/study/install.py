"""Install a study's winner (or a chosen trial) into the SegTune model store as a new version.

The trial must be COMPLETE and have saved a model (``context.model_folder``); the model must pass
``SegTuneCore.models.verify_model``, be of the study's task, and still have the checksum recorded
when the trial finished. The installed model.json carries the model's hyper-parameters with the
trial's searched values over them, its metrics and value, and where it came from (study folder,
trial, objective, method, seed; ``installed_from`` is the trial's model folder). The model is
read from the study, which may be on a read-only mount; the install is recorded in the study's
events when the study is writable.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from SegTuneCore.errors import SegTuneError
from SegTuneCore.models import ModelEntry, ModelStore, load_model, save_model, verify_model

from ..trials import TrialState
from .status import best_trial
from .storage import DB_NAME, StudyStore


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
                  store_root=None) -> tuple[ModelEntry, int, bool]:
    """Install the trial's model; return its entry, the trial number, and whether the study
    recorded the install (a study that cannot be written, e.g. on a read-only mount, does not)."""
    study = StudyStore.open(folder, read_only=True)   # choosing and reading never write: any folder will do
    try:
        chosen = choose_trial(study, trial)
        spec = study.spec()
    finally:
        study.close()
    if chosen.state != TrialState.COMPLETE:
        raise SegTuneError(f"trial {chosen.number} is {chosen.state.value}, not complete: only complete trials "
                           "can be installed")
    if not chosen.artifact:
        raise SegTuneError(f"trial {chosen.number} saved no model (objective {spec['objective']!r} does not "
                           "produce models)")
    model = study.folder / chosen.artifact
    task = spec.get("task")     # the spec's task or the objective's model_task (studies before it had none)
    meta = verify_model(model, task=task)
    if meta["sha256"] != chosen.artifact_sha256:
        raise SegTuneError(f"{model}: the model changed after trial {chosen.number} finished (checksum differs "
                           "from the one recorded in the study); refusing to install it")
    tensors, meta = load_model(model, task=task, framework="np")
    record = {k: v for k, v in meta.items() if k not in ("sha256", "version", "format")}
    # the model's own record keeps its training settings; the searched values are the trial's
    record["hyperparameters"] = {**meta.get("hyperparameters", {}), **chosen.params}
    record["metrics"] = {**meta.get("metrics", {}), **chosen.metrics, "objective_value": chosen.value}
    record["hpo"] = {"study": str(study.folder.resolve()), "trial": chosen.number, "objective": spec["objective"],
                     "method": spec["method"], "seed": spec["seed"], "value": chosen.value,
                     "budget": chosen.budget, "device": chosen.device}
    with tempfile.TemporaryDirectory(prefix="segtune-install-") as staging:   # not in the study: it may be read-only
        staged = save_model(Path(staging) / "model", tensors, record)
        entry = ModelStore(store_root).install(staged, activate=activate, source=model)
    return entry, chosen.number, _record_install(study.folder, chosen.number, entry, activate)


def _record_install(folder: Path, number: int, entry: ModelEntry, activate: bool) -> bool:
    if not (os.access(folder, os.W_OK) and os.access(folder / DB_NAME, os.W_OK)):
        return False
    study = StudyStore.open(folder)
    try:
        with study.write() as connection:
            StudyStore.event(connection, "installed", trial=number,
                             message=f"{entry.task} {entry.version}" + (" (active)" if activate else ""))
    finally:
        study.close()
    return True
