"""The HPOTools module's self-test scenarios, run headless against real MRML and real studies."""

import pytest

from HPOToolsLib import selftest


@pytest.mark.parametrize("scenario", selftest.SCENARIOS, ids=lambda s: s.__name__)
def test_scenario(slicer_runtime, scenario):
    scenario()
