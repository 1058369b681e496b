"""Search spaces: typed parameters, conditionals, encoding to [0, 1]^d, enumeration, JSON specs.

Parameters (all take an optional ``condition=(parent_name, [allowed parent values])``: the
parameter exists only when the parent is active and has one of those values):

- ``Float(low, high, log=False)``: continuous.
- ``Int(low, high, log=False)``: integers in [low, high] (both included).
- ``Categorical(choices)``: unordered choices (str, int, float, bool); one-hot encoded.
- ``Ordinal(values)``: ordered numeric values, e.g. powers of two ``Ordinal([4, 8, 16, 32])``;
  encoded by rank.

``Space({"name": param, ...})`` (or ``Space.of(mapping)``) keeps the insertion order; parents must be
declared before their children.

- ``space.dim``: length of the encoded vector. Floats, ints and ordinals use one coordinate,
  a categorical one coordinate per choice. An inactive parameter encodes as 0.5 on every coordinate
  (the centre: it looks the same for every configuration where it is inactive).
- ``space.encode(params) -> np.ndarray`` of shape (dim,) in [0, 1]; ``space.encode_many(list)``.
- ``space.decode(x) -> dict`` (snaps to the nearest valid value; inactive parameters omitted).
- ``space.sample(rng, n) -> list[dict]`` uniform (log-uniform for log parameters).
- ``space.is_finite``, ``space.size`` (number of configurations, ``math.inf`` if a Float is present),
  ``space.enumerate(float_points=None) -> list[dict]`` (every configuration; with ``float_points``
  each Float is discretised to that many points, which is what grid search uses).
- ``space.key(params)``: a hashable canonical key of a configuration (for "already tested").
- ``space.validate(params)``: raises ``SpaceError`` if a configuration does not belong to the space.
- ``space_from_spec(spec)`` / ``space.to_spec()``: JSON spec, e.g.
  ``{"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": true},
  "blocks": {"type": "int", "low": 1, "high": 5},
  "filters": {"type": "ordinal", "values": [4, 8, 16]},
  "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
  "momentum": {"type": "float", "low": 0.0, "high": 0.99, "condition": {"optimizer": ["sgd"]}}}``.

Bad specs raise ``SpaceError`` (a ``SegTuneError`` and a ``ValueError``) with a one-line message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from SegTuneCore.errors import SegTuneError

INACTIVE = 0.5


class SpaceError(SegTuneError, ValueError):
    """An invalid search-space specification or a configuration outside the space."""


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SpaceError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise SpaceError(f"{what} must be finite, got {value!r}")
    return value


def _condition(condition: Any) -> tuple[str, tuple] | None:
    if condition is None:
        return None
    if isinstance(condition, Mapping):
        if len(condition) != 1:
            raise SpaceError(f"a condition names exactly one parent parameter, got {dict(condition)!r}")
        condition = next(iter(condition.items()))
    try:
        parent, allowed = condition
    except (TypeError, ValueError):
        raise SpaceError(f"condition must be (parent_name, [values]), got {condition!r}") from None
    if not isinstance(parent, str):
        raise SpaceError(f"condition parent must be a parameter name, got {parent!r}")
    if isinstance(allowed, (str, bytes)) or not isinstance(allowed, Iterable):
        allowed = [allowed]
    allowed = tuple(allowed)
    if not allowed:
        raise SpaceError(f"condition on {parent!r} allows no value")
    return parent, allowed


class Param:
    """Base class of the parameter types; ``width`` coordinates in the encoded vector."""

    width = 1
    condition: tuple[str, tuple] | None

    @property
    def is_finite(self) -> bool:
        return True

    def values(self, float_points: int | None = None) -> list:
        raise NotImplementedError

    def sample(self, rng: np.random.Generator):
        raise NotImplementedError

    def encode(self, value) -> np.ndarray:
        raise NotImplementedError

    def decode(self, coords: np.ndarray):
        raise NotImplementedError

    def contains(self, value) -> bool:
        raise NotImplementedError

    def spec(self) -> dict:
        raise NotImplementedError

    def _spec_condition(self, spec: dict) -> dict:
        if self.condition is not None:
            spec["condition"] = {self.condition[0]: list(self.condition[1])}
        return spec


class _Range(Param):
    kind = ""

    def __init__(self, low, high, log: bool = False, condition=None):
        low = _number(low, f"{self.kind} low")
        high = _number(high, f"{self.kind} high")
        if high < low:
            raise SpaceError(f"{self.kind} range is inverted: low={low!r} > high={high!r}")
        # a JSON "false" is a non-empty string, which bool() would read as True
        if not isinstance(log, (bool, np.bool_)):
            raise SpaceError(f"{self.kind} log must be true or false, got {log!r}")
        if log and low <= 0:
            raise SpaceError(f"{self.kind} range with log=True needs low > 0, got low={low!r}")
        self.low, self.high, self.log = low, high, bool(log)
        self.condition = _condition(condition)

    def _to_unit(self, value: float) -> float:
        if self.high == self.low:
            return 0.5
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)

    def _from_unit(self, u: float) -> float:
        u = min(max(float(u), 0.0), 1.0)
        if u in (0.0, 1.0):  # the bounds themselves, free of round-off
            return self.high if u else self.low
        if self.log:
            # base 10 so that decade points (a grid over 1e-5 … 1e-1) come out exact
            low, high = math.log10(self.low), math.log10(self.high)
            value = 10.0 ** (low + u * (high - low))
        else:
            value = self.low + u * (self.high - self.low)
        # round-off can land just outside the range (exp(log(1e-5)) = 9.999999999999997e-06)
        return min(max(value, self.low), self.high)

    def encode(self, value) -> np.ndarray:
        return np.array([self._to_unit(float(value))])

    def spec(self) -> dict:
        return self._spec_condition({"type": self.kind, "low": self.low, "high": self.high, "log": self.log})

    def __repr__(self) -> str:
        cond = f", condition={self.condition!r}" if self.condition else ""
        return f"{type(self).__name__}({self.low!r}, {self.high!r}, log={self.log}{cond})"


class Float(_Range):
    kind = "float"

    def __init__(self, low, high, log: bool = False, condition=None):
        super().__init__(low, high, log, condition)
        if not self.low < self.high:
            raise SpaceError(f"float range is empty: low={low!r} == high={high!r}")
        self.low, self.high = float(self.low), float(self.high)

    @property
    def is_finite(self) -> bool:
        return False

    def values(self, float_points: int | None = None) -> list:
        if float_points is None:
            raise SpaceError("a float parameter has infinitely many values; give float_points to discretise it")
        if float_points < 1:
            raise SpaceError(f"float_points must be >= 1, got {float_points}")
        units = [0.5] if float_points == 1 else np.linspace(0.0, 1.0, float_points)
        return [self._from_unit(u) for u in units]

    def sample(self, rng):
        return self._from_unit(rng.random())

    def decode(self, coords):
        return self._from_unit(coords[0])

    def contains(self, value) -> bool:
        return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
                and self.low <= value <= self.high)


class Int(_Range):
    kind = "int"

    def __init__(self, low, high, log: bool = False, condition=None):
        for name, v in (("low", low), ("high", high)):
            if isinstance(v, (float, np.floating)) and not float(v).is_integer():
                raise SpaceError(f"int {name} must be an integer, got {v!r}")
        super().__init__(low, high, log, condition)
        self.low, self.high = int(self.low), int(self.high)

    def values(self, float_points: int | None = None) -> list:
        return list(range(self.low, self.high + 1))

    def sample(self, rng):
        if self.log:  # log-uniform over the integers: sample the continuous range, then round
            return min(max(int(round(self._from_unit(rng.random()))), self.low), self.high)
        return int(rng.integers(self.low, self.high + 1))

    def decode(self, coords):
        return min(max(int(round(self._from_unit(coords[0]))), self.low), self.high)

    def contains(self, value) -> bool:
        return (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                and self.low <= value <= self.high)


class Categorical(Param):
    kind = "categorical"

    def __init__(self, choices: Sequence, condition=None):
        if isinstance(choices, (str, bytes)) or not isinstance(choices, Iterable):
            raise SpaceError(f"categorical choices must be a list, got {choices!r}")
        self.choices = list(choices)
        if not self.choices:
            raise SpaceError("categorical parameter has no choices")
        keys = [_value_key(c) for c in self.choices]
        if len(set(keys)) != len(keys):
            raise SpaceError(f"categorical choices are not unique: {self.choices!r}")
        self.condition = _condition(condition)
        self.width = len(self.choices)

    def values(self, float_points=None):
        return list(self.choices)

    def index(self, value) -> int:
        key = _value_key(value)
        for i, c in enumerate(self.choices):
            if _value_key(c) == key:
                return i
        raise SpaceError(f"{value!r} is not one of the choices {self.choices!r}")

    def sample(self, rng):
        return self.choices[int(rng.integers(len(self.choices)))]

    def encode(self, value):
        onehot = np.zeros(self.width)
        onehot[self.index(value)] = 1.0
        return onehot

    def decode(self, coords):
        return self.choices[int(np.argmax(coords))]

    def contains(self, value) -> bool:
        try:
            self.index(value)
        except SpaceError:
            return False
        return True

    def spec(self):
        return self._spec_condition({"type": "categorical", "choices": list(self.choices)})

    def __repr__(self):
        return f"Categorical({self.choices!r})"


class Ordinal(Param):
    kind = "ordinal"

    def __init__(self, values: Sequence, condition=None):
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise SpaceError(f"ordinal values must be a list of numbers, got {values!r}")
        self.ordered = [_number(v, "ordinal value") for v in values]
        if not self.ordered:
            raise SpaceError("ordinal parameter has no values")
        if any(b <= a for a, b in zip(self.ordered, self.ordered[1:])):
            raise SpaceError(f"ordinal values must be strictly increasing, got {self.ordered!r}")
        self.condition = _condition(condition)

    @classmethod
    def powers_of_two(cls, low_exponent: int, high_exponent: int, condition=None) -> "Ordinal":
        return cls([2 ** e for e in range(low_exponent, high_exponent + 1)], condition)

    def values(self, float_points=None):
        return list(self.ordered)

    def sample(self, rng):
        return self.ordered[int(rng.integers(len(self.ordered)))]

    def encode(self, value):
        rank = self._rank(value)
        return np.array([0.5 if len(self.ordered) == 1 else rank / (len(self.ordered) - 1)])

    def _rank(self, value) -> int:
        for i, v in enumerate(self.ordered):
            if v == value:
                return i
        raise SpaceError(f"{value!r} is not one of the ordinal values {self.ordered!r}")

    def decode(self, coords):
        u = min(max(float(coords[0]), 0.0), 1.0)
        return self.ordered[int(round(u * (len(self.ordered) - 1)))]

    def contains(self, value) -> bool:
        return not isinstance(value, bool) and any(v == value for v in self.ordered)

    def spec(self):
        return self._spec_condition({"type": "ordinal", "values": list(self.ordered)})

    def __repr__(self):
        return f"Ordinal({self.ordered!r})"


def _value_key(value):
    """Hashable key that keeps 1, 1.0 and True apart (they are different categorical choices)."""
    if isinstance(value, np.generic):
        value = value.item()
    return (type(value).__name__ if isinstance(value, bool) else "num" if isinstance(value, (int, float)) else
            type(value).__name__, value)


_TYPES = {"float": Float, "int": Int, "categorical": Categorical, "ordinal": Ordinal}


@dataclass(frozen=True)
class _Slot:
    name: str
    param: Param
    start: int


class Space:
    """An ordered set of named parameters (see the module docstring)."""

    def __init__(self, params: "Mapping[str, Param] | Sequence[tuple[str, Param]]"):
        if isinstance(params, Space):
            params = params.params
        if isinstance(params, (list, tuple)):
            params = reject_duplicates(params)
        if not isinstance(params, Mapping):
            raise SpaceError(f"a space maps parameter names to parameters, got {type(params).__name__}")
        if not params:
            raise SpaceError("the search space has no parameters")
        self.params: dict[str, Param] = {}
        self._slots: list[_Slot] = []
        start = 0
        for name, param in params.items():
            if not isinstance(name, str) or not name:
                raise SpaceError(f"parameter names must be non-empty strings, got {name!r}")
            if not isinstance(param, Param):
                raise SpaceError(f"parameter {name!r} must be Float/Int/Categorical/Ordinal, got {param!r}")
            if param.condition is not None:
                parent, allowed = param.condition
                if parent not in self.params:
                    raise SpaceError(f"parameter {name!r} is conditional on {parent!r}, "
                                     "which must be declared before it")
                for value in allowed:
                    if not self.params[parent].contains(value):
                        raise SpaceError(f"condition of {name!r}: {value!r} is not a value of {parent!r}")
            self.params[name] = param
            self._slots.append(_Slot(name, param, start))
            start += param.width
        self.dim = start

    @classmethod
    def of(cls, space: "Space | Mapping[str, Param]") -> "Space":
        return space if isinstance(space, Space) else cls(space)

    @property
    def names(self) -> list[str]:
        return list(self.params)

    @property
    def is_finite(self) -> bool:
        return all(p.is_finite for p in self.params.values())

    @property
    def is_conditional(self) -> bool:
        return any(p.condition is not None for p in self.params.values())

    @property
    def size(self) -> float:
        if not self.is_finite:
            return math.inf
        if not self.is_conditional:
            return math.prod(len(p.values()) for p in self.params.values())
        return len(self.enumerate())

    def is_active(self, name: str, params: Mapping[str, Any]) -> bool:
        condition = self.params[name].condition
        if condition is None:
            return True
        parent, allowed = condition
        if parent not in params:
            return False
        return any(_value_key(params[parent]) == _value_key(a) for a in allowed)

    def sample(self, rng: np.random.Generator, n: int = 1) -> list[dict]:
        out = []
        for _ in range(n):
            config: dict = {}
            for name, param in self.params.items():
                if self.is_active(name, config):
                    config[name] = param.sample(rng)
            out.append(config)
        return out

    def enumerate(self, float_points: int | None = None) -> list[dict]:
        configs: list[dict] = [{}]
        for name, param in self.params.items():
            values = param.values(float_points)
            grown = []
            for config in configs:
                if self.is_active(name, config):
                    grown.extend({**config, name: v} for v in values)
                else:
                    grown.append(config)
            configs = grown
        return configs

    def encode(self, params: Mapping[str, Any]) -> np.ndarray:
        x = np.full(self.dim, INACTIVE)
        for slot in self._slots:
            if self.is_active(slot.name, params):
                if slot.name not in params:
                    raise SpaceError(f"configuration misses the active parameter {slot.name!r}")
                x[slot.start:slot.start + slot.param.width] = slot.param.encode(params[slot.name])
        return x

    def encode_many(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if not configs:
            return np.zeros((0, self.dim))
        return np.stack([self.encode(c) for c in configs])

    def decode(self, x: np.ndarray) -> dict:
        x = np.asarray(x, dtype=float)
        if x.shape != (self.dim,):
            raise SpaceError(f"encoded vector must have shape ({self.dim},), got {x.shape}")
        config: dict = {}
        for slot in self._slots:
            if self.is_active(slot.name, config):
                config[slot.name] = slot.param.decode(x[slot.start:slot.start + slot.param.width])
        return config

    @property
    def continuous_mask(self) -> np.ndarray:
        """Boolean mask of the encoded coordinates of Float parameters."""
        mask = np.zeros(self.dim, dtype=bool)
        for slot in self._slots:
            if isinstance(slot.param, Float):
                mask[slot.start] = True
        return mask

    def sample_encoded(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n uniform configurations directly in encoded form (vectorised ``encode(sample())``)."""
        X = rng.random((n, self.dim))
        for slot in self._slots:
            p, s = slot.param, slot.start
            if isinstance(p, Categorical):
                X[:, s:s + p.width] = np.eye(p.width)[rng.integers(p.width, size=n)]
            elif isinstance(p, Int) and not p.log and p.high > p.low:
                X[:, s] = (rng.integers(p.low, p.high + 1, size=n) - p.low) / (p.high - p.low)
            elif isinstance(p, Ordinal) and len(p.ordered) > 1:
                X[:, s] = rng.integers(len(p.ordered), size=n) / (len(p.ordered) - 1)
        return self.snap(X)

    def snap(self, X: np.ndarray) -> np.ndarray:
        """Project encoded rows onto valid encodings (vectorised ``encode(decode(x))``):
        clip to [0, 1], round integers and ordinals, one-hot categoricals, centre inactive ones."""
        X = np.clip(np.array(X, dtype=float), 0.0, 1.0)
        columns: dict[str, np.ndarray] = {}     # decoded parent values (index for categoricals)
        active: dict[str, np.ndarray] = {}
        for slot in self._slots:
            p, s = slot.param, slot.start
            block = X[:, s:s + p.width]
            if isinstance(p, Categorical):
                index = np.argmax(block, axis=1)
                X[:, s:s + p.width] = np.eye(p.width)[index]
                columns[slot.name] = index
            elif isinstance(p, Int):
                if p.high == p.low:
                    X[:, s] = 0.5
                    values = np.full(len(X), p.low)
                else:
                    lo, hi = (math.log(p.low), math.log(p.high)) if p.log else (p.low, p.high)
                    raw = lo + block[:, 0] * (hi - lo)
                    values = np.clip(np.round(np.exp(raw) if p.log else raw), p.low, p.high)
                    X[:, s] = ((np.log(values) if p.log else values) - lo) / (hi - lo)
                columns[slot.name] = values
            elif isinstance(p, Ordinal):
                if len(p.ordered) == 1:
                    X[:, s] = 0.5
                    rank = np.zeros(len(X), dtype=int)
                else:
                    rank = np.round(block[:, 0] * (len(p.ordered) - 1)).astype(int)
                    X[:, s] = rank / (len(p.ordered) - 1)
                columns[slot.name] = np.asarray(p.ordered)[rank]
            if p.condition is None:
                active[slot.name] = np.ones(len(X), dtype=bool)
            else:
                parent, allowed = p.condition
                parent_param = self.params[parent]
                if isinstance(parent_param, Categorical):
                    allowed_values = [parent_param.index(a) for a in allowed]
                else:
                    allowed_values = list(allowed)
                active[slot.name] = active[parent] & np.isin(columns[parent], allowed_values)
                X[~active[slot.name], s:s + p.width] = INACTIVE
        return X

    def inactive_mask(self, params: Mapping[str, Any]) -> np.ndarray:
        """Boolean mask of the encoded coordinates that belong to inactive parameters."""
        mask = np.zeros(self.dim, dtype=bool)
        for slot in self._slots:
            if not self.is_active(slot.name, params):
                mask[slot.start:slot.start + slot.param.width] = True
        return mask

    def validate(self, params: Mapping[str, Any]) -> dict:
        if not isinstance(params, Mapping):
            raise SpaceError(f"a configuration is a dict of parameter values, got {params!r}")
        unknown = set(params) - set(self.params)
        if unknown:
            raise SpaceError(f"unknown parameter(s) {sorted(unknown)}; the space has {self.names}")
        config = {}
        for name, param in self.params.items():
            if self.is_active(name, params):
                if name not in params:
                    raise SpaceError(f"configuration misses the parameter {name!r}")
                if not param.contains(params[name]):
                    raise SpaceError(f"{name}={params[name]!r} is outside {param!r}")
                config[name] = params[name]
        return config

    def key(self, params: Mapping[str, Any]) -> tuple:
        return tuple((name, _value_key(params[name])) for name in self.params if name in params
                     and self.is_active(name, params))

    def to_spec(self) -> dict:
        return {name: param.spec() for name, param in self.params.items()}

    def __repr__(self) -> str:
        return f"Space({self.params!r})"


