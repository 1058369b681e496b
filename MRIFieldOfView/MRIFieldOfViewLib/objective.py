"""The Table 2.7 family as an HPOTools objective, "MRIFieldOfView:classifier" (§2.6.3).

    from HPOToolsLib.objectives import get_objective
    objective = get_objective("MRIFieldOfView:classifier", phantoms=24)
    objective(params, budget)        # trains `budget` epochs, returns the last validation loss
    objective.fits(params)           # static memory check (pass as minimize(..., fits=objective.fits))

Multi-fidelity: the budget is a number of epochs (Hyperband's resource), max_budget 27. A call
trains on a phantom data set built once per objective (volume-wise split; the validation volumes
are never trained on), from scratch, or, in a study, from the configuration's checkpoint when
Hyperband promotes it (only budget − resume_from more epochs; the weights continue, SGD's
momentum restarts). `objective.curves` keeps every call's validation loss
per epoch. A configuration whose estimated training memory exceeds `memory_limit_gb` (12 GB, as
in §2.6.3) is refused before anything is allocated: `fits` returns False, and a direct call
raises MemoryError, which HPOTools records as the OOM failure state.

In a study (HPOToolsLib.study) the call gets a trial `context`: it trains on `context.device`
with the trial's seed, reports the validation loss after each epoch, saves the configuration's
checkpoint, and saves the trained network into
`context.model_folder` with the model.json of the train CLI (`training.model_meta`), so
`python -m HPOToolsLib install` can put the winner into the model store for `localize`.
"""

from __future__ import annotations

import math

from .classifier import BASELINE_CONFIG, TASK, estimate_cost, model_config

NAME = "MRIFieldOfView:classifier"
MAX_EPOCHS = 27
GIB = 2 ** 30


def table27_space():
    """The hyper-parameter space of Table 2.7 (baseline: b=5, c=1, r=6, s=3, no, 1e-3, 8)."""
    from HPOToolsLib.space import Categorical, Float, Int, Ordinal, Space

    return Space({
        "blocks": Int(1, 5),
        "convs_per_block": Int(1, 5),
        "filters_log2": Int(2, 8),
        "filter_size": Ordinal([3, 5]),
        "separable": Categorical([False, True]),
        "learning_rate": Float(1e-7, 1.0, log=True),
        "batch_size": Ordinal.powers_of_two(2, 8),
    })


BASELINE_PARAMS = {"blocks": 5, "convs_per_block": 1, "filters_log2": 6, "filter_size": 3,
                   "separable": False, "learning_rate": 1e-3, "batch_size": 8}


def config_of(params: dict, fixed: dict | None = None) -> dict:
    """A full classifier config from a point of the space (other keys: the baseline's or `fixed`)."""
    config = dict(BASELINE_CONFIG)
    config.update(fixed or {})
    config.update({key: params[key] for key in BASELINE_PARAMS if key in params})
    config["filter_size"] = int(config["filter_size"])
    config["batch_size"] = int(config["batch_size"])
    return config


