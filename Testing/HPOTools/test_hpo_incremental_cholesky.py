"""Incremental Cholesky (eq. 2.18, 2.19, Appendix A) against scipy's factorisation of the full matrix."""

import numpy as np
import pytest
from scipy.linalg import cholesky, solve_triangular

from HPOToolsLib.incremental_cholesky import IncrementalCholesky, NotPositiveDefinite
from HPOToolsLib.kernels import Matern52, SquaredExponential


def gram(X, noise=1e-2):
    return SquaredExponential()(X, X, np.full(X.shape[1], 0.3), 1.0) + noise * np.eye(len(X))


def rel_err(A, B):
    return np.linalg.norm(A - B) / np.linalg.norm(B)


def check_against_scipy(chol, K):
    L = cholesky(K, lower=True)
    L_inv = solve_triangular(L, np.eye(len(K)), lower=True)
    assert rel_err(chol.L, L) < 1e-8
    assert rel_err(chol.L_inv, L_inv) < 1e-8
    assert np.allclose(np.triu(chol.L, 1), 0) and np.allclose(np.triu(chol.L_inv, 1), 0)


def test_thousand_single_appends_match_full_factorisation():
    rng = np.random.default_rng(0)
    X = rng.random((1000, 4))
    K = gram(X)
    chol = IncrementalCholesky(capacity=8)   # forces many capacity doublings
    for i in range(len(X)):
        chol.append(K[i:i + 1, :i], K[i:i + 1, i:i + 1])
    assert chol.n == 1000
    check_against_scipy(chol, K)


@pytest.mark.parametrize("sizes", [[50, 7, 1, 30, 12], [1, 1, 64, 200]])
def test_batch_appends_match_full_factorisation(sizes):
    rng = np.random.default_rng(1)
    X = rng.random((sum(sizes), 3))
    K = Matern52()(X, X, np.array([0.2, 0.5, 1.0]), 2.0) + 1e-3 * np.eye(len(X))
    chol, n = IncrementalCholesky(), 0
    for k in sizes:
        chol.append(K[n:n + k, :n], K[n:n + k, n:n + k])
        n += k
        check_against_scipy(chol, K[:n, :n])


def test_truncate_is_exact_and_appends_continue():
    rng = np.random.default_rng(2)
    X = rng.random((120, 2))
    K = gram(X)
    chol = IncrementalCholesky.from_matrix(K[:100, :100])
    L_before, Linv_before = chol.L.copy(), chol.L_inv.copy()
    chol.append(K[100:110, :100], K[100:110, 100:110])
    chol.truncate(100)
    assert np.array_equal(chol.L, L_before) and np.array_equal(chol.L_inv, Linv_before)
    chol.append(K[100:120, :100], K[100:120, 100:120])
    check_against_scipy(chol, K)


def test_solve_and_log_det():
    rng = np.random.default_rng(3)
    X = rng.random((60, 3))
    K = gram(X)
    chol = IncrementalCholesky.from_matrix(K)
    b = rng.normal(size=60)
    assert np.allclose(chol.solve(b), np.linalg.solve(K, b), rtol=1e-8, atol=1e-10)
    assert np.isclose(chol.log_det(), np.linalg.slogdet(K)[1])


def test_duplicate_point_without_noise_is_reported():
    X = np.array([[0.1, 0.2], [0.5, 0.5]])
    K = gram(X, noise=0.0)
    chol = IncrementalCholesky.from_matrix(K)
    with pytest.raises(NotPositiveDefinite):
        chol.append(K[:1], K[:1, :1])       # the first point again
    assert chol.n == 2


def test_wrong_shape_rejected():
    chol = IncrementalCholesky.from_matrix(np.eye(3))
    with pytest.raises(ValueError, match="shape"):
        chol.append(np.zeros((1, 2)), np.eye(1))
