"""The interface every sampler implements (ask/tell, batch ask, state rebuilt from trials).

    sampler = make_sampler("bo", space, seed=0, **options)
    configs = sampler.ask(n=4)                 # list of dicts; they are now *pending*
    sampler.tell(configs[0], 0.31)             # COMPLETE with a finite value
    sampler.tell(configs[1], None, TrialState.OOM, error="CUDA out of memory")
    sampler.tell(configs[2], float("nan"))     # recorded as FAILED: never reaches the GP

- ``ask(n)`` returns up to n new configurations (fewer, possibly none, when a finite space or
  grid is exhausted). Pending configurations (asked, not told) are taken into account: finite
  spaces never propose them twice, BO treats them as fantasies (constant liar).
- ``tell(params, value, state=COMPLETE, error=None) -> Trial`` records a result; a non-finite or
  non-numeric value with state COMPLETE becomes FAILED. Telling a configuration that was not asked
  (a warm start such as the hand-made baseline of §2.6.3) is allowed.
- ``load_trials(trials)`` rebuilds the whole state from a list of ``Trial`` (e.g. read back from a
  study store): finished trials are told in order, QUEUED/RUNNING ones become pending. Since the
  random stream of each ask is derived from (seed, number of trials told, number pending), a
  rebuilt sampler continues exactly as the original would have.
- ``trials``: the told trials in order; ``pending``: the pending configurations.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from ..space import Space
from ..trials import Trial, TrialState, finished_outcome


class Sampler:
    name = ""

    def __init__(self, space: Space | Mapping, seed: int = 0):
        self.space = Space.of(space)
        self.seed = int(seed)
        self.trials: list[Trial] = []
        self.pending: list[dict] = []

    # -- interface ----------------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[dict]:
        if n < 1:
            raise ValueError(f"ask needs n >= 1, got {n}")
        configs = self._propose(n)
        self.pending.extend(dict(c) for c in configs)
        return configs

    def tell(self, params: Mapping[str, Any], value: Any = None, state: TrialState | str = TrialState.COMPLETE,
             error: str | None = None, budget: float | None = None) -> Trial:
        state, value, error = finished_outcome(value, state, error, "tell()")
        params = dict(params)
        number = len(self.trials)
        key = self.space.key(params)
        for i, p in enumerate(self.pending):
            if self.space.key(p) == key:
                del self.pending[i]
                break
        trial = Trial(number=number, params=params, state=state, value=value, error=error, budget=budget)
        self.trials.append(trial)
        self._on_tell(trial)
        return trial

    def load_trials(self, trials: Iterable[Trial]) -> None:
        self.trials, self.pending = [], []
        self._reset()
        for trial in sorted(trials, key=lambda t: t.number):
            if trial.state.is_finished:
                self.tell(trial.params, trial.value, trial.state, trial.error, trial.budget)
            else:
                self.pending.append(dict(trial.params))

    # -- helpers for subclasses ---------------------------------------------------------------
    def _propose(self, n: int) -> list[dict]:
        raise NotImplementedError

    def _on_tell(self, trial: Trial) -> None:
        """Hook for subclasses that keep derived state."""

    def _reset(self) -> None:
        """Hook: forget derived state before load_trials replays the history."""

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, len(self.trials), len(self.pending)])

    def seen_keys(self) -> set:
        return {self.space.key(t.params) for t in self.trials} | {self.space.key(p) for p in self.pending}

    def completed(self) -> list[Trial]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE]
