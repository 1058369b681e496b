"""Benchmark functions with known optima (minimisation), as plain functions of a params dict.

- ``branin(params)``: x1 ∈ [−5, 10], x2 ∈ [0, 15]; minimum 0.397887 at (−π, 12.275), (π, 2.275),
  (9.42478, 2.475).
- ``hartmann6(params)``: x1..x6 ∈ [0, 1]; minimum −3.32237 at
  (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573).
- ``mf_hartmann6(params, budget)``: the multi-fidelity Hartmann6 of Kandasamy et al. (BOCA, 2017):
  αᵢ(z) = αᵢ − 0.1 (1 − z), fidelity z = budget / max_budget ∈ (0, 1] (default max_budget 27, the
  Hyperband R of §2.5.3); at z = 1 it is hartmann6.

Each has ``<NAME>_SPACE`` (a ``Space``) and ``<NAME>_OPTIMUM`` (the minimum value).
"""

from __future__ import annotations

import math

import numpy as np

from ..space import Float, Space

BRANIN_SPACE = Space({"x1": Float(-5.0, 10.0), "x2": Float(0.0, 15.0)})
BRANIN_OPTIMUM = 0.397887357729738


def branin_array(x1, x2):
    b, c = 5.1 / (4 * math.pi ** 2), 5 / math.pi
    return (x2 - b * x1 ** 2 + c * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * np.cos(x1) + 10


def branin(params) -> float:
    return float(branin_array(params["x1"], params["x2"]))


HARTMANN6_SPACE = Space({f"x{i}": Float(0.0, 1.0) for i in range(1, 7)})
HARTMANN6_OPTIMUM = -3.322368011415515
HARTMANN6_ARGMIN = np.array([0.20168952, 0.15001069, 0.47687398, 0.27533243, 0.31165162, 0.65730054])
_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
               [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                      [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])


def hartmann6_array(X: np.ndarray, fidelity: float = 1.0) -> np.ndarray:
    """Hartmann6 of rows of X (shape (m, 6)) at fidelity z ∈ [0, 1]."""
    X = np.atleast_2d(X)
    alpha = _ALPHA - 0.1 * (1.0 - fidelity)
    inner = ((X[:, None, :] - _P[None]) ** 2 * _A[None]).sum(-1)
    return -(alpha[None] * np.exp(-inner)).sum(-1)


def _vector(params) -> np.ndarray:
    return np.array([params[f"x{i}"] for i in range(1, 7)], dtype=float)


def hartmann6(params) -> float:
    return float(hartmann6_array(_vector(params))[0])


MF_HARTMANN6_SPACE = HARTMANN6_SPACE
MF_HARTMANN6_OPTIMUM = HARTMANN6_OPTIMUM
MF_HARTMANN6_MAX_BUDGET = 27


def mf_hartmann6(params, budget: float = MF_HARTMANN6_MAX_BUDGET, max_budget: float = MF_HARTMANN6_MAX_BUDGET) -> float:
    if not 0 < budget <= max_budget:
        raise ValueError(f"budget must be in (0, {max_budget}], got {budget}")
    return float(hartmann6_array(_vector(params), budget / max_budget)[0])
