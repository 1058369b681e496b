"""EI, PI and log-EI (eq. 2.13-2.16) against numerical integration, and normalised-EI sampling."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from HPOToolsLib.acquisition import (expected_improvement, log_acquisition, log_expected_improvement,
                                     normalised_sample, probability_of_improvement)


@pytest.mark.parametrize("mean,std,best", [(0.0, 1.0, 0.0), (1.0, 0.5, 0.2), (-0.3, 2.0, 0.4), (5.0, 0.7, 1.0)])
def test_ei_and_pi_against_numerical_integration(mean, std, best):
    density = stats.norm(mean, std).pdf
    ei_num = integrate.quad(lambda y: (best - y) * density(y), -np.inf, best, epsabs=1e-13)[0]
    pi_num = integrate.quad(density, -np.inf, best, epsabs=1e-13)[0]
    assert np.isclose(expected_improvement(mean, std, best), ei_num, rtol=1e-7, atol=1e-13)
    assert np.isclose(probability_of_improvement(mean, std, best), pi_num, rtol=1e-7, atol=1e-13)


def test_log_ei_matches_log_of_ei_where_ei_is_representable():
    mean = np.linspace(-5, 30, 400)
    ei = expected_improvement(mean, 1.0, 0.0)
    ok = ei > 1e-280
    assert np.allclose(log_expected_improvement(mean[ok], 1.0, 0.0), np.log(ei[ok]), rtol=1e-9, atol=1e-9)


def test_log_ei_is_finite_and_monotone_where_ei_underflows():
    mean = np.geomspace(40, 1e9, 2000)       # EI underflows to exactly 0 for all of these
    assert np.all(expected_improvement(mean, 1.0, 0.0) == 0)
    log_ei = log_expected_improvement(mean, 1.0, 0.0)
    assert np.all(np.isfinite(log_ei)) and np.all(np.diff(log_ei) < 0)
    # far tail: log EI ~ -u^2/2 - log(sqrt(2 pi)) - 2 log|u| (Mills ratio asymptote)
    u = 40.0
    assert np.isclose(log_expected_improvement(u, 1.0, 0.0), -u * u / 2 - 0.5 * math.log(2 * math.pi) - 2 * math.log(u),
                      rtol=1e-3)


def test_log_ei_against_high_precision_integration():
    # EI = sigma * int_u^inf Phi(-t) dt for u = (mu - best)/sigma; compare logs in the middle branch
    for u in (1.5, 3.0, 8.0, 20.0, 99.0, 101.0, 300.0):
        tail = integrate.quad(lambda t: math.exp(stats.norm.logsf(t) + u * u / 2), u, u + 50, epsabs=0, epsrel=1e-12)[0]
        assert np.isclose(log_expected_improvement(u, 1.0, 0.0), math.log(tail) - u * u / 2, rtol=1e-8)


def test_log_acquisition_names():
    assert np.isclose(log_acquisition("pi", 1.0, 1.0, 0.0), math.log(stats.norm.cdf(-1.0)))
    with pytest.raises(ValueError, match="unknown acquisition"):
        log_acquisition("ucb", 0.0, 1.0, 0.0)


def test_normalised_sampling_follows_the_weights_without_replacement():
    rng = np.random.default_rng(0)
    log_values = np.log(np.array([1.0, 1.0, 98.0]))
    picks = [normalised_sample(log_values, 1, rng)[0] for _ in range(2000)]
    assert 0.96 < np.mean(np.array(picks) == 2) < 1.0
    both = normalised_sample(log_values, 3, rng)
    assert sorted(both) == [0, 1, 2]
