"""GP Bayesian optimisation (§2.2.3) with the incremental Cholesky (§2.3) and batch proposals.

Each ``ask``: bring the GP up to date with the told trials (``GaussianProcess.update``: an O(n²)
append, or a refit when ``RefitPolicy`` says so), then maximise the acquisition (log EI by
default, optionally PI) times the feasibility probability (``failures``) over

- every untested combination when the space is finite (up to ``max_enumerate`` combinations, §2.4);
- otherwise ``n_candidates`` uniform candidates plus ``n_local`` perturbations of the best
  trials, then ``n_refine`` perturbations around the winner, then (while n <= ``polish_max_n``)
  up to ``polish_iterations`` L-BFGS-B steps on the Float coordinates of the winner. The polish
  matters most with few points (a precise optimum late in a short search) and its ~30 small GP
  predictions, each reading all of L⁻¹, cost more than the rest of a suggestion at n = 1000.

Batches (``ask(n)`` with n > 1, and pending configurations from earlier asks) use ``batch``:

- ``"liar"``: constant liar / kriging believer (§2.5.4): after choosing a point, append it to the
  GP with a fantasy value (``liar``: "max" = worst observed, the thesis's "low performance";
  "min", "mean", or "believer" = the GP mean, i.e. kriging believer) on the incremental Cholesky
  in O(n²), re-maximise, and finally ``truncate`` the fantasies away (exact).
- ``"sample"``: the thesis's normalised-EI sampling (§2.5.2): draw the batch with probability
  proportional to EI over the candidates.

Options: ``kernel`` ("matern52" | "se"), ``acquisition`` ("ei" | "pi"), ``xi`` (improvement margin),
``n_initial`` (random trials before the GP, default d + 1 capped to 10), ``failure_policy``
("drop" | "penalise" | "feasibility"), ``penalty``, ``fits`` (callable params -> bool: static
memory estimate; configurations that do not fit are never proposed), ``refit_every``,
``refit_fraction``, ``n_restarts``, ``max_fit_points`` (see ``gp``), ``incremental`` (False: refactorise
from scratch at every update, the baseline of the latency benchmark).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.optimize import minimize as scipy_minimize

from .. import checks
from ..acquisition import ACQUISITIONS, log_acquisition, normalised_sample
from ..failures import FailurePolicy
from ..gp import GaussianProcess, RefitPolicy
from ..trials import TrialState
from .base import Sampler
from .random import RandomSampler

LIARS = ("max", "min", "mean", "believer")


def fantasy_value(liar: str, y: np.ndarray, predicted_mean: float) -> float:
    if liar == "max":
        return float(np.max(y))
    if liar == "min":
        return float(np.min(y))
    if liar == "mean":
        return float(np.mean(y))
    return float(predicted_mean)


def local_candidates(space, rng: np.random.Generator, centres: np.ndarray, n: int, scale) -> np.ndarray:
    """n Gaussian perturbations spread over the centres, snapped to valid encodings."""
    if len(centres) == 0 or n <= 0:
        return np.zeros((0, space.dim))
    picks = centres[rng.integers(len(centres), size=n)]
    return space.snap(picks + rng.normal(size=picks.shape) * scale)


class BOSampler(Sampler):
    name = "bo"

    def __init__(self, space, seed: int = 0, *, kernel: str = "matern52", acquisition: str = "ei",
                 xi: float = 0.0, n_initial: int | None = None, batch: str = "liar", liar: str = "max",
                 failure_policy: str = "feasibility", penalty: float | None = None,
                 fits: Callable[[dict], bool] | None = None, n_candidates: int = 256, n_local: int = 128,
                 n_refine: int = 64, max_enumerate: int = 200_000, refit_every: int = 1,
                 refit_fraction: float = 0.1, n_restarts: int = 3, max_fit_points: int = 400,
                 incremental: bool = True, polish_iterations: int = 30, polish_max_n: int = 500):
        super().__init__(space, seed)
        batch = checks.choice("batch strategy", batch, ("liar", "sample"))
        liar = checks.choice("liar", liar, LIARS)
        acquisition = checks.choice("acquisition", acquisition, ACQUISITIONS)
        self.acquisition, self.xi, self.batch, self.liar = acquisition, checks.number("xi", xi), batch, liar
        self.n_initial = (checks.integer("n_initial", n_initial, 0) if n_initial is not None
                          else min(self.space.dim + 1, 10))
        self.failures = FailurePolicy(failure_policy, penalty=penalty)
        if fits is not None and not callable(fits):
            raise ValueError(f"fits must be a function of the parameters, got {fits!r}")
        self.fits = fits
        self.n_candidates = checks.integer("n_candidates", n_candidates, 1)
        self.n_local, self.n_refine = checks.integer("n_local", n_local, 0), checks.integer("n_refine", n_refine, 0)
        self.polish_iterations = checks.integer("polish_iterations", polish_iterations, 0)
        self.polish_max_n = checks.integer("polish_max_n", polish_max_n, 0)
        self._gp_options = dict(kernel=kernel, n_restarts=n_restarts, max_fit_points=max_fit_points, seed=seed,
                                refit=RefitPolicy(every=refit_every, fraction=refit_fraction),
                                incremental=checks.boolean("incremental", incremental))
        self.gp = GaussianProcess(**self._gp_options)
        self._random = RandomSampler(self.space, seed, max_enumerate=max_enumerate)  # checks max_enumerate
        self._finite = None
        if self.space.is_finite and self.space.size <= self._random.max_enumerate:
            configs = self.space.enumerate()
            self._finite = (configs, self.space.encode_many(configs), [self.space.key(c) for c in configs])
        self._encoded: list[np.ndarray] = []     # encoding of each told trial, in order
        self._incumbent = 0.0

    def _reset(self):
        self._encoded = []
        self.gp = GaussianProcess(**self._gp_options)

    def _on_tell(self, trial):
        self._encoded.append(self.space.encode(trial.params))

    # -- data --------------------------------------------------------------------------------
    def _data(self):
        ok = [i for i, t in enumerate(self.trials) if t.state == TrialState.COMPLETE]
        failed = [i for i, t in enumerate(self.trials) if t.state.is_failure]
        enc = np.array(self._encoded) if self._encoded else np.zeros((0, self.space.dim))
        X_ok, X_failed = enc[ok], enc[failed]
        y_ok = np.array([self.trials[i].value for i in ok], dtype=float)
        return X_ok, y_ok, X_failed, np.array(ok + failed)

    def _random_fill(self, n):
        """Random configurations (the initial design), skipping those ``fits`` refuses."""
        self._random.trials = self.trials
        out, refused = [], []
        for _ in range(50):
            self._random.pending = self.pending + out + refused
            proposed = self._random._propose(n - len(out))
            for config in proposed:
                (out if self.fits is None or self.fits(config) else refused).append(config)
            if len(out) >= n or not proposed:
                break
        self._random.pending = []
        return out[:n]

    # -- proposal ----------------------------------------------------------------------------
    def _propose(self, n):
        X_ok, y_ok, X_failed, order = self._data()
        if len(y_ok) < max(self.n_initial, 2):
            return self._random_fill(n)
        rng = self._rng()
        X, y = self.failures.training_data(X_ok, y_ok, X_failed, order)
        self.gp.update(X, y)
        self._incumbent = float(np.min(y))     # the EI target: real observations, never a fantasy
        n_real = self.gp.n
        try:
            if self.failures.policy == "feasibility" and len(X_failed):
                # tested but without a value: as kriging-believer fantasies they leave the mean
                # untouched and remove the uncertainty that would draw the search back there
                mean, _ = self.gp.predict(X_failed)
                self.gp.append(X_failed, mean)
            if self.pending:
                X_pending = self.space.encode_many(self.pending)
                for x in X_pending:
                    self._fantasise(x)
            chosen = self._choose(n, rng, X_ok, y_ok, X_failed)
        finally:
            self.gp.truncate(n_real)
        return chosen

    def _fantasise(self, x):
        mean = self.gp.predict(x[None])[0][0] if self.liar == "believer" else 0.0
        self.gp.append(x[None], [fantasy_value(self.liar, self.gp.y, mean)])

    def _score(self, X_cand, X_ok, X_failed):
        mean, std = self.gp.predict(X_cand)
        return (log_acquisition(self.acquisition, mean, std, self._incumbent, self.xi)
                + self.failures.log_feasibility(X_cand, X_ok, X_failed))

    def _candidates(self, rng, X_ok, y_ok):
        if self._finite is not None:
            configs, encoded, keys = self._finite
            seen = self.seen_keys()
            index = np.array([i for i, k in enumerate(keys) if k not in seen], dtype=int)
            return encoded[index], [configs[i] for i in index]
        scale = np.clip(0.25 * self.gp.lengthscales, 0.01, 0.2) if self.gp.log_theta is not None else 0.1
        best = X_ok[np.argsort(y_ok)[:5]]
        X = np.vstack([self.space.sample_encoded(rng, self.n_candidates),
                       local_candidates(self.space, rng, best, self.n_local, scale)])
        return X, None

    def _pick(self, scores, X_cand, configs, exclude):
        for i in np.argsort(-scores, kind="stable"):
            if i in exclude:
                continue
            config = dict(configs[i]) if configs is not None else self.space.decode(X_cand[i])
            if self.fits is None or self.fits(config):
                return i, config
        return None, None

    def _choose(self, n, rng, X_ok, y_ok, X_failed):
        X_cand, configs = self._candidates(rng, X_ok, y_ok)
        if len(X_cand) == 0:
            return []
        if self.batch == "sample":
            scores = self._score(X_cand, X_ok, X_failed)
            out = []
            for i in normalised_sample(scores, len(scores), rng):
                config = dict(configs[i]) if configs is not None else self.space.decode(X_cand[i])
                if self.fits is None or self.fits(config):
                    out.append(config)
                if len(out) == n:
                    break
            return out
        out, used = [], set()
        for q in range(n):
            scores = self._score(X_cand, X_ok, X_failed)
            i, config = self._pick(scores, X_cand, configs, used)
            if i is None:
                break
            x, score = X_cand[i], scores[i]
            if configs is None and self.n_refine:
                x, score, config = self._refine(rng, x, score, X_ok, X_failed)
            if configs is None and self.polish_iterations and self.gp.n <= self.polish_max_n:
                x, score, config = self._polish(x, score, config, X_ok, X_failed)
            used.add(i)
            out.append(config)
            if q + 1 < n:
                self._fantasise(self.space.encode(config))
        return out

    def _refine(self, rng, x, score, X_ok, X_failed):
        scale = np.clip(0.05 * self.gp.lengthscales, 0.002, 0.05)
        X_local = local_candidates(self.space, rng, x[None], self.n_refine, scale)
        local_scores = self._score(X_local, X_ok, X_failed)
        for j in np.argsort(-local_scores):
            if local_scores[j] <= score:
                break
            config = self.space.decode(X_local[j])
            if self.fits is None or self.fits(config):
                return X_local[j], local_scores[j], config
        return x, score, self.space.decode(x)

    def _polish(self, x, score, config, X_ok, X_failed):
        """L-BFGS-B on the log acquisition over the active Float coordinates, from the best
        candidate; forward-difference gradients cost one batched GP prediction per step."""
        free = np.flatnonzero(self.space.continuous_mask & ~self.space.inactive_mask(config))
        if len(free) == 0:
            return x, score, config
        step = 1e-6

        def negative(z):
            points = np.tile(x, (len(free) + 1, 1))
            points[:, free] = z
            steps = np.where(z + step <= 1.0, step, -step)
            points[1 + np.arange(len(free)), free] += steps
            values = self._score(points, X_ok, X_failed)
            return -values[0], -(values[1:] - values[0]) / steps

        result = scipy_minimize(negative, x[free], jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * len(free),
                                options={"maxiter": self.polish_iterations})
        if not np.isfinite(result.fun) or -result.fun <= score:
            return x, score, config
        polished = x.copy()
        polished[free] = result.x
        polished = self.space.snap(polished[None])[0]
        polished_config = self.space.decode(polished)
        if self.fits is not None and not self.fits(polished_config):
            return x, score, config
        return polished, -float(result.fun), polished_config
