"""Search spaces: encoding, enumeration, conditionals, JSON specs and their errors."""

import json
import math

import numpy as np
import pytest

from HPOToolsLib.space import (Categorical, Float, Int, Ordinal, Space, SpaceError, reject_duplicates,
                               space_from_spec)
from SegTuneCore.errors import SegTuneError

SPEC = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "blocks": {"type": "int", "low": 1, "high": 5},
    "filters": {"type": "ordinal", "values": [4, 8, 16, 32]},
    "optimizer": {"type": "categorical", "choices": ["sgd", "adam", "rmsprop"]},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99, "condition": {"optimizer": ["sgd"]}},
}


def test_spec_round_trip_and_encoding_bounds():
    space = space_from_spec(SPEC)
    assert space_from_spec(json.loads(json.dumps(space.to_spec()))).to_spec() == space.to_spec()
    assert space.dim == 1 + 1 + 1 + 3 + 1
    rng = np.random.default_rng(0)
    for config in space.sample(rng, 200):
        x = space.encode(config)
        assert x.shape == (space.dim,) and np.all((0 <= x) & (x <= 1))
        decoded = space.decode(x)
        assert decoded.keys() == config.keys()
        for name, value in config.items():
            assert decoded[name] == (value if isinstance(value, str) else pytest.approx(value, rel=1e-12))
        assert space.validate(config) == config


def test_log_float_encoding_is_linear_in_log():
    space = Space({"lr": Float(1e-4, 1e-1, log=True)})
    assert space.encode({"lr": 1e-4})[0] == 0.0 and space.encode({"lr": 1e-1})[0] == 1.0
    assert np.isclose(space.encode({"lr": 10 ** -2.5})[0], 0.5)
    draws = np.array([c["lr"] for c in space.sample(np.random.default_rng(1), 4000)])
    assert abs(np.mean(draws < 10 ** -2.5) - 0.5) < 0.03      # log-uniform: median at the log midpoint


def test_conditionals_respected_everywhere():
    space = space_from_spec(SPEC)
    rng = np.random.default_rng(2)
    for config in space.sample(rng, 300):
        assert ("momentum" in config) == (config["optimizer"] == "sgd")
    mask = space.inactive_mask({"optimizer": "adam"})
    assert mask.sum() == 1 and space.encode({**space.sample(rng, 1)[0], "optimizer": "adam"})[mask][0] == 0.5
    X = space.sample_encoded(rng, 500)
    for x in X:
        config = space.decode(x)
        assert np.allclose(space.encode(config), x)          # sample_encoded gives valid encodings
        assert ("momentum" in config) == (config["optimizer"] == "sgd")
    assert np.allclose(space.snap(X), X)


def test_enumeration_of_finite_conditional_space():
    space = Space({"opt": Categorical(["sgd", "adam"]), "nesterov": Categorical([True, False], condition=("opt", ["sgd"])),
                   "width": Ordinal.powers_of_two(2, 4), "depth": Int(1, 3)})
    configs = space.enumerate()
    assert space.is_finite and space.size == len(configs) == (2 + 1) * 3 * 3
    assert len({space.key(c) for c in configs}) == len(configs)
    assert all(("nesterov" in c) == (c["opt"] == "sgd") for c in configs)
    infinite = Space({"x": Float(0, 1), "n": Int(1, 2)})
    assert not infinite.is_finite and infinite.size == math.inf
    assert len(infinite.enumerate(float_points=5)) == 10
    with pytest.raises(SpaceError, match="float_points"):
        infinite.enumerate()


def test_int_log_and_categorical_types_kept_apart():
    space = Space({"batch": Int(2, 256, log=True), "c": Categorical([1, "1", True])})
    assert space.decode(space.encode({"batch": 16, "c": "1"})) == {"batch": 16, "c": "1"}
    assert space.decode(space.encode({"batch": 256, "c": True})) == {"batch": 256, "c": True}


