"""The KidneyUS Slicer self-test scenarios (KidneyUSLib/selftest.py), run on the headless runtime."""

import pytest

from KidneyUSLib import segmentation, selftest
from SegTuneCore.errors import SegTuneError
from SegTuneCore.models import ModelStore


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    from KidneyUSLib import unet
    from KidneyUSLib.training import save_network

    torch.manual_seed(2)
    network = unet.UNet3D(unet.UNetConfig(width=2, levels=2, dropout=0.0))
    folder = tmp_path_factory.mktemp("models") / "tiny"
    return save_network(folder, network.eval(), {"task": segmentation.TASK, "architecture": network.config.to_dict()})


@pytest.mark.parametrize("scenario", [s for s in selftest.SCENARIOS if s is not selftest.scenario_network],
                         ids=lambda s: s.__name__)
def test_scenario_without_network(scenario, slicer_runtime, tmp_path):
    scenario(slicer_runtime, tmp_path)


def test_network_scenario_with_a_tiny_model(slicer_runtime, tmp_path, tiny_model):
    score = selftest.scenario_network(slicer_runtime, tmp_path, model=str(tiny_model))
    assert 0.0 <= score <= 1.0


def test_network_scenario_with_the_bundled_model(slicer_runtime, tmp_path):
    try:
        entry = ModelStore().resolve(segmentation.TASK)
    except SegTuneError as error:
        pytest.skip(f"no bundled KidneyUS model yet: {error}")
    assert entry.bundled  # the test's model store is empty: the default is the bundled model
    assert selftest.scenario_network(slicer_runtime, tmp_path) >= selftest.MIN_BUNDLED_MODEL_DICE


def test_the_scenarios_fail_loudly_on_a_wrong_result(slicer_runtime, tmp_path, monkeypatch):
    monkeypatch.setattr(selftest, "MIN_ROUND_TRIP_DICE", 1.01)  # unreachable: the check must fire
    with pytest.raises(AssertionError, match="round trip Dice"):
        selftest.scenario_truth_round_trip(slicer_runtime, tmp_path)
