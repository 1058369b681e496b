"""Grid search (§2.1.2.1): every combination once, Floats discretised to ``grid_points`` values.

The order is a seeded shuffle of the grid by default (``shuffle=True``): the thesis notes that
the nested-loop order starts in a corner of the space, where models are atypical. Tested and
pending combinations are skipped; ``ask`` returns fewer (or none) once the grid is exhausted.
"""

from __future__ import annotations

import numpy as np

from .. import checks
from .base import Sampler


class GridSampler(Sampler):
    name = "grid"

    def __init__(self, space, seed: int = 0, *, grid_points: int = 5, shuffle: bool = True):
        super().__init__(space, seed)
        self.grid = self.space.enumerate(float_points=checks.integer("grid_points", grid_points, 1))
        if checks.boolean("shuffle", shuffle):
            order = np.random.default_rng(self.seed).permutation(len(self.grid))
            self.grid = [self.grid[i] for i in order]

    def _propose(self, n):
        seen = self.seen_keys()
        out = []
        for config in self.grid:
            if len(out) == n:
                break
            if self.space.key(config) not in seen:
                out.append(dict(config))
        return out
