"""Stationary ARD kernels (§2.2.1.3): squared exponential (eq. 2.8) and Matérn 5/2 (eq. 2.10).

Both use one length-scale per input dimension (``lengthscales``, shape (d,)) and a signal variance
``variance``. With ``r² = Σ_j (x_j − x'_j)² / l_j²``:

- SE:        k = σ² exp(−r²/2)
- Matérn 5/2: k = σ² (1 + √5 r + 5r²/3) exp(−√5 r)

A kernel is stateless; the hyper-parameters are passed in. Gradients are with respect to the
*log* hyper-parameters, the coordinates the marginal-likelihood optimiser works in:
``∂k/∂log l_j = σ² g(r) (x_j − x'_j)² / l_j²`` with ``g = exp(−r²/2)`` (SE) or
``g = 5/3 (1 + √5 r) exp(−√5 r)`` (Matérn 5/2), and ``∂k/∂log σ² = k``.
"""

from __future__ import annotations

import numpy as np

from . import checks

SQRT5 = np.sqrt(5.0)


def scaled_sqdist(X1: np.ndarray, X2: np.ndarray, lengthscales: np.ndarray) -> np.ndarray:
    """r² between every row of X1 and X2 (memory O(n1 n2), not O(n1 n2 d))."""
    A = X1 / lengthscales
    B = X2 / lengthscales
    d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
    return np.maximum(d2, 0.0)


class Kernel:
    name = ""

    def shape(self, r2: np.ndarray) -> np.ndarray:
        """k / σ² as a function of r²."""
        raise NotImplementedError

    def slope(self, r2: np.ndarray) -> np.ndarray:
        """g(r²) such that ∂(k/σ²)/∂log l_j = g · (x_j − x'_j)² / l_j²."""
        raise NotImplementedError

    def __call__(self, X1, X2, lengthscales, variance) -> np.ndarray:
        return variance * self.shape(scaled_sqdist(X1, X2, lengthscales))

    def gradients(self, X, lengthscales, variance) -> np.ndarray:
        """Explicit (d + 1, n, n) stack of ∂K/∂log l_j then ∂K/∂log σ² (for tests and small n;
        the GP contracts the same quantities without building this stack)."""
        r2 = scaled_sqdist(X, X, lengthscales)
        slope = variance * self.slope(r2)
        diffs = (X[:, None, :] - X[None, :, :]) ** 2 / lengthscales ** 2
        grads = [slope * diffs[:, :, j] for j in range(X.shape[1])]
        grads.append(variance * self.shape(r2))
        return np.stack(grads)


class SquaredExponential(Kernel):
    name = "se"

    def shape(self, r2):
        return np.exp(-0.5 * r2)

    def slope(self, r2):
        return np.exp(-0.5 * r2)


class Matern52(Kernel):
    name = "matern52"

    def shape(self, r2):
        r = np.sqrt(r2)
        return (1.0 + SQRT5 * r + (5.0 / 3.0) * r2) * np.exp(-SQRT5 * r)

    def slope(self, r2):
        r = np.sqrt(r2)
        return (5.0 / 3.0) * (1.0 + SQRT5 * r) * np.exp(-SQRT5 * r)


KERNELS = {"se": SquaredExponential, "matern52": Matern52}


def make_kernel(name: str) -> Kernel:
    if isinstance(name, Kernel):
        return name
    return KERNELS[checks.choice("kernel", name, sorted(KERNELS))]()
