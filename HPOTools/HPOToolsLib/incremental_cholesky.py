"""Incremental Cholesky factor and its inverse (§2.3, eq. 2.18, 2.19, Appendix A).

For a Gram matrix that grows by k rows/columns,

    K(n+k) = [[K(n,n), K(k,n)ᵀ], [K(k,n), K(k,k)]],

with C = K(k,n) L(n)⁻ᵀ (= (L(n)⁻¹ K(k,n)ᵀ)ᵀ, one matrix product since L(n)⁻¹ is kept) and
L(k) = chol(K(k,k) − C Cᵀ) (the Schur complement, positive definite unless a new point duplicates
an old one without noise):

    L(n+k)   = [[L(n), 0], [C, L(k)]]                                   (2.18)
    L(n+k)⁻¹ = [[L(n)⁻¹, 0], [−L(k)⁻¹ C L(n)⁻¹, L(k)⁻¹]]                (2.19)

Cost O(n²k) instead of O((n+k)³). The leading n×n blocks never change, so ``truncate(n)`` undoes
appends exactly (used to drop constant-liar fantasies). Storage grows geometrically (by a quarter),
so an append does not usually copy the n² matrices.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cholesky, solve_triangular


class NotPositiveDefinite(np.linalg.LinAlgError):
    """The Schur complement of the new points is not positive definite (duplicate point, no noise)."""


class IncrementalCholesky:
    """L and L⁻¹ of a growing symmetric positive definite matrix."""

    def __init__(self, capacity: int = 64):
        self._L = np.zeros((capacity, capacity))
        self._Linv = np.zeros((capacity, capacity))
        self.n = 0

    @classmethod
    def from_matrix(cls, K: np.ndarray) -> "IncrementalCholesky":
        """Full O(n³) factorisation (the 'refit' path)."""
        chol = cls(capacity=max(64, K.shape[0]))
        chol.append(np.zeros((K.shape[0], 0)), K)
        return chol

    @property
    def L(self) -> np.ndarray:
        return self._L[:self.n, :self.n]

    @property
    def L_inv(self) -> np.ndarray:
        return self._Linv[:self.n, :self.n]

    def _reserve(self, size: int) -> None:
        capacity = self._L.shape[0]
        if size <= capacity:
            return
        new_capacity = max(size, capacity + max(64, capacity // 4))
        for attr in ("_L", "_Linv"):
            grown = np.zeros((new_capacity, new_capacity))
            grown[:self.n, :self.n] = getattr(self, attr)[:self.n, :self.n]
            setattr(self, attr, grown)

    def inverse_product(self, B: np.ndarray) -> np.ndarray:
        """B L⁻ᵀ, i.e. the rows (L⁻¹ bᵢ)ᵀ: the GP's predictive variances need it for every candidate.
        L⁻¹ is lower triangular, so column block j of the result only needs the first columns of B
        up to the end of block j: about half the flops of a plain product, with no copy of L⁻¹."""
        n = self.n
        n_blocks = min(8, max(1, n // 128))
        if n_blocks == 1:
            return B @ self.L_inv.T
        out = np.empty((B.shape[0], n))
        edges = np.linspace(0, n, n_blocks + 1).astype(int)
        for start, stop in zip(edges[:-1], edges[1:]):
            out[:, start:stop] = B[:, :stop] @ self._Linv[start:stop, :stop].T
        return out

    def schur(self, K_new_old: np.ndarray, K_new_new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """C = K(k,n) L(n)⁻ᵀ and the Schur complement K(k,k) − C Cᵀ (also the GP's predictive
        covariance of the new points, which the refit policy uses for free)."""
        C = self.inverse_product(K_new_old)
        return C, K_new_new - C @ C.T

    def append(self, K_new_old: np.ndarray, K_new_new: np.ndarray,
               schur: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Append k points: ``K_new_old`` is K(k,n) (shape (k, n)), ``K_new_new`` is K(k,k);
        ``schur``: the result of ``schur(K_new_old, K_new_new)`` if the caller already has it."""
        k = K_new_new.shape[0]
        if K_new_old.shape != (k, self.n):
            raise ValueError(f"K_new_old must have shape ({k}, {self.n}), got {K_new_old.shape}")
        if k == 0:
            return
        C, S = schur if schur is not None else self.schur(K_new_old, K_new_new)
        try:
            Lk = cholesky(S, lower=True, check_finite=True)
        except np.linalg.LinAlgError as exc:
            raise NotPositiveDefinite(f"Schur complement not positive definite: {exc}") from None
        Lk_inv = solve_triangular(Lk, np.eye(k), lower=True)
        n = self.n
        self._reserve(n + k)
        self._L[n:n + k, :n] = C
        self._L[n:n + k, n:n + k] = Lk
        self._Linv[n:n + k, :n] = -Lk_inv @ (C @ self._Linv[:n, :n])
        self._Linv[n:n + k, n:n + k] = Lk_inv
        self.n = n + k

    def truncate(self, n: int) -> None:
        """Drop the points after the first n (exact: leading blocks never change)."""
        if not 0 <= n <= self.n:
            raise ValueError(f"cannot truncate {self.n} points to {n}")
        self._L[n:self.n, :self.n] = 0.0
        self._Linv[n:self.n, :self.n] = 0.0
        self.n = n

    def solve(self, b: np.ndarray) -> np.ndarray:
        """K⁻¹ b = L⁻ᵀ L⁻¹ b (two matrix products)."""
        return self.L_inv.T @ (self.L_inv @ b)

    def log_det(self) -> float:
        return 2.0 * float(np.log(np.diag(self.L)).sum())