class ClassifierObjective:
    def __init__(self, phantoms: int = 24, seed: int = 0, samples_per_epoch: int = 2048,
                 max_slices_per_volume: int = 32, max_matrix: int = 160, device: str = "auto",
                 memory_limit_gb: float = 12.0, fixed: dict | None = None, workers: int = 1,
                 data: str | None = None):
        """`data`: a folder of NAME.nrrd + NAME.json pairs (checked up front) instead of phantoms."""
        if data:
            from SegTuneCore.training_data import check_training_folder

            check_training_folder(data, label_kind="slice-json")  # refuse a bad folder before any trial
        if phantoms < 3:
            raise ValueError("phantoms must be >= 3 (train, validation and test volumes)")
        self.phantoms, self.seed = int(phantoms), int(seed)
        self.samples_per_epoch = int(samples_per_epoch)
        self.max_slices, self.max_matrix, self.workers = max_slices_per_volume, max_matrix, workers
        self.device_spec = device
        self.memory_bytes = int(memory_limit_gb * GIB)
        self.fixed = dict(fixed or {})
        self.data_folder = str(data) if data else None
        self.curves: list[dict] = []
        self._sets = None

    def fits(self, params: dict) -> bool:
        try:
            cost = estimate_cost(model_config(config_of(params, self.fixed)), int(params.get("batch_size", 8)))
        except ValueError:
            return False
        return cost["training_bytes"] <= self.memory_bytes

    def _data(self):
        if self._sets is None:
            from .dataset import folder_slice_set, phantom_slice_set, split_slice_set

            if self.data_folder:
                data = folder_slice_set(self.data_folder, self.max_slices)
            else:
                data = phantom_slice_set(range(self.phantoms), self.max_slices, self.max_matrix, self.workers)
            self._sets = split_slice_set(data, self.seed)
        return self._sets

    def data_record(self) -> dict:
        """The `data` entry of model.json (as the train CLI's for `--phantoms`)."""
        sets = self._data()
        if self.data_folder:
            return {"source": "folder", "path": self.data_folder,
                    **{f"{name}_slices": len(part) for name, part in sets.items()}}
        return {"source": "phantoms", "seeds": [0, self.phantoms], "max_matrix": self.max_matrix,
                "max_slices_per_volume": self.max_slices,
                **{f"{name}_slices": len(part) for name, part in sets.items()}}

    def __call__(self, params: dict, budget: float = MAX_EPOCHS, job=None, context=None) -> float:
        from SegTuneCore.device import describe, select_device
        from SegTuneCore.models import load_model

        from .classifier import ARCHITECTURE
        from .training import model_meta, save_trained, train

        config = config_of(params, self.fixed)
        if not self.fits(params):
            cost = estimate_cost(model_config(config), config["batch_size"])
            raise MemoryError(f"static estimate: {cost['parameters']:,} weights, "
                              f"{cost['training_bytes'] / GIB:.1f} GiB > {self.memory_bytes / GIB:.1f} GiB")
        epochs = max(1, int(math.ceil(float(budget))))
        sets = self._data()
        device = select_device(context.device if context is not None else self.device_spec)
        seed = context.seed if context is not None else self.seed
        resume, done = context.checkpoint_to_resume() if context is not None else (None, 0)
        initial_state = load_model(resume, task=TASK, architecture=ARCHITECTURE)[0] if resume is not None else None

        def on_epoch(entry):
            if context is not None:
                context.report(done + entry["epoch"], entry["validation_loss"])  # epochs in total

        result = train(config, sets["train"], sets["validation"], epochs=max(1, epochs - done),
                       samples_per_epoch=self.samples_per_epoch, seed=seed, device=device,
                       on_epoch=on_epoch, initial_state=initial_state)
        curve = [entry["validation_loss"] for entry in result.history]
        self.curves.append({"params": dict(params), "epochs": epochs, "resumed_from": done, "validation_loss": curve})
        if context is not None:
            last = result.history[-1]
            metrics = {"validation": {"loss": last["validation_loss"], "accuracy": last["validation_accuracy"]}}
            meta = model_meta(config, result, seed=seed, data=self.data_record(), metrics=metrics,
                              training={"epochs": epochs, "epochs_run": len(result.history), "resumed_from": done,
                                        "samples_per_epoch": self.samples_per_epoch, "bf16": False},
                              device_record=describe(device))
            save_trained(context.model_folder, result, meta)
            if context.checkpoint_folder is not None:
                save_trained(context.checkpoint_folder, result, meta)
        return float(curve[-1])


def make_objective(**options):
    from HPOToolsLib.objectives import Objective

    function = ClassifierObjective(**options)
    objective = Objective(NAME, function, table27_space(), multi_fidelity=True, max_budget=MAX_EPOCHS,
                          description="Table 2.7 slice classifier on MRI phantoms; budget = epochs; "
                                      "value = validation loss (class-weighted cross entropy)",
                          model_task=TASK)
    objective.fits = function.fits
    objective.curves = function.curves
    return objective


def register() -> None:
    from HPOToolsLib.objectives import register_objective

    register_objective(NAME, make_objective, replace=True)
