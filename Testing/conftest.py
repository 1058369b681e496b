"""Fixtures shared by every SegTune test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SEGTUNE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _isolated_model_store(tmp_path_factory, monkeypatch):
    # No test may touch the user's model store.
    monkeypatch.setenv("SEGTUNE_HOME", str(tmp_path_factory.mktemp("segtune_home")))


@pytest.fixture
def slicer_runtime():
    """The `slicer` module with a fresh headless scene and module logics."""
    from SegTuneCore.runtime import headless_slicer

    with headless_slicer() as slicer:
        yield slicer


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (set SEGTUNE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def repo_root() -> Path:
    return REPO