@pytest.mark.parametrize("spec,message", [
    ({"a": {"type": "gaussian", "low": 0, "high": 1}}, "unknown type 'gaussian'"),
    ({"a": {"type": "float", "low": 1, "high": 0}}, "inverted"),
    ({"a": {"type": "float", "low": 1, "high": 1}}, "empty"),
    ({"a": {"type": "int", "low": 5, "high": 2}}, "inverted"),
    ({"a": {"type": "float", "low": 0, "high": 1, "log": True}}, "log=True needs low > 0"),
    ({"a": {"type": "int", "low": -1, "high": 8, "log": True}}, "log=True needs low > 0"),
    ({"a": {"type": "categorical", "choices": []}}, "no choices"),
    ({"a": {"type": "ordinal", "values": [4, 2]}}, "strictly increasing"),
    ({"a": {"type": "float", "low": 0}}, "needs fields"),
    ({"a": {"type": "float", "low": 0, "high": 1, "step": 2}}, "unknown field"),
    ({"a": {"type": "float", "low": "x", "high": 1}}, "must be a number"),
    ({"a": {"type": "float", "low": 0, "high": float("inf")}}, "finite"),
    ({"b": {"type": "float", "low": 0, "high": 1, "condition": {"a": ["x"]}}}, "declared before"),
    ({"a": {"type": "categorical", "choices": ["x"]},
      "b": {"type": "float", "low": 0, "high": 1, "condition": {"a": ["y"]}}}, "not a value of 'a'"),
    ({}, "no parameters"),
    ([1, 2], "object of parameters"),
])
def test_bad_specs_give_clear_errors(spec, message):
    with pytest.raises(SpaceError, match=message) as info:
        space_from_spec(spec)
    assert isinstance(info.value, ValueError) and isinstance(info.value, SegTuneError)
    assert "\n" not in str(info.value)


def test_duplicate_names_rejected():
    text = '{"a": {"type": "int", "low": 0, "high": 1}, "a": {"type": "int", "low": 0, "high": 2}}'
    with pytest.raises(SpaceError, match="duplicate name 'a'"):
        space_from_spec(json.loads(text, object_pairs_hook=reject_duplicates))
    with pytest.raises(SpaceError, match="duplicate name 'x'"):
        Space([("x", Float(0, 1)), ("x", Int(0, 3))])


def test_validate_rejects_foreign_configurations():
    space = space_from_spec(SPEC)
    good = space.sample(np.random.default_rng(3), 1)[0]
    with pytest.raises(SpaceError, match="unknown parameter"):
        space.validate({**good, "dropout": 0.1})
    with pytest.raises(SpaceError, match="outside"):
        space.validate({**good, "blocks": 9})
    with pytest.raises(SpaceError, match="misses"):
        space.validate({k: v for k, v in good.items() if k != "lr"})


def test_range_values_stay_inside_their_bounds():
    # exp(log(low)) is not always low: without the clamp the ends came out as 9.999999999999997e-06
    rng = np.random.default_rng(0)
    units = np.concatenate([[0.0, 1.0, -0.5, 1.5, 0.5, 1e-17, 1 - 1e-16], rng.random(30)])
    for _ in range(500):
        low = 10 ** rng.uniform(-12, 6)
        high = low * 10 ** rng.uniform(1e-9, 12)
        for param in (Float(low, high, log=True), Float(-low, high), Int(1, int(min(high, 1e6)) + 1, log=True)):
            space = Space({"p": param})
            for u in units:
                value = space.decode(np.array([u]))["p"]
                assert param.low <= value <= param.high
                space.validate({"p": value})
            if isinstance(param, Float):
                assert param.values(7)[0] == param.low and param.values(7)[-1] == param.high


def test_log_grid_hits_decades_exactly():
    assert Float(1e-5, 1e-1, log=True).values(5) == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]


@pytest.mark.parametrize("log", ["false", "true", 0, 1, None, [True]])
def test_log_must_be_a_boolean(log):
    with pytest.raises(SpaceError, match="log must be true or false") as info:
        space_from_spec({"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": log}})
    assert "'lr'" in str(info.value)
