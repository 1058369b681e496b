"""Gaussian-process regression for Bayesian optimisation (§2.2.1), on the incremental Cholesky (§2.3).

Model: y = f(x) + ε with f ~ GP(0, k) (k: ``kernels.SquaredExponential`` or ``kernels.Matern52``
with ARD length-scales), ε ~ N(0, σₙ²). Targets are standardised (mean 0, std 1) at each *refit*.

Two separate operations, because the incremental factorisation is only valid while the kernel
hyper-parameters stay fixed:

- ``fit(X, y)``: the *refit*. Standardises y, chooses θ = (log l, log σ², log σₙ²) by maximising the
  log marginal likelihood (eq. 2.11; plus a weak Gamma prior on the length-scales,
  ``LengthscalePrior``, unless ``prior=None``) with analytic gradients and multi-start L-BFGS-B (warm start
  from the previous θ plus ``n_restarts`` random starts; on at most ``max_fit_points`` points,
  the best ones and a random subset of the rest), then factorises K + σₙ²I for all points: O(n³).
- ``append(X_new, y_new)``: adds points with θ and the standardisation fixed: O(n²k) (eq. 2.18/2.19).
  ``truncate(n)`` removes the last points exactly (constant-liar fantasies).

``update(X, y)`` applies ``RefitPolicy``: append when the data only grew and no refit is due,
otherwise refit. A refit is due after max(``every``, ``fraction`` · n at the last refit) new points
(defaults 1 and 0.1: every point while n < 20, every 100 points at n = 1000, so the amortised
refit cost shrinks as n grows), and when the fit degrades: the mean squared
standardised prediction error of the points appended since the last refit, measured *before*
each was appended (free: it is the Schur complement of the append), exceeds ``max_mean_z2``.

``predict(Xs) -> (mean, std)`` in the original units of y (std of f, without the noise).

``incremental=False`` is the baseline the latency benchmark compares with: the same model and
refit schedule, but every update refactorises the whole matrix and its inverse in O(n³).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_solve, cholesky
from scipy.optimize import minimize as scipy_minimize

from . import checks
from .incremental_cholesky import IncrementalCholesky, NotPositiveDefinite
from .kernels import Kernel, make_kernel, scaled_sqdist

LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class Bounds:
    """Bounds of the kernel hyper-parameters, inputs in [0, 1]^d, standardised targets."""

    lengthscale: tuple[float, float] = (1e-2, 20.0)
    variance: tuple[float, float] = (5e-2, 20.0)
    noise: tuple[float, float] = (1e-6, 0.5)

    def log_bounds(self, d: int) -> list[tuple[float, float]]:
        ls = (math.log(self.lengthscale[0]), math.log(self.lengthscale[1]))
        return [ls] * d + [(math.log(self.variance[0]), math.log(self.variance[1])),
                           (math.log(self.noise[0]), math.log(self.noise[1]))]


@dataclass
class RefitPolicy:
    every: int = 1
    fraction: float = 0.1
    max_mean_z2: float = 9.0
    min_points_for_degrade: int = 3

    def __post_init__(self):
        checks.integer("refit_every", self.every, 1)
        checks.number("refit_fraction", self.fraction, 0.0)

    def interval(self, n_at_fit: int) -> int:
        """New points between scheduled refits: max(every, fraction · n at the last refit)."""
        return max(self.every, int(self.fraction * n_at_fit))

    def due(self, n_since_fit: int, n_at_fit: int, z2: list[float]) -> bool:
        if n_since_fit >= self.interval(n_at_fit):
            return True
        return len(z2) >= self.min_points_for_degrade and float(np.mean(z2)) > self.max_mean_z2


@dataclass
class LengthscalePrior:
    """Weak Gamma(shape, rate) prior on each length-scale (inputs in [0, 1]); None disables it.
    With few points the likelihood alone often runs to a bound (one huge, one tiny length-scale);
    this prior (BoTorch's former default, mean 0.5) keeps the fit sensible and fades as n grows."""

    shape: float = 3.0
    rate: float = 6.0

    def log_density(self, log_ls: np.ndarray) -> tuple[float, np.ndarray]:
        """log p(log l) (Jacobian included) and its gradient w.r.t. log l."""
        ls = np.exp(log_ls)
        return float((self.shape * log_ls - self.rate * ls).sum()), self.shape - self.rate * ls


def log_marginal_likelihood(kernel: Kernel, X: np.ndarray, y: np.ndarray, log_theta: np.ndarray,
                            jitter: float = 1e-10) -> tuple[float, np.ndarray]:
    """Eq. 2.11 and its gradient w.r.t. log θ = (log l_1..d, log σ², log σₙ²)."""
    n, d = X.shape
    lengthscales = np.exp(log_theta[:d])
    variance, noise = math.exp(log_theta[d]), math.exp(log_theta[d + 1])
    r2 = scaled_sqdist(X, X, lengthscales)
    Kf = variance * kernel.shape(r2)
    K = Kf + (noise + jitter) * np.eye(n)
    L = cholesky(K, lower=True)
    alpha = cho_solve((L, True), y)
    lml = -0.5 * y @ alpha - np.log(np.diag(L)).sum() - 0.5 * n * LOG_2PI
    K_inv = cho_solve((L, True), np.eye(n))
    W = np.outer(alpha, alpha) - K_inv                      # ∂lml/∂θ = ½ Σ W ∘ ∂K/∂θ
    M = W * (variance * kernel.slope(r2))
    Xs = X / lengthscales
    MX = M @ Xs
    grad_ls = 0.5 * (2.0 * (Xs * Xs * M.sum(1)[:, None]).sum(0) - 2.0 * (Xs * MX).sum(0))
    grad_var = 0.5 * float((W * Kf).sum())
    grad_noise = 0.5 * noise * float(np.trace(W))
    return float(lml), np.concatenate([grad_ls, [grad_var, grad_noise]])


class GaussianProcess:
    def __init__(self, kernel: str | Kernel = "matern52", *, n_restarts: int = 3, max_fit_points: int = 400,
                 bounds: Bounds | None = None, refit: RefitPolicy | None = None, seed: int = 0,
                 prior: LengthscalePrior | None = LengthscalePrior(), incremental: bool = True):
        self.kernel = make_kernel(kernel)
        self.n_restarts = checks.integer("n_restarts", n_restarts, 0)
        self.max_fit_points = checks.integer("max_fit_points", max_fit_points, 2)
        self.bounds = bounds or Bounds()
        self.refit_policy = refit or RefitPolicy()
        self.prior = prior
        self.incremental = incremental
        self.seed = seed
        self.log_theta: np.ndarray | None = None
        self.y_mean, self.y_std = 0.0, 1.0
        self.chol: IncrementalCholesky | None = None
        self.X = np.zeros((0, 0))
        self.y = np.zeros(0)
        self._z = np.zeros(0)         # L⁻¹ y_standardised, grows with appends
        self.n_at_fit = 0
        self._z2_since_fit: list[float] = []
        self.n_refits = 0

    # -- hyper-parameters -------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.y.shape[0]

    @property
    def lengthscales(self) -> np.ndarray:
        return np.exp(self.log_theta[:-2])

    @property
    def variance(self) -> float:
        return math.exp(self.log_theta[-2])

    @property
    def noise(self) -> float:
        return math.exp(self.log_theta[-1])

    def _rng(self, n: int) -> np.random.Generator:
        # derived from (seed, n): a refit depends on the data only, not on the history of refits
        return np.random.default_rng([self.seed, n])

    def _fit_subset(self, y_std: np.ndarray) -> np.ndarray:
        n = len(y_std)
        if n <= self.max_fit_points:
            return np.arange(n)
        best = np.argsort(y_std)[: self.max_fit_points // 4]
        rest = np.setdiff1d(np.arange(n), best)
        others = self._rng(n).choice(rest, self.max_fit_points - len(best), replace=False)
        return np.sort(np.concatenate([best, others]))

    def _optimise_theta(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        d = X.shape[1]
        log_bounds = self.bounds.log_bounds(d)
        lows = np.array([b[0] for b in log_bounds])
        highs = np.array([b[1] for b in log_bounds])
        default = np.concatenate([np.full(d, math.log(0.5)), [0.0, math.log(1e-3)]])
        starts = [default if self.log_theta is None or len(self.log_theta) != d + 2 else self.log_theta]
        rng = self._rng(len(y) + 1)
        for _ in range(self.n_restarts):
            starts.append(rng.uniform(lows, highs) * 0.5 + 0.5 * default)

        def negative(log_theta):
            try:
                value, grad = log_marginal_likelihood(self.kernel, X, y, log_theta)
            except np.linalg.LinAlgError:
                return 1e25, np.zeros_like(log_theta)
            if self.prior is not None:
                prior_value, prior_grad = self.prior.log_density(log_theta[:d])
                value += prior_value
                grad = grad.copy()
                grad[:d] += prior_grad
            return -value / len(y), -grad / len(y)

        best_theta, best_value = np.clip(starts[0], lows, highs), math.inf
        for start in starts:
            result = scipy_minimize(negative, np.clip(start, lows, highs), jac=True, method="L-BFGS-B",
                                    bounds=log_bounds, options={"maxiter": 100, "ftol": 1e-7})
            if np.isfinite(result.fun) and result.fun < best_value:
                best_theta, best_value = result.x, float(result.fun)
        return best_theta

    # -- data -------------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray, optimise: bool = True) -> None:
        """Refit: standardise y, (optionally) optimise θ, factorise from scratch."""
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        if not np.all(np.isfinite(y)) or not np.all(np.isfinite(X)):
            raise ValueError("GP data must be finite (failed trials are handled before the GP)")
        self.y_mean = float(y.mean()) if len(y) else 0.0
        std = float(y.std()) if len(y) > 1 else 1.0
        self.y_std = std if std > 1e-12 else 1.0
        y_std = (y - self.y_mean) / self.y_std
        if optimise and len(y) >= 2:
            subset = self._fit_subset(y_std)
            self.log_theta = self._optimise_theta(X[subset], y_std[subset])
        elif self.log_theta is None or len(self.log_theta) != X.shape[1] + 2:
            self.log_theta = np.concatenate([np.full(X.shape[1], math.log(0.5)), [0.0, math.log(1e-3)]])
        self.X, self.y = X.copy(), y.copy()
        self._factorise()
        self.n_at_fit = self.n
        self._z2_since_fit = []
        self.n_refits += 1

    def _factorise(self) -> None:
        jitter = 0.0
        for _ in range(6):
            try:
                K = self._k(self.X, self.X) + (self.noise + jitter) * np.eye(self.n)
                self.chol = IncrementalCholesky.from_matrix(K)
                break
            except np.linalg.LinAlgError:
                jitter = max(1e-8, 10 * jitter)
        else:
            raise NotPositiveDefinite("Gram matrix not positive definite even with jitter")
        self._z = self.chol.L_inv @ self._standardise(self.y)

    def _standardise(self, y):
        return (y - self.y_mean) / self.y_std

    def _k(self, A, B):
        return self.kernel(A, B, self.lengthscales, self.variance)

    def append(self, X_new: np.ndarray, y_new: np.ndarray) -> np.ndarray:
        """Add points with θ fixed, O(n²k). Returns the standardised prediction errors z of the new
        points under the model *before* the append (used by the refit policy)."""
        X_new = np.atleast_2d(np.asarray(X_new, dtype=float))
        y_new = np.atleast_1d(np.asarray(y_new, dtype=float))
        if not np.all(np.isfinite(y_new)):
            raise ValueError("GP data must be finite")
        if self.chol is None:
            self.fit(X_new, y_new)
            return np.zeros(len(y_new))
        K_kn, K_kk, C, S, z = self._schur(X_new, y_new)
        try:
            self.chol.append(K_kn, K_kk, schur=(C, S))
        except NotPositiveDefinite:     # numerically duplicate point: refactorise with jitter
            self.X = np.vstack([self.X, X_new])
            self.y = np.concatenate([self.y, y_new])
            self._factorise()
            return z
        self.X = np.vstack([self.X, X_new])
        self.y = np.concatenate([self.y, y_new])
        L_inv_rows = self.chol.L_inv[-len(y_new):]
        self._z = np.concatenate([self._z, L_inv_rows @ self._standardise(self.y)])
        return z

    def _schur(self, X_new, y_new):
        K_kn = self._k(X_new, self.X)
        K_kk = self._k(X_new, X_new) + self.noise * np.eye(len(y_new))
        C, S = self.chol.schur(K_kn, K_kk)
        z = (self._standardise(y_new) - C @ self._z) / np.sqrt(np.maximum(np.diag(S), 1e-12))
        return K_kn, K_kk, C, S, z

    def _prediction_errors(self, X_new, y_new) -> np.ndarray:
        return self._schur(X_new, y_new)[-1]

    def truncate(self, n: int) -> None:
        self.chol.truncate(n)
        self.X, self.y, self._z = self.X[:n], self.y[:n], self._z[:n]

    def update(self, X: np.ndarray, y: np.ndarray) -> bool:
        """Bring the model to data (X, y) following the refit policy; True if it refitted.
        The previous data must be a prefix of (X, y) for the incremental path."""
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        n_old = self.n
        grows = (self.chol is not None and len(y) >= n_old and X.shape[1] == self.X.shape[1]
                 and np.array_equal(X[:n_old], self.X) and np.array_equal(y[:n_old], self.y))
        if grows and len(y) > n_old:
            if self.incremental:
                z = self.append(X[n_old:], y[n_old:])
            else:                            # the baseline: the same model, factorised from scratch
                z = self._prediction_errors(X[n_old:], y[n_old:])
                self.X, self.y = X.copy(), y.copy()
                self._factorise()
            self._z2_since_fit.extend((z ** 2).tolist())
        if not grows or self.refit_policy.due(self.n - self.n_at_fit, self.n_at_fit, self._z2_since_fit):
            self.fit(X, y)
            return True
        return False

    # -- prediction -------------------------------------------------------------------------
    def predict(self, Xs: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std of f at Xs (eq. 2.7), original units."""
        Xs = np.atleast_2d(np.asarray(Xs, dtype=float))
        means, stds = [], []
        for start in range(0, len(Xs), chunk):
            part = Xs[start:start + chunk]
            Ks = self._k(part, self.X)                  # (m, n)
            V = self.chol.inverse_product(Ks)           # (m, n): rows are (L⁻¹ k*)ᵀ
            mean = V @ self._z
            var = np.maximum(self.variance - np.einsum("ij,ij->i", V, V), 1e-12)
            means.append(mean)
            stds.append(np.sqrt(var))
        mean = np.concatenate(means) * self.y_std + self.y_mean
        return mean, np.concatenate(stds) * self.y_std

    def log_marginal_likelihood(self) -> float:
        return log_marginal_likelihood(self.kernel, self.X, self._standardise(self.y), self.log_theta)[0]
