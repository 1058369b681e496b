"""The model store: safetensors + model.json folders, versions, an active pointer per task.

A model is a folder holding `weights.safetensors` (tensors only, never pickles) and
`model.json` (task, architecture, preprocessing, hyper-parameters, metrics, version, created,
sha256 of the weights). The store keeps installed models under
`<root>/<task>/<version>/` and the active version of a task in `<root>/<task>/active`;
read-only bundled models live in each module's `Resources/Models/`.

Everything that reads a model checks the weights' sha256 and the safetensors header before a
single tensor is used; a damaged, tampered or foreign file is refused and nothing changes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import re
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from SegTuneCore.errors import SegTuneError
from SegTuneCore.process import atomic_write, json_default

WEIGHTS = "weights.safetensors"
META = "model.json"
FORMAT_VERSION = 1
_VERSION_PATTERN = re.compile(r"^v(\d+)$")
_TASK_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_MAX_HEADER = 100 * 1024 * 1024
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
                "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
LAST_VERSION = ".last-version"  # versions are never given twice, even after a removal


# --- single model folders -------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_safetensors(path: Path) -> dict:
    """Parse and validate a safetensors header without reading any tensor; return it."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise SegTuneError(f"{path}: not a safetensors file (too short)")
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size <= 1 or header_size > min(size - 8, _MAX_HEADER):
            raise SegTuneError(f"{path}: not a safetensors file (invalid header size)")
        raw = handle.read(header_size)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SegTuneError(f"{path}: not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise SegTuneError(f"{path}: not a safetensors file (header is not a table)")
    data_size = size - 8 - header_size
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_size):
            raise SegTuneError(f"{path}: not a safetensors file (tensor {name!r} lies outside the file)")
        shape, dtype = info.get("shape"), info.get("dtype")
        if (dtype not in _DTYPE_BYTES or not isinstance(shape, list)
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
                or math.prod(shape) * _DTYPE_BYTES[dtype] != offsets[1] - offsets[0]):
            # a loader would fail on it (or read its neighbour's bytes)
            raise SegTuneError(f"{path}: not a safetensors file (tensor {name!r}: dtype {dtype} x shape {shape} "
                               f"does not fill its {offsets[1] - offsets[0]} bytes)")
    return header