def space_from_spec(spec: Mapping[str, Mapping[str, Any]]) -> Space:
    """Build a Space from its JSON form (see the module docstring). Duplicate names in a JSON text
    must be caught by the JSON loader (``json.loads(text, object_pairs_hook=reject_duplicates)``)."""
    if isinstance(spec, Space):
        return spec
    if not isinstance(spec, Mapping):
        raise SpaceError(f"a space spec is an object of parameters, got {type(spec).__name__}")
    params: dict[str, Param] = {}
    for name, entry in spec.items():
        if not isinstance(entry, Mapping) or "type" not in entry:
            raise SpaceError(f"parameter {name!r}: spec must be an object with a 'type', got {entry!r}")
        kind = entry["type"]
        if kind not in _TYPES:
            raise SpaceError(f"parameter {name!r}: unknown type {kind!r} (expected one of {sorted(_TYPES)})")
        fields = {k: v for k, v in entry.items() if k != "type"}
        allowed = {"float": {"low", "high", "log", "condition"}, "int": {"low", "high", "log", "condition"},
                   "categorical": {"choices", "condition"}, "ordinal": {"values", "condition"}}[kind]
        extra = set(fields) - allowed
        if extra:
            raise SpaceError(f"parameter {name!r}: unknown field(s) {sorted(extra)} for type {kind!r}")
        try:
            params[name] = _TYPES[kind](**fields)
        except TypeError:
            raise SpaceError(f"parameter {name!r}: type {kind!r} needs fields {sorted(allowed - {'condition', 'log'})}") from None
        except SpaceError as exc:
            raise SpaceError(f"parameter {name!r}: {exc}") from None
    return Space(params)


def reject_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    """``object_pairs_hook`` for ``json.loads`` that refuses duplicate parameter names."""
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise SpaceError(f"duplicate name {key!r} in spec")
        seen[key] = value
    return seen
