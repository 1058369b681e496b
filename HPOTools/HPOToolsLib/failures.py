"""Failed trials (§2.6.3): what the surrogate sees, and a feasibility model.

The GP never sees +inf/NaN. Trials in a failure state (FAILED, CRASHED, OOM, TIMEOUT; see
``trials.TrialState``) are handled by one of three policies:

- ``"drop"`` (the thesis's choice): failures are left out of the GP; they still count as tested,
  so a finite space never proposes them again, but the acquisition is free to go next to them.
- ``"penalise"`` (the thesis's alternative): failures enter the GP with a bad value, ``penalty``
  if given, else the worst value observed so far; this violates smoothness but pushes the search
  away from the region.
- ``"feasibility"``: failures are left out of the GP, and a kernel estimate of the probability of
  success multiplies the acquisition (added to its log):
  p(x) = (c·p̄ + Σᵢ wᵢ sᵢ) / (c + Σᵢ wᵢ), wᵢ = exp(−‖(x − xᵢ)/ℓ‖²/2), sᵢ = 1 for a success, 0 for a
  failure, p̄ the overall success rate (Laplace-smoothed) and c the prior weight: far from every
  trial p(x) → p̄, next to failures p(x) → 0. The BO sampler also conditions its GP on the failed
  points as kriging-believer fantasies (value = the GP's own mean there): the mean surface is
  unchanged (no smoothness violation) but the uncertainty that drew the search there is gone, so
  it does not keep returning to a failing region as "drop" does.

A static memory estimate (``fits(params) -> bool``) complements them: samplers skip candidates
that do not fit, and ``minimize`` records configurations refused by it as OOM without training.
"""

from __future__ import annotations

import numpy as np

from . import checks
from .kernels import scaled_sqdist

POLICIES = ("drop", "penalise", "feasibility")


class FailurePolicy:
    def __init__(self, policy: str = "feasibility", *, penalty: float | None = None,
                 lengthscale: float = 0.15, prior_weight: float = 1.0):
        if policy not in POLICIES:
            raise ValueError(f"unknown failure policy {policy!r} (expected one of {list(POLICIES)})")
        self.policy = policy
        self.penalty = None if penalty is None else checks.number("penalty", penalty)
        self.lengthscale = lengthscale
        self.prior_weight = prior_weight

    def training_data(self, X_ok: np.ndarray, y_ok: np.ndarray, X_failed: np.ndarray,
                      order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(X, y) for the GP. ``order`` (optional) gives the position of each row of
        [X_ok; X_failed] in the trial history, so penalised failures keep their place and the GP
        can keep appending incrementally."""
        if self.policy != "penalise" or len(X_failed) == 0:
            return X_ok, y_ok
        value = self.penalty if self.penalty is not None else (float(np.max(y_ok)) if len(y_ok) else 1.0)
        X = np.vstack([X_ok, X_failed])
        y = np.concatenate([y_ok, np.full(len(X_failed), value)])
        if order is not None:
            X, y = X[np.argsort(order, kind="stable")], y[np.argsort(order, kind="stable")]
        return X, y

    def log_feasibility(self, X_candidates: np.ndarray, X_ok: np.ndarray, X_failed: np.ndarray) -> np.ndarray:
        """log p(success) at the candidates (0 when the policy is not 'feasibility' or nothing failed)."""
        if self.policy != "feasibility" or len(X_failed) == 0:
            return np.zeros(len(X_candidates))
        return np.log(probability_of_success(X_candidates, X_ok, X_failed, self.lengthscale, self.prior_weight))


def probability_of_success(X: np.ndarray, X_ok: np.ndarray, X_failed: np.ndarray,
                           lengthscale: float = 0.15, prior_weight: float = 1.0) -> np.ndarray:
    n_ok, n_failed = len(X_ok), len(X_failed)
    rate = (n_ok + 1.0) / (n_ok + n_failed + 2.0)
    scale = np.full(X.shape[1], lengthscale)
    w_ok = np.exp(-0.5 * scaled_sqdist(X, X_ok, scale)).sum(1) if n_ok else np.zeros(len(X))
    w_failed = np.exp(-0.5 * scaled_sqdist(X, X_failed, scale)).sum(1)
    return (prior_weight * rate + w_ok) / (prior_weight + w_ok + w_failed)
