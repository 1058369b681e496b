"""GP: kernel formulas and gradients, marginal likelihood (eq. 2.11), posterior (eq. 2.7), refits."""

import math

import numpy as np
import pytest
from scipy.special import gamma, kv

from HPOToolsLib.gp import GaussianProcess, RefitPolicy, log_marginal_likelihood
from HPOToolsLib.kernels import Matern52, SquaredExponential, make_kernel


def test_kernels_match_their_definitions():
    rng = np.random.default_rng(0)
    X1, X2 = rng.random((5, 3)), rng.random((4, 3))
    ls, var = np.array([0.3, 0.7, 1.5]), 1.7
    r = np.sqrt((((X1[:, None] - X2[None]) / ls) ** 2).sum(-1))
    assert np.allclose(SquaredExponential()(X1, X2, ls, var), var * np.exp(-0.5 * r ** 2))
    # general Matérn (eq. 2.9) with nu = 5/2 through the Bessel function
    nu = 2.5
    z = np.sqrt(2 * nu) * r
    matern = var * 2 ** (1 - nu) / gamma(nu) * z ** nu * kv(nu, z)
    assert np.allclose(Matern52()(X1, X2, ls, var), matern, rtol=1e-10)


@pytest.mark.parametrize("name", ["se", "matern52"])
def test_kernel_gradients_match_finite_differences(name):
    kernel = make_kernel(name)
    rng = np.random.default_rng(1)
    X = rng.random((7, 3))
    log_ls, log_var = np.log([0.4, 0.9, 0.2]), math.log(1.3)
    grads = kernel.gradients(X, np.exp(log_ls), math.exp(log_var))
    h = 1e-6
    for j in range(3):
        step = np.zeros(3)
        step[j] = h
        fd = (kernel(X, X, np.exp(log_ls + step), math.exp(log_var))
              - kernel(X, X, np.exp(log_ls - step), math.exp(log_var))) / (2 * h)
        assert np.allclose(grads[j], fd, atol=1e-7)
    fd_var = (kernel(X, X, np.exp(log_ls), math.exp(log_var + h))
              - kernel(X, X, np.exp(log_ls), math.exp(log_var - h))) / (2 * h)
    assert np.allclose(grads[3], fd_var, atol=1e-7)


@pytest.mark.parametrize("name", ["se", "matern52"])
def test_log_marginal_likelihood_and_gradient(name):
    kernel = make_kernel(name)
    rng = np.random.default_rng(2)
    X = rng.random((15, 2))
    y = np.sin(6 * X[:, 0]) + X[:, 1]
    theta = np.log([0.3, 0.6, 1.2, 0.01])
    value, grad = log_marginal_likelihood(kernel, X, y, theta, jitter=0.0)
    K = kernel(X, X, np.exp(theta[:2]), math.exp(theta[2])) + math.exp(theta[3]) * np.eye(15)
    direct = -0.5 * y @ np.linalg.solve(K, y) - 0.5 * np.linalg.slogdet(K)[1] - 7.5 * math.log(2 * math.pi)
    assert np.isclose(value, direct, rtol=1e-10)
    h = 1e-6
    for i in range(4):
        step = np.zeros(4)
        step[i] = h
        fd = (log_marginal_likelihood(kernel, X, y, theta + step, 0.0)[0]
              - log_marginal_likelihood(kernel, X, y, theta - step, 0.0)[0]) / (2 * h)
        assert np.isclose(grad[i], fd, rtol=1e-5, atol=1e-6)


def test_posterior_matches_dense_solve():
    rng = np.random.default_rng(3)
    X = rng.random((40, 3))
    y = 3 * np.cos(5 * X[:, 0]) + X[:, 1] ** 2 + 10
    gp = GaussianProcess("matern52", seed=0)
    gp.fit(X, y)
    Xs = rng.random((25, 3))
    mean, std = gp.predict(Xs)
    k = lambda A, B: Matern52()(A, B, gp.lengthscales, gp.variance)
    K = k(X, X) + gp.noise * np.eye(40)
    ys = (y - y.mean()) / y.std()
    mean_direct = k(Xs, X) @ np.linalg.solve(K, ys) * y.std() + y.mean()
    cov = k(Xs, Xs) - k(Xs, X) @ np.linalg.solve(K, k(X, Xs))
    assert np.allclose(mean, mean_direct, rtol=1e-8, atol=1e-8)
    assert np.allclose(std, np.sqrt(np.diag(cov)) * y.std(), rtol=1e-6, atol=1e-8)


