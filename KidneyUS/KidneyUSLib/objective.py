"""The KidneyUS U-Net as an HPOTools objective, "KidneyUS:unet" (width, depth, dropout, lr, batch, augmentation).

    from HPOToolsLib.objectives import get_objective
    objective = get_objective("KidneyUS:unet", adults=16, children=8)
    objective(params, budget)      # trains `budget` epochs, returns the last validation Dice loss
    objective.fits(params)         # static memory check (pass as minimize(..., fits=objective.fits))

Multi-fidelity: the budget is a number of epochs (Hyperband's resource), max_budget 27. A call
trains joint adults + children with oversampling (§3.3.2) on phantoms generated once per
objective, from scratch, or, in a study, from the configuration's checkpoint when Hyperband
promotes it (only budget − resume_from more epochs; the weights continue, Adam restarts); the validation phantoms (held-out seeds, both populations) are never trained on.
`objective.curves` keeps every call's validation Dice loss per epoch. A configuration whose
estimated training memory exceeds `memory_limit_gb` is refused before anything is allocated.

In a study (HPOToolsLib.study) the call gets a trial `context`: it trains on `context.device`
with the trial's seed, reports the validation Dice loss after each epoch, saves the checkpoint of
the configuration, and saves the network into `context.model_folder` with the train CLI's
model.json (`training.model_meta`), so
`python -m HPOToolsLib install` can put the winner into the model store.
"""

from __future__ import annotations

import math

NAME = "KidneyUS:unet"
MAX_EPOCHS = 27
GIB = 2 ** 30
CUBE = 80


def unet_space():
    from HPOToolsLib.space import Float, Int, Ordinal, Space

    return Space({
        "width": Ordinal([4, 8, 16, 32]),
        "levels": Int(3, 5),
        "dropout": Float(0.0, 0.5),
        "learning_rate": Float(1e-4, 1e-2, log=True),
        "batch_size": Ordinal([1, 2, 4, 8]),
        "augment": Float(0.0, 1.5),
    })


def estimate_training_bytes(width: int, levels: int, batch_size: int, side: int = CUBE) -> int:
    """fp32 activations kept for the backward pass (~4 tensors per conv block: conv, BN, ReLU, grad)
    plus weights, gradients and Adam's two moments."""
    from .unet import UNetConfig

    voxels_channels = 0
    for level in range(levels):
        voxels = (side // 2 ** level) ** 3
        voxels_channels += voxels * (width * 2 ** level + width * 2 ** (level + 1))  # analysis convs
        if level < levels - 1:
            voxels_channels += voxels * (2 * width * 2 ** (level + 1) + width * 2 ** (level + 2))  # synthesis + skip
    weights = UNetConfig(width=width, levels=levels).parameter_count()
    return int(4 * (4 * batch_size * voxels_channels + 4 * weights))


class UNetObjective:
    def __init__(self, adults: int = 16, children: int = 8, validation: int = 6, crop: int | None = 48,
                 seed: int = 0, device: str = "auto", memory_limit_gb: float = 12.0, workers: int = 1):
        if min(adults, children, validation) < 1:
            raise ValueError("adults, children and validation must be >= 1")
        self.adults, self.children, self.validation = int(adults), int(children), int(validation)
        self.crop, self.seed, self.device_spec, self.workers = crop, int(seed), device, int(workers)
        self.memory_bytes = int(memory_limit_gb * GIB)
        self.curves: list[dict] = []
        self._sets = None

    def fits(self, params: dict) -> bool:
        side = self.crop or CUBE
        estimate = estimate_training_bytes(int(params["width"]), int(params["levels"]), int(params["batch_size"]), side)
        return estimate <= self.memory_bytes

    def _data(self):
        if self._sets is None:
            from .training import TEST_SEED_OFFSET, generated_set

            first = self.seed * 10_000
            self._sets = {
                "train": [generated_set("adult", self.adults, first, self.workers),
                          generated_set("child", self.children, first, self.workers)],
                # validation seeds lie between training and test seeds: never trained on, never tested on
                "validation": [generated_set("adult", self.validation, TEST_SEED_OFFSET // 2, self.workers),
                               generated_set("child", self.validation, TEST_SEED_OFFSET // 2, self.workers)],
            }
        return self._sets

    def __call__(self, params: dict, budget: float = MAX_EPOCHS, job=None, context=None) -> float:
        import torch

        from SegTuneCore.device import select_device

        from .inference import load_network
        from .training import TrainSettings, model_meta, save_network, train_network
        from .unet import UNet3D, UNetConfig

        if not self.fits(params):
            raise MemoryError(f"static estimate exceeds {self.memory_bytes / GIB:.1f} GiB for {params}")
        epochs = max(1, int(math.ceil(float(budget))))
        sets = self._data()
        seed = context.seed if context is not None else self.seed
        torch.manual_seed(seed)
        resume, done = context.checkpoint_to_resume() if context is not None else (None, 0)
        if resume is not None:
            network, _ = load_network(resume)
        else:
            network = UNet3D(UNetConfig(width=int(params["width"]), levels=int(params["levels"]),
                                        dropout=float(params["dropout"])))
        settings = TrainSettings(epochs=max(1, epochs - done), batch_size=int(params["batch_size"]),
                                 lr=float(params["learning_rate"]), augment=float(params["augment"]),
                                 crop=self.crop, seed=seed)
        device = select_device(context.device if context is not None else self.device_spec)

        def on_epoch(epoch, history):
            if context is not None:
                context.report(done + epoch + 1, history.validation_loss[-1])  # epochs in total

        history = train_network(network, sets["train"], settings, device, validation=sets["validation"],
                                on_epoch=on_epoch)
        self.curves.append({"params": dict(params), "epochs": epochs, "resumed_from": done,
                            "validation_loss": history.validation_loss})
        if context is not None:
            meta = model_meta(network, method="unet", settings=settings, train_sets=sets["train"],
                              metrics={"validation_dice_loss": history.validation_loss[-1]}, device=device,
                              history=history, extra={"epochs_in_total": epochs, "resumed_from": done})
            save_network(context.model_folder, network, meta)
            if context.checkpoint_folder is not None:
                save_network(context.checkpoint_folder, network, meta)
        return float(history.validation_loss[-1])


def make_objective(**options):
    from HPOToolsLib.objectives import Objective

    from .segmentation import TASK

    function = UNetObjective(**options)
    objective = Objective(NAME, function, unet_space(), multi_fidelity=True, max_budget=MAX_EPOCHS,
                          description="KidneyUS 3D U-Net on ultrasound phantoms (adults + children); "
                                      "budget = epochs; value = validation Dice loss",
                          requires_full_space=True,  # every trial reads all six parameters
                          model_task=TASK)
    objective.fits = function.fits
    objective.curves = function.curves
    return objective


def register() -> None:
    from HPOToolsLib.objectives import register_objective

    register_objective(NAME, make_objective, replace=True)
