"""A cheap objective that saves a model per trial, so studies can install winners without training.

"benchmark:quadratic-model": f(x, y) = (x − 0.3)² + (y + 0.2)², minimum 0 at (0.3, −0.2), on
x, y ∈ [−1, 1]. Each trial saves a tiny model (the point as a tensor) through
``SegTuneCore.models.save_model`` into ``context.model_folder``, with the hyper-parameters and the
validation metric in its model.json, like a real training objective does; its ``model_task`` is
"HPOTools.quadratic-model". Options to exercise failure handling: ``fail_above`` (trials with x
above it raise), ``crash_above`` (trials with y above it kill their own process, as a segfault or
the OOM killer would) and ``saved_task`` (the models are saved for this task instead, as by an
objective that saves another module's models).

Objectives that save artifacts take a keyword ``context`` (``study.evaluate.TrialContext``).
"""

from __future__ import annotations

from ..objectives import Objective, register_objective
from ..space import Float, Space

TASK = "HPOTools.quadratic-model"
QUADRATIC_SPACE = Space({"x": Float(-1.0, 1.0), "y": Float(-1.0, 1.0)})


def quadratic(params: dict) -> float:
    return (params["x"] - 0.3) ** 2 + (params["y"] + 0.2) ** 2


def _make(fail_above: float | None = None, crash_above: float | None = None,
          saved_task: str = TASK) -> Objective:
    def train(params: dict, context=None) -> dict:
        if fail_above is not None and params["x"] > fail_above:
            raise RuntimeError(f"x={params['x']:.3f} > fail_above={fail_above}")
        if crash_above is not None and params["y"] > crash_above:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        import numpy as np

        value = quadratic(params)
        if context is not None:
            from SegTuneCore.models import save_model

            save_model(context.model_folder, {"point": np.array([params["x"], params["y"]], dtype=np.float32)},
                       {"task": saved_task, "architecture": {"name": "quadratic-point", "dims": 2},
                        "hyperparameters": params, "metrics": {"validation_loss": value}, "seed": context.seed})
        return {"value": value, "metrics": {"validation_loss": value}}

    return Objective("benchmark:quadratic-model", train, QUADRATIC_SPACE, optimum=0.0,
                     description="2-D quadratic that saves a tiny model per trial (tests, demos)",
                     requires_full_space=True, model_task=TASK)


register_objective("benchmark:quadratic-model", _make, replace=True)