def test_appends_equal_a_fresh_factorisation_with_the_same_hyperparameters():
    rng = np.random.default_rng(4)
    X = rng.random((80, 2))
    y = np.sin(4 * X).sum(1)
    gp = GaussianProcess("se", seed=0, refit=RefitPolicy(every=10 ** 6, fraction=10.0, max_mean_z2=math.inf))
    gp.fit(X[:50], y[:50])
    for i in range(50, 80, 3):
        assert not gp.update(X[:i + 3], y[:i + 3])          # incremental path
    fresh = GaussianProcess("se")
    fresh.log_theta, fresh.y_mean, fresh.y_std = gp.log_theta.copy(), gp.y_mean, gp.y_std
    fresh.X, fresh.y = X, y
    fresh._factorise()
    Xs = rng.random((10, 2))
    (mean, std), (mean_fresh, std_fresh) = gp.predict(Xs), fresh.predict(Xs)
    assert np.allclose(mean, mean_fresh, rtol=1e-9, atol=1e-12)
    # variances near zero come from a difference of O(1) terms: compare them at that scale
    assert np.allclose(std ** 2, std_fresh ** 2, atol=1e-10 * gp.variance * gp.y_std ** 2)


def test_refit_policy_every_m_and_on_degradation():
    rng = np.random.default_rng(5)
    X = rng.random((60, 2))
    y = X.sum(1)
    gp = GaussianProcess("matern52", seed=0, refit=RefitPolicy(every=5, fraction=0.0, max_mean_z2=9.0))
    gp.fit(X[:20], y[:20])
    refits = [gp.update(X[:n], y[:n]) for n in range(21, 31)]
    assert refits == [False] * 4 + [True] + [False] * 4 + [True]
    # three wildly mispredicted points: the fit has degraded, refit before the 5-point schedule
    Xbad = np.vstack([X[:30], rng.random((3, 2))])
    ybad = np.concatenate([y[:30], [50.0, -40.0, 60.0]])
    assert [gp.update(Xbad[:n], ybad[:n]) for n in (31, 32, 33)] == [False, False, True]


def test_non_finite_data_refused():
    gp = GaussianProcess()
    with pytest.raises(ValueError, match="finite"):
        gp.fit(np.zeros((2, 1)), np.array([0.0, np.nan]))
    gp.fit(np.array([[0.1], [0.9]]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="finite"):
        gp.append(np.array([[0.5]]), [np.inf])
    assert gp.n == 2


def test_hyperparameters_find_the_relevant_dimension():
    rng = np.random.default_rng(6)
    X = rng.random((60, 3))
    y = np.sin(6 * X[:, 0])          # only x0 matters
    gp = GaussianProcess("matern52", seed=0)
    gp.fit(X, y)
    assert gp.lengthscales[0] < 0.5 * min(gp.lengthscales[1:])
    mean, _ = gp.predict(X[:5])
    assert np.allclose(mean, y[:5], atol=0.05)


def test_full_refactorisation_baseline_predicts_the_same():
    rng = np.random.default_rng(7)
    X = rng.random((70, 3))
    y = np.cos(3 * X).sum(1)
    policy = RefitPolicy(every=10 ** 6, fraction=10.0, max_mean_z2=math.inf)
    incremental = GaussianProcess("matern52", seed=0, refit=policy)
    full = GaussianProcess("matern52", seed=0, refit=policy, incremental=False)
    for gp in (incremental, full):
        gp.fit(X[:40], y[:40])
        for n in range(41, 71):
            gp.update(X[:n], y[:n])
    assert np.array_equal(incremental.log_theta, full.log_theta) and incremental.n == full.n == 70
    Xs = rng.random((20, 3))
    (m1, s1), (m2, s2) = incremental.predict(Xs), full.predict(Xs)
    assert np.allclose(m1, m2, rtol=1e-9, atol=1e-9)
    assert np.allclose(s1 ** 2, s2 ** 2, atol=1e-10 * incremental.variance * incremental.y_std ** 2)
