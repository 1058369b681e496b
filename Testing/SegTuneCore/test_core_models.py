"""The model store: foreign and tampered files refused, killed installs harmless, explicit activation."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from SegTuneCore.errors import SegTuneError
from SegTuneCore.models import META, WEIGHTS, ModelStore, load_model, save_model, verify_model
from SegTuneCore.process import ProcessError, PythonModuleProcess

HERE = Path(__file__).resolve().parent
TASK = "KidneyUS.segmentation"


def make_model(folder: Path, seed: int = 0, task: str = TASK, architecture: str = "unet3d", size: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    tensors = {"conv.weight": rng.normal(size=(size, 16)).astype(np.float32), "conv.bias": np.arange(16, dtype=np.float32)}
    return save_model(folder, tensors, {"task": task, "architecture": {"name": architecture, "channels": 16},
                                        "seed": seed})


def snapshot(root: Path) -> dict[str, str]:
    """Every path under the store with the sha256 of each file (folders map to "dir")."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


class MarkerPickle:
    """Unpickling this creates a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def pickle_model(folder: Path, marker: Path) -> Path:
    """A model folder whose weights are a malicious pickle, with a matching sha256 in model.json."""
    folder.mkdir()
    payload = pickle.dumps({"state_dict": MarkerPickle(marker)})
    (folder / WEIGHTS).write_bytes(payload)
    meta = {"task": TASK, "architecture": {"name": "unet3d"}, "format": 1,
            "sha256": hashlib.sha256(payload).hexdigest()}
    (folder / META).write_text(json.dumps(meta))
    return folder


def run_cli(*args: str, store: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "SegTuneCore", "models", "--store", str(store), *args],
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr


def test_pickle_is_refused_executes_nothing_and_leaves_the_store_unchanged(tmp_path):
    store = ModelStore(tmp_path / "store", bundled_dirs=[])
    store.activate(TASK, store.install(make_model(tmp_path / "good")).version)
    before = snapshot(store.root)
    marker = tmp_path / "pickle_was_executed"
    # The pickle is armed: what unpickling would call really creates the marker (so the test can fail).
    probe = tmp_path / "probe"
    function, arguments = MarkerPickle(probe).__reduce__()
    function(*arguments)
    assert probe.exists()

    bad = pickle_model(tmp_path / "bad", marker)
    for attempt in (lambda: store.install(bad), lambda: verify_model(bad), lambda: load_model(bad),
                    lambda: store.install(bad / WEIGHTS)):
        with pytest.raises(SegTuneError):
            attempt()
    for args in (("install", str(bad)), ("verify", str(bad)), ("install", str(bad / WEIGHTS))):
        assert_one_line_error(run_cli(*args, store=store.root))
    # A bare pickle named like a model's weights, next to no model.json.
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / WEIGHTS).write_bytes(pickle.dumps(MarkerPickle(marker)))
    with pytest.raises(SegTuneError):
        store.install(lone)
    assert not marker.exists()
    assert snapshot(store.root) == before
    assert [e.version for e in store.list(TASK)] == ["v1"] and store.active_version(TASK) == "v1"


def test_tampered_weights_fail_verification(tmp_path):
    folder = make_model(tmp_path / "model")
    verify_model(folder)
    data = bytearray((folder / WEIGHTS).read_bytes())
    data[-5] ^= 0x01  # one bit inside the tensor data; the header stays valid
    (folder / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(SegTuneError, match="sha256"):
        verify_model(folder)
    with pytest.raises(SegTuneError, match="sha256"):
        load_model(folder)
    store = ModelStore(tmp_path / "store", bundled_dirs=[])
    with pytest.raises(SegTuneError, match="sha256"):
        store.install(folder)
    assert store.list() == []
    assert_one_line_error(run_cli("verify", str(folder), store=store.root))

    # Tampering with an installed version: it can be neither activated nor resolved.
    entry = store.install(make_model(tmp_path / "other", seed=1))
    (entry.path / WEIGHTS).write_bytes((entry.path / WEIGHTS).read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(SegTuneError, match="sha256"):
        store.activate(TASK, entry.version)
    with pytest.raises(SegTuneError, match="sha256"):
        store.resolve(TASK, entry.version)
    assert store.active_version(TASK) is None


def test_a_tensor_whose_shape_does_not_fill_its_bytes_is_refused(tmp_path):
    folder = make_model(tmp_path / "model")
    weights = (folder / WEIGHTS).read_bytes()
    (header_size,) = np.frombuffer(weights[:8], dtype="<u8")
    header = json.loads(weights[8:8 + int(header_size)])
    header["conv.weight"]["shape"] = [16, 16]  # a quarter of the bytes it has
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= header_size
    text = text.ljust(int(header_size))  # same header length: the offsets stay valid
    (folder / WEIGHTS).write_bytes(weights[:8] + text + weights[8 + int(header_size):])
    meta = json.loads((folder / META).read_text())
    meta["sha256"] = hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()  # a consistent checksum
    (folder / META).write_text(json.dumps(meta))
    with pytest.raises(SegTuneError, match=r"'conv.weight': dtype F32 x shape \[16, 16\] does not fill its 4096 bytes"):
        verify_model(folder)
    assert_one_line_error(run_cli("verify", str(folder), store=tmp_path / "store"))


def test_an_installed_version_wins_over_a_folder_of_that_name_where_the_command_runs(tmp_path, monkeypatch):
    store = ModelStore(tmp_path / "store", bundled_dirs=[])
    installed = store.install(make_model(tmp_path / "a", seed=0))
    make_model(tmp_path / "here" / installed.version, seed=1)  # another model in ./v1
    monkeypatch.chdir(tmp_path / "here")
    assert store.resolve(TASK, installed.version).path == installed.path
    assert store.resolve(TASK, f"./{installed.version}").meta["seed"] == 1  # a path says so


def test_load_model_refuses_wrong_task_or_architecture_before_loading_tensors(tmp_path, monkeypatch):
    import safetensors.numpy
    import safetensors.torch

    folder = make_model(tmp_path / "model")
    loads = []
    for module in (safetensors.torch, safetensors.numpy):
        original = module.load_file
        monkeypatch.setattr(module, "load_file", lambda *a, _original=original, **k: loads.append(a) or _original(*a, **k))
    with pytest.raises(SegTuneError, match="MRIFieldOfView.slice-classifier"):
        load_model(folder, task="MRIFieldOfView.slice-classifier")
    with pytest.raises(SegTuneError, match="resnet"):
        load_model(folder, task=TASK, architecture="resnet")
    assert loads == []
    tensors, meta = load_model(folder, task=TASK, architecture="unet3d")
    assert len(loads) == 1 and meta["seed"] == 0
    np.testing.assert_array_equal(tensors["conv.bias"].numpy(), np.arange(16, dtype=np.float32))


def test_two_installs_keep_both_versions_and_activation_is_explicit(tmp_path):
    store = ModelStore(tmp_path / "store", bundled_dirs=[])
    first = store.install(make_model(tmp_path / "a", seed=0))
    second = store.install(make_model(tmp_path / "b", seed=1))
    assert (first.version, second.version) == ("v1", "v2")
    assert [(e.version, e.active) for e in store.list(TASK)] == [("v1", False), ("v2", False)]
    assert store.active_version(TASK) is None  # never activated behind the user's back
    with pytest.raises(SegTuneError, match=r"no active model .*\(installed: v1, v2\); activate one"):
        store.resolve(TASK)
    # Installing identical weights again adds no version.
    assert store.install(make_model(tmp_path / "a_again", seed=0)).version == "v1"

    store.activate(TASK, "v2")
    assert [(e.version, e.active) for e in store.list(TASK)] == [("v1", False), ("v2", True)]
    assert store.resolve(TASK).version == "v2" and store.resolve(TASK, "v1").version == "v1"
    store.activate(TASK, "v1")
    assert store.resolve(TASK).version == "v1"
    with pytest.raises(SegTuneError, match="active"):
        store.remove(TASK, "v1")
    assert [e.version for e in store.list(TASK)] == ["v1", "v2"]
    store.remove(TASK, "v2")
    store.remove(TASK, "v1", force=True)
    assert store.list(TASK) == [] and store.active_version(TASK) is None
    third = store.install(make_model(tmp_path / "c", seed=2), activate=True)
    assert third.active and store.resolve(TASK).path == third.path
    assert third.version == "v3"  # never a removed version's name: records that say "v2" keep meaning v2
    with pytest.raises(SegTuneError):
        store.activate(TASK, "v9")


def test_installed_from_is_the_folder_or_the_named_source(tmp_path):
    store = ModelStore(tmp_path / "store", bundled_dirs=[])
    plain = store.install(make_model(tmp_path / "a", seed=0))
    assert plain.meta["installed_from"] == str((tmp_path / "a").resolve())
    # a staged copy, deleted after the install, names where the model really lives
    staged = store.install(make_model(tmp_path / "staging" / "model", seed=1), source=tmp_path / "study" / "model")
    assert staged.meta["installed_from"] == str((tmp_path / "study" / "model").resolve())


def test_bundled_models_are_listed_read_only_and_resolved_last(tmp_path):
    bundled = tmp_path / "Resources" / "Models"
    make_model(bundled / "kidney-default", seed=5)
    store = ModelStore(tmp_path / "store", bundled_dirs=[bundled])
    assert [(e.version, e.bundled) for e in store.list(TASK)] == [("kidney-default", True)]
    assert store.resolve(TASK).version == "kidney-default"
    store.install(make_model(tmp_path / "mine", seed=6), activate=True)
    assert store.resolve(TASK).version == "v1"  # the user's active version wins
    assert store.resolve(TASK, "kidney-default").bundled
    with pytest.raises(SegTuneError):
        store.remove(TASK, "kidney-default")
    assert (bundled / "kidney-default" / WEIGHTS).is_file()


def install_child(store: Path, folder: Path) -> PythonModuleProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    return PythonModuleProcess("core_children", ["slow_install", store, folder, "0.02"], env=env).start()


def test_install_killed_midway_leaves_the_store_intact(tmp_path):
    store = ModelStore(tmp_path / "store", bundled_dirs=[])
    store.activate(TASK, store.install(make_model(tmp_path / "first")).version)
    large = make_model(tmp_path / "large", seed=1, size=40_000)  # ~2.5 MB: ten 256 kB chunks
    assert (large / WEIGHTS).stat().st_size > 2_000_000
    # Kill points: before the copy, after several chunks, and after the copy (during verification).
    for kill_after in ("start", 1, 4, 9, "copied"):
        process = install_child(store.root, large)
        deadline = time.monotonic() + 60
        chunks = 0
        while process.running() and time.monotonic() < deadline:
            for event in process.poll():
                chunks += event["event"] == "progress"
            if kill_after == "start" or (isinstance(kill_after, int) and chunks >= kill_after) or (
                    kill_after == "copied" and any(e.get("message") == "copied" for e in process.events)):
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        with pytest.raises(ProcessError, match="SIGKILL"):
            process.wait(timeout=30)
        entries = store.list(TASK)
        assert [(e.version, e.active) for e in entries] == [("v1", True)], f"kill after {kill_after}"
        for entry in entries:
            verify_model(entry.path, task=TASK)
        versions = [p.name for p in (store.root / TASK).iterdir() if p.name.startswith("v")]
        assert versions == ["v1"]
    # The kills did interrupt installs: their hidden temporaries are there, but never as versions.
    assert any(p.name.startswith(".tmp-") for p in (store.root / TASK).iterdir())
    # The store still works: the next install completes, takes the next version, and clears them.
    assert store.install(large).version == "v2"
    assert not [p.name for p in (store.root / TASK).iterdir() if p.name.startswith((".tmp-", ".removing-"))]
    assert [e.version for e in store.list(TASK)] == ["v1", "v2"] and store.active_version(TASK) == "v1"


def test_models_cli_end_to_end(tmp_path):
    store = tmp_path / "store"
    a, b = make_model(tmp_path / "a", seed=0), make_model(tmp_path / "b", seed=1)
    # The repository's bundled models (if any) are listed too; this test looks at installed ones.
    result = run_cli("--json", "list", store=store)
    assert result.returncode == 0 and [e for e in json.loads(result.stdout) if not e["bundled"]] == []
    verified = run_cli("--json", "verify", str(a), store=store)
    assert verified.returncode == 0 and json.loads(verified.stdout)["sha256"] == json.loads((a / META).read_text())["sha256"]

    installed = run_cli("--json", "install", str(a), store=store)
    assert installed.returncode == 0, installed.stderr
    assert json.loads(installed.stdout)["version"] == "v1" and not json.loads(installed.stdout)["active"]
    installed = run_cli("--json", "install", str(b), "--activate", store=store)
    assert json.loads(installed.stdout)["version"] == "v2" and json.loads(installed.stdout)["active"]

    listing = [e for e in json.loads(run_cli("--json", "list", TASK, store=store).stdout) if not e["bundled"]]
    assert [(e["version"], e["active"]) for e in listing] == [("v1", False), ("v2", True)]
    shown = run_cli("show", TASK, store=store)
    assert shown.returncode == 0 and json.loads(shown.stdout)["version"] == "v2"
    assert json.loads(run_cli("show", TASK, "v1", store=store).stdout)["seed"] == 0

    assert run_cli("activate", TASK, "v1", store=store).returncode == 0
    assert ModelStore(store, bundled_dirs=[]).active_version(TASK) == "v1"
    assert_one_line_error(run_cli("remove", TASK, "v1", store=store))
    assert run_cli("remove", TASK, "v2", store=store).returncode == 0
    assert run_cli("remove", TASK, "v1", "--force", store=store).returncode == 0
    assert ModelStore(store, bundled_dirs=[]).list(TASK) == []
    assert_one_line_error(run_cli("activate", TASK, "v3", store=store))
    assert_one_line_error(run_cli("show", "No.such-task", store=store))
    text = run_cli("list", store=store)
    assert text.returncode == 0 and "installed" not in text.stdout


def test_damaged_metadata_and_stray_folders(tmp_path):
    store = ModelStore(tmp_path / "store", bundled_dirs=[])
    store.install(make_model(tmp_path / "good"))
    (store.root / ".Trash-1000").mkdir()
    (store.root / "not a task").mkdir()
    assert [e.version for e in store.list()] == ["v1"]  # stray folders hide nothing
    folder = make_model(tmp_path / "model")
    meta = json.loads((folder / META).read_text())
    for field, value, message in (("format", "1", "format"), ("format", None, "format"), ("format", 99, "newer"),
                                  ("task", "../escape", "task"), ("architecture", "unet", "architecture")):
        (folder / META).write_text(json.dumps(dict(meta, **{field: value})))
        with pytest.raises(SegTuneError, match=message):
            verify_model(folder)
    (folder / META).write_text(json.dumps({k: v for k, v in meta.items() if k != "sha256"}))
    with pytest.raises(SegTuneError, match="sha256"):
        verify_model(folder)


def test_concurrent_installs_get_distinct_complete_versions(tmp_path):
    store = ModelStore(tmp_path / "store", bundled_dirs=[])
    folders = [make_model(tmp_path / f"m{seed}", seed=seed, size=8_000) for seed in range(3)]
    processes = [install_child(store.root, folder) for folder in folders]
    versions = sorted(process.wait(timeout=120)["version"] for process in processes)
    assert versions == ["v1", "v2", "v3"]
    entries = store.list(TASK)
    assert [e.version for e in entries] == versions
    assert {e.meta["sha256"] for e in entries} == {json.loads((f / META).read_text())["sha256"] for f in folders}
    for entry in entries:
        verify_model(entry.path, task=TASK)


def test_selector_label_shows_version_date_metrics_and_state(tmp_path):
    import numpy as np

    from SegTuneCore.models import ModelStore, save_model

    save_model(tmp_path / "m", {"w": np.zeros(2, np.float32)},
               {"task": "T.label", "architecture": {"name": "net"}, "created": "2026-01-02T03:04:05+00:00",
                "metrics": {"dice_adults": 0.91234, "dice_adults_std": 0.1, "test": {"accuracy": 0.5, "slices": 3},
                            "seconds_per_epoch": 7.0}})
    entry = ModelStore(tmp_path / "store", bundled_dirs=[]).install(tmp_path / "m", activate=True)
    assert entry.headline_metrics() == {"dice_adults": 0.91234, "test.accuracy": 0.5}
    assert entry.label() == "v1 [net] 2026-01-02 dice_adults 0.912, test.accuracy 0.5 (active)"
