"""Random search (§2.1.2.2): uniform (log-uniform for log parameters) draws.

On a finite space it draws *without replacement* (the setting of §2.4.1 / Table 2.2): tested and
pending configurations are never proposed again, and ``ask`` returns fewer configurations once
the space is exhausted. Options: ``max_enumerate`` (finite spaces up to this size are enumerated
to draw from the untested ones directly; larger ones use rejection).
"""

from __future__ import annotations

from .. import checks
from .base import Sampler


class RandomSampler(Sampler):
    name = "random"

    def __init__(self, space, seed: int = 0, *, max_enumerate: int = 200_000):
        super().__init__(space, seed)
        self.max_enumerate = checks.integer("max_enumerate", max_enumerate, 0)
        self._all = None

    def _propose(self, n):
        rng = self._rng()
        if not self.space.is_finite:
            return self.space.sample(rng, n)
        seen = self.seen_keys()
        if self.space.size <= self.max_enumerate:
            if self._all is None:
                self._all = self.space.enumerate()
            untested = [c for c in self._all if self.space.key(c) not in seen]
            picks = rng.choice(len(untested), size=min(n, len(untested)), replace=False)
            return [dict(untested[i]) for i in picks]
        out = []
        while len(out) < n:
            config = self.space.sample(rng, 1)[0]
            if self.space.key(config) not in seen:
                seen.add(self.space.key(config))
                out.append(config)
        return out
