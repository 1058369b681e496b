"""Acquisition functions for minimisation (§2.2.2) and the thesis's normalised-EI sampling (§2.5.2).

With u = (y* − μ(x) − ξ) / σ(x) (eq. 2.15; y* the best value so far, ξ ≥ 0 an optional margin):

- ``probability_of_improvement``: PI = Φ(u)                                  (eq. 2.13)
- ``expected_improvement``:       EI = σ (u Φ(u) + φ(u))                     (eq. 2.14)
- ``log_expected_improvement``:   log EI computed without underflow: for u ≪ 0, EI underflows to 0
  in floating point long before log EI stops being informative, which would make the argmax arbitrary.
  log h(u), h(u) = u Φ(u) + φ(u), uses h = φ(u)(1 − |u| R(|u|)) with the Mills ratio
  R(t) = Φ(−t)/φ(t) = √(π/2) erfcx(t/√2) for −100 < u ≤ −1 (as in Ament et al., "Unexpected
  improvements to expected improvement", 2023), and below −100, where 1 − |u| R(|u|) cancels, its
  asymptotic series 1/u² − 3/u⁴ + 15/u⁶ − 105/u⁸ (relative error < 1e-12 there).
- ``normalised_sample``: draw indices with probability acquisition / Σ acquisition, without
  replacement (the thesis variant of Hyperband+BO, §2.5.2).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erfcx, log_ndtr, ndtr

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
LOG_SQRT_PI_2 = 0.5 * math.log(math.pi / 2.0)
ASYMPTOTIC_BELOW = -100.0


def _u(mean, std, best, xi=0.0):
    std = np.maximum(np.asarray(std, dtype=float), 1e-300)
    return (best - np.asarray(mean, dtype=float) - xi) / std, std


def probability_of_improvement(mean, std, best, xi=0.0):
    u, _ = _u(mean, std, best, xi)
    return ndtr(u)


def expected_improvement(mean, std, best, xi=0.0):
    u, std = _u(mean, std, best, xi)
    return std * (u * ndtr(u) + np.exp(-0.5 * u * u - LOG_SQRT_2PI))


def log_h(u):
    """log(u Φ(u) + φ(u)), stable for every finite u."""
    u = np.asarray(u, dtype=float)
    out = np.empty_like(u)
    upper = u > -1.0
    uu = u[upper]
    out[upper] = np.log(uu * ndtr(uu) + np.exp(-0.5 * uu * uu - LOG_SQRT_2PI))
    middle = (~upper) & (u > ASYMPTOTIC_BELOW)
    um = u[middle]
    # h = φ(u) (1 − |u| R(|u|)), with |u| R(|u|) = exp(log(erfcx(|u|/√2) |u|) + log √(π/2)) < 1
    log_t = np.log(erfcx(-um / math.sqrt(2.0)) * np.abs(um)) + LOG_SQRT_PI_2
    out[middle] = -0.5 * um * um - LOG_SQRT_2PI + _log1mexp(log_t)
    lower = u <= ASYMPTOTIC_BELOW
    ul = u[lower]
    w = 1.0 / (ul * ul)
    out[lower] = -0.5 * ul * ul - LOG_SQRT_2PI + np.log(w * (1.0 - 3.0 * w + 15.0 * w * w - 105.0 * w ** 3))
    return out


def _log1mexp(x):
    """log(1 − exp(x)) for x < 0."""
    return np.where(x > -math.log(2.0), np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def log_expected_improvement(mean, std, best, xi=0.0):
    u, std = _u(mean, std, best, xi)
    return log_h(u) + np.log(std)


def log_probability_of_improvement(mean, std, best, xi=0.0):
    u, _ = _u(mean, std, best, xi)
    return log_ndtr(u)


ACQUISITIONS = {"ei": log_expected_improvement, "pi": log_probability_of_improvement}


def log_acquisition(name: str, mean, std, best, xi=0.0):
    """Log of the named acquisition ('ei' or 'pi'): the quantity samplers maximise (a log, so the
    feasibility probability multiplies in as an added log)."""
    try:
        return ACQUISITIONS[name](mean, std, best, xi)
    except KeyError:
        raise ValueError(f"unknown acquisition {name!r} (expected one of {sorted(ACQUISITIONS)})") from None


def normalised_sample(log_values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct indices drawn with probability ∝ exp(log_values) (§2.5.2)."""
    log_values = np.asarray(log_values, dtype=float)
    k = min(k, len(log_values))
    weights = np.exp(log_values - np.max(log_values))
    weights = np.where(np.isfinite(weights), weights, 0.0)
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    return rng.choice(len(log_values), size=k, replace=False, p=weights / weights.sum())
