"""Hyperband (Li et al. 2017, §2.5.1) and Hyperband + BO (§2.5.2, §2.5.4) as a job scheduler.

Schedule: with maximum resource R and keep-ratio η, s_max = ⌊log_η R⌋ and B = (s_max + 1) R.
Bracket s (s = s_max … 0) starts n = ⌈B/R · η^s/(s + 1)⌉ configurations at resource r = R η^−s and
runs successive halving: at rung i, nᵢ = ⌊n η^−i⌋ configurations are trained to rᵢ = r η^i and the
best ⌊n η^−(i+1)⌋ are promoted. ``bracket_schedule(R, eta)`` returns these (nᵢ, rᵢ) lists; for
R = 27, η = 3 it is Li et al.'s table: s=3: (27,1) (9,3) (3,9) (1,27); s=2: (12,3) (4,9) (1,27);
s=1: (6,9) (2,27); s=0: (4,27). Brackets repeat in that order (one Hyperband *iteration* is
s_max + 1 brackets) until ``max_iterations`` (None: forever).

Driving it (a study store, ``minimize``, or a benchmark):

    scheduler = make_scheduler("hyperband-bo-liar", space, seed=0, max_budget=27, eta=3)
    while (job := scheduler.next_job()) is not None:
        value = train(job.params, up_to=job.budget, resume_from=job.resume_from,
                      checkpoint=f"ckpt/{job.config_id}")
        scheduler.report(job, value)            # or report(job, None, TrialState.OOM, error=...)

- ``Job(job_id, config_id, params, budget, resume_from, bracket, rung)``: train configuration
  ``config_id`` up to the *total* resource ``budget``. ``resume_from`` is None for a fresh start,
  else the budget it was trained to at the previous rung: load the checkpoint saved under
  ``config_id`` and train only ``budget − resume_from`` more (§2.5.1: training is resumed, not
  restarted).
- ``next_job()`` returns None when every remaining job waits for results of running jobs and no new
  bracket may start (``max_iterations`` reached), or when everything is done (``finished``). With
  parallel workers, a new bracket starts whenever the running ones have nothing ready.
- ``report(job, value, state=COMPLETE, error=None, intermediate=None) -> Trial``: non-finite values
  become FAILED; failed configurations are never promoted.
- ``trials``: the reported results as ``Trial`` (with budget, bracket, rung, config_id, resume_from).
  ``load_trials(trials)`` rebuilds the state from them (QUEUED/RUNNING trials are handed out again
  by ``next_job``); configurations of a started bracket that had not been handed out are selected
  afresh.
- ``best_trial()``: the best result at the largest budget reached.

Configuration selection at the start of each bracket (``selector``):

- ``"random"``: Hyperband.
- ``"bo-thesis"`` (§2.5.2): a GP (squared-exponential) on (configuration, training budget) — every
  rung result is a point; EI is predicted at the bracket's first-rung budget, normalised into a
  probability distribution over the candidates (all untested combinations of a finite space), and
  the bracket's configurations are drawn from it.
- ``"bo-liar"`` (§2.5.4, the fix the thesis proposes): the same GP model (Matérn 5/2), EI predicted at
  ``predict_at`` ("auto": the largest budget with at least d + 2 results, "first", or "max");
  the configurations are chosen one after the other by argmax, each appended to the GP with a
  constant-liar value on the incremental Cholesky (O(n²) per configuration), then removed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from . import checks
from .acquisition import ACQUISITIONS, log_acquisition, normalised_sample
from .failures import FailurePolicy
from .gp import GaussianProcess, RefitPolicy
from .samplers.bo import LIARS, fantasy_value, local_candidates
from .space import Space
from .trials import Trial, TrialState, finished_outcome


MAX_BRACKET_CONFIGURATIONS = 100_000


def bracket_schedule(max_budget: float, eta: float = 3) -> list[list[tuple[int, float]]]:
    """[(nᵢ, rᵢ) for each rung] for s = s_max … 0 (Li et al., Algorithm 1)."""
    checks.number("eta", eta, 1.0, above=True)
    checks.number("max_budget (R)", max_budget, 1.0)
    s_max = int(math.floor(math.log(max_budget) / math.log(eta) + 1e-9))
    if eta ** s_max > MAX_BRACKET_CONFIGURATIONS:  # the first bracket samples that many at once
        raise ValueError(f"max_budget (R) {max_budget:g} with eta {eta:g} gives a first bracket of "
                         f"{eta ** s_max:,.0f} configurations (at most {MAX_BRACKET_CONFIGURATIONS:,}); measure "
                         f"the budget in larger units or raise eta")
    total = (s_max + 1) * max_budget
    schedule = []
    for s in range(s_max, -1, -1):
        n = int(math.ceil(total / max_budget * eta ** s / (s + 1) - 1e-9))
        r = max_budget * eta ** (-s)
        rungs = [(int(math.floor(n * eta ** (-i) + 1e-9)), _clean_budget(r * eta ** i)) for i in range(s + 1)]
        schedule.append(rungs)
    return schedule


def _clean_budget(b: float) -> float:
    return float(round(b)) if abs(b - round(b)) < 1e-9 else b


@dataclass
class Job:
    job_id: int
    config_id: int
    params: dict
    budget: float
    resume_from: float | None
    bracket: int
    rung: int


@dataclass
class _Bracket:
    index: int
    rungs: list[tuple[int, float]]
    configs: dict[int, dict] = field(default_factory=dict)      # config_id -> params
    rung: int = 0
    members: list[list[int]] = field(default_factory=list)      # config ids per rung
    dispatched: list[set] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)           # per rung: config_id -> value|None

    def __post_init__(self):
        self.dispatched = [set() for _ in self.rungs]
        self.results = [{} for _ in self.rungs]
        self.members = [[] for _ in self.rungs]

    @property
    def finished(self) -> bool:
        return self.rung >= len(self.rungs)

    def ready(self) -> list[int]:
        if self.finished:
            return []
        return [c for c in self.members[self.rung] if c not in self.dispatched[self.rung]]

    def promote(self) -> None:
        """Advance while the current rung has all its results."""
        while not self.finished and len(self.results[self.rung]) == len(self.members[self.rung]):
            results = self.results[self.rung]
            self.rung += 1
            if self.finished:
                return
            good = sorted((v, c) for c, v in results.items() if v is not None)
            self.members[self.rung] = [c for _, c in good[: self.rungs[self.rung][0]]]


class RandomSelector:
    name = "random"

    def __init__(self, space: Space, seed: int = 0, **unused):
        if unused:
            raise ValueError(f"unknown option(s) for Hyperband: {sorted(unused)}")
        self.space = space

    def select(self, n: int, budget: float, trials: list[Trial], exclude: set, rng) -> list[dict]:
        return _random_configs(self.space, n, exclude, rng)


def _random_configs(space: Space, n: int, exclude: set, rng) -> list[dict]:
    if not space.is_finite:
        return space.sample(rng, n)
    out = []
    if space.size <= 200_000:
        untested = [c for c in space.enumerate() if space.key(c) not in exclude]
        if len(untested) < n:   # a small finite space is exhausted: allow repeats across brackets
            untested = space.enumerate()
        return [untested[i] for i in rng.choice(len(untested), size=min(n, len(untested)), replace=False)]
    seen = set(exclude)
    while len(out) < n:
        c = space.sample(rng, 1)[0]
        if space.key(c) not in seen:
            seen.add(space.key(c))
            out.append(c)
    return out


class _BOSelector:
    """GP on (encoded configuration, encoded budget), shared by the two Hyperband+BO variants."""

    kernel = "matern52"

    def __init__(self, space: Space, seed: int = 0, *, max_budget: float = 27, min_budget: float = 1,
                 acquisition: str = "ei", n_candidates: int = 512, n_local: int = 256,
                 failure_policy: str = "drop", max_enumerate: int = 200_000, n_restarts: int = 3,
                 max_fit_points: int = 400, refit_every: int = 1, refit_fraction: float = 0.1):
        self.space = space
        self.max_budget, self.min_budget = max_budget, min_budget
        self.acquisition = checks.choice("acquisition", acquisition, ACQUISITIONS)
        self.n_candidates = checks.integer("n_candidates", n_candidates, 1)
        self.n_local = checks.integer("n_local", n_local, 0)
        max_enumerate = checks.integer("max_enumerate", max_enumerate, 0)
        self.failures = FailurePolicy(failure_policy)
        self.gp = GaussianProcess(self.kernel, n_restarts=n_restarts, max_fit_points=max_fit_points, seed=seed,
                                  refit=RefitPolicy(every=refit_every, fraction=refit_fraction))
        self._finite = None
        if space.is_finite and space.size <= max_enumerate:
            configs = space.enumerate()
            self._finite = (configs, space.encode_many(configs), [space.key(c) for c in configs])

    def budget_coord(self, budget: float) -> float:
        if self.max_budget <= self.min_budget:
            return 1.0
        return math.log(budget / self.min_budget) / math.log(self.max_budget / self.min_budget)

    def _data(self, trials: list[Trial]):
        ok = [t for t in trials if t.state == TrialState.COMPLETE and t.budget is not None]
        failed = [t for t in trials if t.state.is_failure and t.budget is not None]
        enc = lambda ts: (np.array([np.append(self.space.encode(t.params), self.budget_coord(t.budget)) for t in ts])
                          if ts else np.zeros((0, self.space.dim + 1)))
        order = np.array([t.number for t in ok] + [t.number for t in failed])
        return enc(ok), np.array([t.value for t in ok], dtype=float), enc(failed), order, ok

    def _candidates(self, rng, exclude: set, X_ok, y_ok):
        if self._finite is not None:
            configs, encoded, keys = self._finite
            index = np.array([i for i, k in enumerate(keys) if k not in exclude], dtype=int)
            if len(index) == 0:
                index = np.arange(len(configs))
            return encoded[index], [configs[i] for i in index]
        best = X_ok[np.argsort(y_ok)[:5], :-1] if len(y_ok) else np.zeros((0, self.space.dim))
        X = np.vstack([self.space.sample_encoded(rng, self.n_candidates),
                       local_candidates(self.space, rng, best, self.n_local, 0.05)])
        return X, None

    def _scores(self, X_cand, budget_coord, X_ok, X_failed):
        Xb = np.hstack([X_cand, np.full((len(X_cand), 1), budget_coord)])
        mean, std = self.gp.predict(Xb)
        at_budget = np.isclose(self.gp.X[:, -1], budget_coord)
        best = float(np.min(self.gp.y[at_budget])) if at_budget.any() else float(np.min(mean))
        return log_acquisition(self.acquisition, mean, std, best) + self.failures.log_feasibility(Xb, X_ok, X_failed)

    def select(self, n: int, budget: float, trials: list[Trial], exclude: set, rng) -> list[dict]:
        X_ok, y_ok, X_failed, order, ok = self._data(trials)
        if len(y_ok) < 2:
            return _random_configs(self.space, n, exclude, rng)
        X, y = self.failures.training_data(X_ok, y_ok, X_failed, order)
        self.gp.update(X, y)
        X_cand, configs = self._candidates(rng, exclude, X_ok, y_ok)
        chosen = self._choose(n, budget, X_cand, X_ok, X_failed, rng, ok)
        return [dict(configs[i]) if configs is not None else self.space.decode(X_cand[i]) for i in chosen]


class ThesisBOSelector(_BOSelector):
    name = "bo-thesis"
    kernel = "se"

    def _choose(self, n, budget, X_cand, X_ok, X_failed, rng, ok):
        scores = self._scores(X_cand, self.budget_coord(budget), X_ok, X_failed)
        return list(normalised_sample(scores, n, rng))


class LiarBOSelector(_BOSelector):
    name = "bo-liar"

    def __init__(self, space, seed=0, *, predict_at: str = "auto", liar: str = "max", **options):
        super().__init__(space, seed, **options)
        if predict_at not in ("auto", "first", "max"):
            raise ValueError(f"predict_at must be 'auto', 'first' or 'max', got {predict_at!r}")
        self.predict_at, self.liar = predict_at, checks.choice("liar", liar, LIARS)

    def _target_budget(self, budget, ok):
        if self.predict_at == "first":
            return budget
        if self.predict_at == "max":
            return self.max_budget
        counts: dict[float, int] = {}
        for t in ok:
            counts[t.budget] = counts.get(t.budget, 0) + 1
        enough = [b for b, c in counts.items() if c >= self.space.dim + 2]
        return max(enough) if enough else budget

    def _choose(self, n, budget, X_cand, X_ok, X_failed, rng, ok):
        coord = self.budget_coord(self._target_budget(budget, ok))
        at_budget = np.isclose(self.gp.X[:, -1], coord)
        lies_from = self.gp.y[at_budget] if at_budget.any() else self.gp.y
        n_real = self.gp.n
        chosen: list[int] = []
        try:
            for _ in range(min(n, len(X_cand))):
                scores = self._scores(X_cand, coord, X_ok, X_failed)
                scores[chosen] = -np.inf
                i = int(np.argmax(scores))
                chosen.append(i)
                x = np.append(X_cand[i], coord)[None]
                mean = self.gp.predict(x)[0][0] if self.liar == "believer" else 0.0
                self.gp.append(x, [fantasy_value(self.liar, lies_from, mean)])
        finally:
            self.gp.truncate(n_real)
        return chosen


SELECTORS = {"random": RandomSelector, "bo-thesis": ThesisBOSelector, "bo-liar": LiarBOSelector}
SCHEDULERS = {"hyperband": "random", "hyperband-bo-thesis": "bo-thesis", "hyperband-bo-liar": "bo-liar"}


class HyperbandScheduler:
    def __init__(self, space, seed: int = 0, *, max_budget: float = 27, eta: float = 3,
                 selector: str = "random", max_iterations: int | None = None, **selector_options):
        self.space = Space.of(space)
        self.seed = int(seed)
        self.max_budget, self.eta = max_budget, eta
        self.schedule = bracket_schedule(max_budget, eta)
        self.min_budget = self.schedule[0][0][1]
        if selector not in SELECTORS:
            raise ValueError(f"unknown selector {selector!r} (expected one of {sorted(SELECTORS)})")
        options = dict(selector_options)
        if selector != "random":
            options.update(max_budget=max_budget, min_budget=self.min_budget)
        try:
            self.selector = SELECTORS[selector](self.space, seed, **options)
        except TypeError as exc:
            raise ValueError(f"bad option for selector {selector!r}: {exc}") from None
        self.max_iterations = None if max_iterations is None else checks.integer("max_iterations", max_iterations, 1)
        self._reset()

    def _reset(self):
        self.trials: list[Trial] = []
        self.brackets: list[_Bracket] = []
        self.requeued: list[Job] = []
        self._next_config = 0
        self._next_job = 0

    @property
    def n_brackets_per_iteration(self) -> int:
        return len(self.schedule)

    def _may_start_bracket(self) -> bool:
        return (self.max_iterations is None
                or len(self.brackets) < self.max_iterations * self.n_brackets_per_iteration)

    @property
    def finished(self) -> bool:
        return (not self._may_start_bracket() and not self.requeued
                and all(b.finished for b in self.brackets))

    def _start_bracket(self) -> _Bracket:
        index = len(self.brackets)
        bracket = _Bracket(index, self.schedule[index % self.n_brackets_per_iteration])
        self.brackets.append(bracket)
        self._fill_bracket(bracket)
        return bracket

    def _fill_bracket(self, bracket: _Bracket) -> None:
        n0, r0 = bracket.rungs[0]
        missing = n0 - len(bracket.members[0])
        if missing <= 0:
            return
        rng = np.random.default_rng([self.seed, bracket.index, len(self.trials)])
        exclude = {self.space.key(p) for b in self.brackets for p in b.configs.values()}
        for params in self.selector.select(missing, r0, self.trials, exclude, rng):
            bracket.configs[self._next_config] = params
            bracket.members[0].append(self._next_config)
            self._next_config += 1

    def _job(self, bracket: _Bracket, config_id: int) -> Job:
        rung = bracket.rung
        job = Job(self._next_job, config_id, dict(bracket.configs[config_id]), bracket.rungs[rung][1],
                  bracket.rungs[rung - 1][1] if rung > 0 else None, bracket.index, rung)
        self._next_job += 1
        bracket.dispatched[rung].add(config_id)
        return job

    def next_job(self) -> Job | None:
        if self.requeued:
            return self.requeued.pop(0)
        for bracket in self.brackets:
            ready = bracket.ready()
            if ready:
                return self._job(bracket, ready[0])
        if self._may_start_bracket():
            bracket = self._start_bracket()
            ready = bracket.ready()
            if ready:
                return self._job(bracket, ready[0])
        return None

    def report(self, job: Job, value: Any, state: TrialState | str = TrialState.COMPLETE,
               error: str | None = None, intermediate: dict | None = None) -> Trial:
        state, value, error = finished_outcome(value, state, error, "report()")
        trial = Trial(number=len(self.trials), params=dict(job.params), state=state, value=value, error=error,
                      budget=job.budget, intermediate=dict(intermediate or {}), bracket=job.bracket,
                      rung=job.rung, config_id=job.config_id, resume_from=job.resume_from)
        self.trials.append(trial)
        self._record(trial)
        return trial

    def _record(self, trial: Trial) -> None:
        bracket = self.brackets[trial.bracket]
        bracket.results[trial.rung][trial.config_id] = trial.value
        bracket.promote()

    def load_trials(self, trials: Iterable[Trial]) -> None:
        """Rebuild from trials (finished ones and QUEUED/RUNNING ones, which are handed out again)."""
        self._reset()
        trials = sorted(trials, key=lambda t: t.number)
        for t in trials:
            if t.bracket is None or t.rung is None or t.config_id is None:
                raise ValueError(f"trial {t.number} has no bracket/rung/config_id: not a Hyperband trial")
            while len(self.brackets) <= t.bracket:
                index = len(self.brackets)
                self.brackets.append(_Bracket(index, self.schedule[index % self.n_brackets_per_iteration]))
            bracket = self.brackets[t.bracket]
            if t.config_id not in bracket.configs:
                bracket.configs[t.config_id] = dict(t.params)
                if t.rung == 0:
                    bracket.members[0].append(t.config_id)
            self._next_config = max(self._next_config, t.config_id + 1)
        for t in trials:     # rung-0 results first establish each bracket's members, then promotions
            if t.state.is_finished:
                t = Trial.from_dict(t.to_dict())
                t.number = len(self.trials)
                self.trials.append(t)
        for bracket in self.brackets:
            self._fill_bracket(bracket)
        for t in self.trials:
            self.brackets[t.bracket].results[t.rung][t.config_id] = t.value
        for bracket in self.brackets:
            for rung in range(len(bracket.rungs)):
                bracket.dispatched[rung] = set(bracket.results[rung])
            bracket.promote()
        for t in trials:
            if not t.state.is_finished:
                bracket = self.brackets[t.bracket]
                if bracket.rung == t.rung and t.config_id in bracket.members[t.rung]:
                    self.requeued.append(self._job(bracket, t.config_id))

    def best_trial(self) -> Trial | None:
        done = [t for t in self.trials if t.state == TrialState.COMPLETE]
        if not done:
            return None
        top = max(t.budget for t in done)
        return min((t for t in done if t.budget == top), key=lambda t: t.value)


def make_scheduler(method: str, space, seed: int = 0, **options) -> HyperbandScheduler:
    """method: "hyperband", "hyperband-bo-thesis" or "hyperband-bo-liar"; options: ``max_budget`` (R),
    ``eta``, ``max_iterations`` and the selector's options (see the module docstring)."""
    if method not in SCHEDULERS:
        raise ValueError(f"unknown multi-fidelity method {method!r} (expected one of {sorted(SCHEDULERS)})")
    return HyperbandScheduler(space, seed, selector=SCHEDULERS[method], **options)
