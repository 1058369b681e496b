"""Device selection on this CPU-only machine, capabilities and run records."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch

from SegTuneCore.device import capabilities, describe, select_device
from SegTuneCore.errors import SegTuneError


def test_cpu_and_auto():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(" CPU ") == torch.device("cpu")
    expected = torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    assert select_device("auto") == expected and select_device() == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_gpu_is_a_clear_error(spec):
    with pytest.raises(SegTuneError) as caught:
        select_device(spec)
    message = str(caught.value)
    assert "CUDA is not available" in message and "--device cpu" in message and "\n" not in message


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu:0"])
def test_unknown_devices_are_refused(spec):
    with pytest.raises(SegTuneError, match="unknown device|CUDA is not available"):
        select_device(spec)


def test_capabilities_and_describe():
    caps = capabilities(torch.device("cpu"))
    assert set(caps) == {"bf16", "channels_last_3d"} and all(isinstance(v, bool) for v in caps.values())
    record = describe(torch.device("cpu"))
    assert record["device"] == "cpu" and record["device_name"]
    assert record["torch"] == torch.__version__ and record["numpy"] == np.__version__
    assert record["python"] == platform.python_version()
    assert describe()["device"] == str(select_device("auto"))


def test_cuda_index_parsing():
    from SegTuneCore.device import _parse_index

    assert _parse_index("cuda:2") == 2
    for spec in ("cuda:-1", "cuda:x", "cuda:"):
        with pytest.raises(SegTuneError, match="unknown device"):
            _parse_index(spec)
