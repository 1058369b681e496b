"""Device selection (`auto|cpu|cuda[:N]`), reduced-precision capabilities, and run records."""

from __future__ import annotations

import platform

from SegTuneCore.errors import SegTuneError


def select_device(spec: str = "auto"):
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise SegTuneError(f"device {spec!r} requested but CUDA is not available "
                               f"(torch {torch.__version__} {'has no CUDA support' if torch.version.cuda is None else 'sees no GPU'}); use --device cpu")
        index = 0 if spec == "cuda" else _parse_index(spec)
        if index >= torch.cuda.device_count():
            raise SegTuneError(f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device(f"cuda:{index}")
    raise SegTuneError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")


def _parse_index(spec: str) -> int:
    try:
        index = int(spec.split(":", 1)[1])
    except ValueError:
        index = -1
    if index < 0:  # int() also accepts "-1", which torch.device would reject with a traceback
        raise SegTuneError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")
    return index


def capabilities(device) -> dict:
    """Whether bf16 autocast and channels_last_3d are worth using on this device."""
    import torch

    if device.type == "cuda":
        return {"bf16": bool(torch.cuda.is_bf16_supported()), "channels_last_3d": True}
    # On CPUs bf16 is only fast with native support (AVX512-BF16 / AMX); otherwise it emulates.
    flags = _cpu_flags()
    native_bf16 = bool({"avx512_bf16", "amx_bf16"} & flags)
    return {"bf16": native_bf16, "channels_last_3d": native_bf16}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def describe(device=None) -> dict:
    """What every result records: the device and the versions that produced it."""
    import numpy

    record = {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    try:
        import torch
    except ImportError:
        return {**record, "device": "cpu", "device_name": platform.processor() or platform.machine()}
    device = select_device("auto") if device is None else torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_model() or platform.machine()
    return {**record, "device": str(device), "device_name": name, "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads()}


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