def _read_meta(folder: Path) -> dict:
    meta_path = folder / META
    if not meta_path.is_file():
        raise SegTuneError(f"{folder}: not a model folder (no {META})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SegTuneError(f"{meta_path}: invalid JSON ({exc.msg})") from None
    if not isinstance(meta, dict):
        raise SegTuneError(f"{meta_path}: must hold a JSON object")
    for key in ("task", "architecture", "sha256"):
        if key not in meta:
            raise SegTuneError(f"{meta_path}: missing {key!r}")
    if not isinstance(meta["task"], str) or not _TASK_PATTERN.match(meta["task"]):
        raise SegTuneError(f"{meta_path}: invalid task name {meta['task']!r}")
    if not isinstance(meta["architecture"], dict) or "name" not in meta["architecture"]:
        raise SegTuneError(f"{meta_path}: 'architecture' must be an object with a 'name'")
    if not isinstance(meta.get("format", FORMAT_VERSION), int) or isinstance(meta.get("format"), bool):
        raise SegTuneError(f"{meta_path}: 'format' must be an integer")
    if meta.get("format", FORMAT_VERSION) > FORMAT_VERSION:
        raise SegTuneError(f"{meta_path}: model format {meta['format']} is newer than this SegTune supports ({FORMAT_VERSION})")
    return meta


def verify_model(folder: str | os.PathLike, *, task: str | None = None, architecture: str | None = None) -> dict:
    """Check a model folder completely (files, header, checksum, task); return its metadata."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SegTuneError(f"{folder}: not a model folder" + ("" if folder.exists() else " (it does not exist)"))
    meta = _read_meta(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise SegTuneError(f"{folder}: missing {WEIGHTS}")
    check_safetensors(weights)
    if sha256_of(weights) != meta["sha256"]:
        raise SegTuneError(f"{folder}: {WEIGHTS} does not match its sha256 in {META} (damaged or tampered)")
    if task is not None and meta["task"] != task:
        raise SegTuneError(f"{folder}: a model for task {meta['task']!r}, expected {task!r}")
    if architecture is not None and meta["architecture"]["name"] != architecture:
        raise SegTuneError(f"{folder}: architecture {meta['architecture']['name']!r}, expected {architecture!r}")
    return meta


def save_model(folder: str | os.PathLike, tensors: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
    """Write a model folder atomically; `meta` needs "task" and "architecture" (with "name")."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    arrays = {name: _to_numpy(value) for name, value in tensors.items()}
    record = dict(meta)
    record.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    record["format"] = FORMAT_VERSION
    with atomic_write(folder) as tmp:
        tmp.mkdir()
        save_file(arrays, str(tmp / WEIGHTS))
        record["sha256"] = sha256_of(tmp / WEIGHTS)
        (tmp / META).write_text(json.dumps(record, indent=2, sort_keys=True, default=json_default) + "\n")
        _read_meta(tmp)  # refuse to write metadata that could not be read back
    return folder


def _to_numpy(value: Any):
    import numpy as np

    if hasattr(value, "detach"):  # torch tensor; bf16 has no numpy dtype, keep it as float32
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.ascontiguousarray(value)


def load_model(folder: str | os.PathLike, *, task: str | None = None, architecture: str | None = None,
               framework: str = "pt") -> tuple[dict, dict]:
    """Verify, then load the tensors (torch with framework="pt", numpy with "np")."""
    folder = Path(folder)
    meta = verify_model(folder, task=task, architecture=architecture)
    if framework == "pt":
        from safetensors.torch import load_file
    else:
        from safetensors.numpy import load_file
    return load_file(str(folder / WEIGHTS)), meta


# --- the store ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelEntry:
    task: str
    version: str
    path: Path
    meta: dict
    bundled: bool
    active: bool

    def headline_metrics(self, limit: int = 3) -> dict[str, float]:
        """The validation/test numbers worth showing in a model selector (Dice, accuracy, loss)."""
        flat: dict[str, float] = {}
        for key, value in self.meta.get("metrics", {}).items():
            items = value.items() if isinstance(value, dict) else [("", value)]
            for sub, number in items:
                name = f"{key}.{sub}" if sub else key
                if isinstance(number, (int, float)) and not isinstance(number, bool) and not name.endswith("_std"):
                    flat[name] = float(number)
        preferred = [k for k in flat if any(w in k for w in ("dice", "accuracy"))] or \
                    [k for k in flat if "loss" in k]
        return {k: flat[k] for k in preferred[:limit]}

    def label(self) -> str:
        """One line for a model selector: version, architecture, date, metrics, state."""
        metrics = ", ".join(f"{k} {v:.3g}" for k, v in self.headline_metrics().items())
        date = str(self.meta.get("created") or "")[:10]
        state = " (active)" if self.active else " (bundled)" if self.bundled else ""
        return " ".join(p for p in (self.version, f"[{self.meta['architecture']['name']}]", date, metrics) if p) + state

    def summary(self) -> dict:
        return {
            "task": self.task, "version": self.version, "path": str(self.path), "bundled": self.bundled,
            "active": self.active, "created": self.meta.get("created"), "architecture": self.meta["architecture"]["name"],
            "metrics": self.meta.get("metrics", {}),
        }


def default_root() -> Path:
    if os.environ.get("SEGTUNE_HOME"):
        return Path(os.environ["SEGTUNE_HOME"]) / "models"
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "segtune" / "models"


def default_bundled_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent.parent
    candidates = [here / module / "Resources" / "Models" for module in ("KidneyUS", "MRIFieldOfView", "HPOTools")]
    candidates.append(here / "Resources" / "Models")  # the installed extension's shared Resources folder
    return [path for path in candidates if path.is_dir()]


class ModelStore:
    def __init__(self, root: str | os.PathLike | None = None, bundled_dirs: list | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.bundled_dirs = [Path(p) for p in (default_bundled_dirs() if bundled_dirs is None else bundled_dirs)]

    # listing

    def _task_dir(self, task: str) -> Path:
        if not _TASK_PATTERN.match(task) or task in (".", ".."):
            raise SegTuneError(f"invalid task name {task!r}")
        return self.root / task

    def active_version(self, task: str) -> str | None:
        pointer = self._task_dir(task) / "active"
        if not pointer.is_file():
            return None
        version = pointer.read_text().strip()
        return version if (self._task_dir(task) / version).is_dir() else None

    def list(self, task: str | None = None) -> list[ModelEntry]:
        entries = []
        # A stray folder in the store (not a task name) must not hide every model.
        tasks = [task] if task else sorted(p.name for p in self.root.iterdir() if p.is_dir() and _TASK_PATTERN.match(p.name)
                                           ) if self.root.is_dir() else []
        for name in tasks:
            active = self.active_version(name)
            for folder in sorted(self._task_dir(name).glob("v*"), key=_version_key):
                if folder.is_dir() and _VERSION_PATTERN.match(folder.name):
                    with contextlib.suppress(SegTuneError):
                        meta = _read_meta(folder)
                        entries.append(ModelEntry(meta["task"], folder.name, folder, meta, False, folder.name == active))
        for folder in self._bundled_folders():
            with contextlib.suppress(SegTuneError):
                meta = _read_meta(folder)
                if task is None or meta["task"] == task:
                    entries.append(ModelEntry(meta["task"], folder.name, folder, meta, True, False))
        return entries

    def _bundled_folders(self) -> Iterator[Path]:
        for directory in self.bundled_dirs:
            if directory.is_dir():
                yield from sorted(p for p in directory.iterdir() if (p / META).is_file())

    def resolve(self, task: str, name: str | None = None) -> ModelEntry:
        """The model to use for a task: a path, a version or bundled name, else active, else bundled."""
        spelled_as_path = bool(name) and (os.sep in name or "/" in name)
        entries = [] if spelled_as_path else self.list(task)
        matches = [e for e in entries if e.version == name]
        # a bare name is a version or bundled name first: a folder "v2" where the command runs
        # must not stand in for the installed v2
        if name and not matches and (spelled_as_path or Path(name).is_dir()):
            meta = verify_model(name, task=task)
            return ModelEntry(task, meta.get("version", Path(name).name), Path(name), meta, False, False)
        if name:
            if not matches:
                known = ", ".join(e.version for e in entries) or "none"
                raise SegTuneError(f"no model {name!r} for task {task!r} (available: {known})")
            chosen = matches[0]
        else:
            chosen = next((e for e in entries if e.active), None) or next((e for e in entries if e.bundled), None)
            if chosen is None and entries:
                raise SegTuneError(f"no active model for task {task!r} (installed: "
                                   f"{', '.join(e.version for e in entries)}); activate one or name it")
            if chosen is None:
                raise SegTuneError(f"no model installed or bundled for task {task!r}")
        verify_model(chosen.path, task=task)
        return chosen

    # changes

    @contextlib.contextmanager
    def _locked(self, task: str) -> Iterator[Path]:
        task_dir = self._task_dir(task)
        task_dir.mkdir(parents=True, exist_ok=True)
        with open(task_dir / ".lock", "a+") as handle:
            if sys.platform != "win32":
                import fcntl

                fcntl.flock(handle, fcntl.LOCK_EX)
            # Every change to a task folder happens under this lock, so a temporary found now was
            # left by an install or removal that was killed; it may be as large as a model.
            for stale in list(task_dir.glob(".tmp-*")) + list(task_dir.glob(".removing-*")):
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)
            yield task_dir

    def install(self, folder: str | os.PathLike, *, activate: bool = False,
                source: str | os.PathLike | None = None) -> ModelEntry:
        """Verify, copy to a temporary folder, fsync, rename to the next version. The copy records
        ``installed_from``: ``source`` (where the model lives, when ``folder`` is a staged copy
        about to be deleted) or else ``folder``."""
        folder = Path(folder)
        meta = verify_model(folder)
        task = meta["task"]
        with self._locked(task) as task_dir:
            for entry in self.list(task):
                if not entry.bundled and entry.meta.get("sha256") == meta["sha256"]:
                    if activate:
                        self._write_active(task_dir, entry.version)
                    return self._entry(task, entry.version)
            numbers = [_version_key(p)[0] for p in task_dir.glob("v*") if _VERSION_PATTERN.match(p.name)]
            last = task_dir / LAST_VERSION
            with contextlib.suppress(OSError, ValueError):
                numbers.append(int(last.read_text()))
            version = f"v{max(numbers, default=0) + 1}"
            with atomic_write(task_dir / version) as tmp:
                tmp.mkdir()
                shutil.copy2(folder / WEIGHTS, tmp / WEIGHTS)
                record = dict(meta, version=version, installed_from=str(Path(source or folder).resolve()))
                (tmp / META).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
                verify_model(tmp, task=task)  # the copy itself is checked before it gets its name
            with atomic_write(last) as tmp:
                tmp.write_text(version[1:] + "\n")
            if activate:
                self._write_active(task_dir, version)
        return self._entry(task, version)

    def _entry(self, task: str, version: str) -> ModelEntry:
        return next(e for e in self.list(task) if e.version == version and not e.bundled)

    @staticmethod
    def _write_active(task_dir: Path, version: str) -> None:
        with atomic_write(task_dir / "active") as tmp:
            tmp.write_text(version + "\n")

    def activate(self, task: str, version: str) -> ModelEntry:
        with self._locked(task) as task_dir:
            if not _VERSION_PATTERN.match(version) or not (task_dir / version).is_dir():
                raise SegTuneError(f"no installed version {version!r} for task {task!r}")
            verify_model(task_dir / version, task=task)
            self._write_active(task_dir, version)
        return self._entry(task, version)

    def remove(self, task: str, version: str, *, force: bool = False) -> None:
        with self._locked(task) as task_dir:
            target = task_dir / version
            if not _VERSION_PATTERN.match(version) or not target.is_dir():
                raise SegTuneError(f"no installed version {version!r} for task {task!r}")
            if self.active_version(task) == version:
                if not force:
                    raise SegTuneError(f"{task} {version} is the active version; activate another first or use --force")
                (task_dir / "active").unlink()
            trash = task_dir / f".removing-{version}"
            os.replace(target, trash)  # atomic: the version disappears at once
            shutil.rmtree(trash)


def _version_key(path: Path) -> tuple[int, str]:
    match = _VERSION_PATTERN.match(path.name)
    return (int(match.group(1)) if match else -1, path.name)
