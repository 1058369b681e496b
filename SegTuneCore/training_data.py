"""Checks a training folder before anything trains (KidneyUS and MRIFieldOfView retraining).

    pairs = check_training_folder(folder, label_kind="volume")       # [(image, label), ...]
    pairs = check_training_folder(folder, label_kind="slice-json")

Naming convention (top level of the folder only; other files such as notes are ignored):
- images: NAME.nrrd, .nhdr, .nii, .nii.gz, .mha or .mhd (any 3D scalar image SimpleITK reads);
- `label_kind="volume"` (KidneyUS): the label of NAME.nrrd is NAME_label.nrrd (markers `_label`,
  `-label`, `_seg`, `-seg`, `.seg`, `_mask`, `-mask`; any image suffix), on the image's voxel grid;
- `label_kind="slice-json"` (MRIFieldOfView): the label of NAME.nrrd is NAME.json holding
  `{"slice_labels": [one region name or null per axial slice]}`, where the axial slices are taken
  along the IJK axis nearest to the patient's S axis (as MRIFieldOfViewLib.preprocessing does).

Only headers are read (SimpleITK ImageFileReader.ReadImageInformation, plus the NIfTI completeness
check of SegTuneCore.geometry), so a folder of hundreds of volumes is checked in about a second.
Every problem is collected first; the folder is refused with ONE SegTuneError naming each
offending file: unreadable or non-3D images, images without a label, labels without an image,
ambiguous names, label grids that differ from their image's (size, spacing, origin, direction),
slice label lists of the wrong length. Truncated voxel data is found without decompressing for
NIfTI, attached raw or gzip NRRD (the gzip trailer holds the data size) and uncompressed MHA;
in other files (detached headers, zlib-compressed MHA) only when the volume is read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SegTuneError
from .geometry import VOLUME_SUFFIXES, check_nifti_complete

LABEL_MARKERS = ("_label", "-label", "_seg", "-seg", ".seg", "_mask", "-mask")
LABEL_KINDS = ("volume", "slice-json")
# Grids agree when spacings agree to 1e-4 (relative), origins to 1e-3 of the smallest voxel side
# and direction cosines to 1e-4: what survives a float32 round trip through NIfTI.
SPACING_RTOL = 1e-4
ORIGIN_TOL_VOXELS = 1e-3
DIRECTION_ATOL = 1e-4


@dataclass(frozen=True)
class Header:
    size: tuple[int, ...]
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray   # 3x3, columns = directions of the i, j, k axes (LPS, as SimpleITK)

    def grid_difference(self, other: "Header") -> str | None:
        """What differs between the two voxel grids, or None when they agree."""
        if self.size != other.size:
            return f"size {_shape(other.size)} differs from {_shape(self.size)}"
        if not np.allclose(self.spacing, other.spacing, rtol=SPACING_RTOL, atol=0):
            return f"spacing {_numbers(other.spacing)} differs from {_numbers(self.spacing)}"
        if np.max(np.abs(self.origin - other.origin)) > ORIGIN_TOL_VOXELS * float(np.min(self.spacing)):
            return f"origin {_numbers(other.origin)} differs from {_numbers(self.origin)}"
        if np.max(np.abs(self.direction - other.direction)) > DIRECTION_ATOL:
            return "direction differs"
        return None

    @property
    def axial_slices(self) -> int:
        """Slices along the IJK axis whose direction has the largest S component."""
        return int(self.size[int(np.argmax(np.abs(self.direction[2])))])


def _shape(size) -> str:
    return "x".join(str(int(v)) for v in size)


def _numbers(values) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"


def image_stem(name: str) -> str | None:
    """NAME of NAME.<image suffix>, or None for files that are not images."""
    lower = name.lower()
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def read_header(path: Path) -> Header:
    """The voxel grid of a 3D scalar image file, from its header; SegTuneError if unreadable."""
    import SimpleITK as sitk

    if path.stat().st_size == 0:
        raise SegTuneError("empty file")
    try:
        check_nifti_complete(path)
    except SegTuneError:
        raise SegTuneError("truncated NIfTI file (the voxel data ends early)") from None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise SegTuneError("unreadable (not an image, or a damaged header)") from None
    try:
        _check_data_size(path, reader)
    except OSError:
        raise SegTuneError("unreadable") from None
    if reader.GetDimension() != 3:
        raise SegTuneError(f"a {reader.GetDimension()}D image, expected 3D")
    if reader.GetNumberOfComponents() != 1:
        raise SegTuneError(f"{reader.GetNumberOfComponents()} components per voxel, expected a scalar image")
    return Header(tuple(int(v) for v in reader.GetSize()), np.array(reader.GetSpacing(), dtype=np.float64),
                  np.array(reader.GetOrigin(), dtype=np.float64),
                  np.array(reader.GetDirection(), dtype=np.float64).reshape(3, 3))


def _data_bytes(reader) -> int:
    import SimpleITK as sitk

    bytes_per_value = {sitk.sitkUInt8: 1, sitk.sitkInt8: 1, sitk.sitkUInt16: 2, sitk.sitkInt16: 2,
                       sitk.sitkUInt32: 4, sitk.sitkInt32: 4, sitk.sitkUInt64: 8, sitk.sitkInt64: 8,
                       sitk.sitkFloat32: 4, sitk.sitkFloat64: 8}.get(reader.GetPixelID(), 0)
    return int(np.prod(reader.GetSize())) * reader.GetNumberOfComponents() * bytes_per_value


def _check_data_size(path: Path, reader) -> None:
    """Refuse attached NRRD (raw or gzip) and uncompressed MHA data shorter than the header says."""
    name = path.name.lower()
    if not name.endswith((".nrrd", ".mha")):
        return
    expected = _data_bytes(reader)
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
        size = handle.seek(0, os.SEEK_END)
        if name.endswith(".nrrd"):
            end = head.find(b"\n\n")
            fields = dict(line.split(b":", 1) for line in head[:end].splitlines()[1:]
                          if b":" in line and not line.startswith(b"#"))
            fields = {key.strip().lower(): value.strip().lower() for key, value in fields.items()}
            if end < 0 or {b"data file", b"datafile", b"line skip", b"byte skip"} & set(fields):
                return
            encoding = fields.get(b"encoding")
            if encoding == b"raw":
                actual = size - (end + 2)
            elif encoding in (b"gzip", b"gz") and size >= end + 2 + 18:
                handle.seek(-4, os.SEEK_END)
                actual, expected = int.from_bytes(handle.read(4), "little"), expected % 2 ** 32
            else:
                return
        else:
            marker = head.find(b"ElementDataFile = LOCAL")
            if marker < 0 or b"CompressedData = True" in head[:marker]:
                return
            actual = size - (head.index(b"\n", marker) + 1)
    if expected and actual != expected:
        raise SegTuneError(f"truncated or damaged voxel data ({actual} bytes where the header needs {expected})")


def _slice_labels_problem(path: Path, header: Header) -> str | None:
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))["slice_labels"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return 'unreadable (expected JSON {"slice_labels": [...]})'
    if not isinstance(labels, list) or not all(label is None or isinstance(label, str) for label in labels):
        return "slice_labels must be a list of region names or null"
    if len(labels) != header.axial_slices:
        return f"{len(labels)} slice labels for {header.axial_slices} axial slices"
    return None


def _message(reason: str) -> str:
    return " ".join(str(reason).split())  # one line, whatever the reader said


def check_training_folder(folder, *, label_kind: str = "volume") -> list[tuple[Path, Path]]:
    """(image, label) pairs of a training folder, sorted by image name, after checking them all.

    Raises one SegTuneError naming every offending file (see the module docstring).
    """
    if label_kind not in LABEL_KINDS:
        raise ValueError(f"label_kind must be one of {LABEL_KINDS}, got {label_kind!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise SegTuneError(f"{folder}: not a folder of training images and labels")
    files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())
    problems: dict[str, str] = {}
    images: dict[str, list[Path]] = {}
    labels: dict[str, list[Path]] = {}
    for path in files:
        stem = image_stem(path.name)
        if label_kind == "slice-json" and path.suffix.lower() == ".json":
            labels.setdefault(path.name[: -len(".json")], []).append(path)
        elif stem is not None:
            marker = next((m for m in LABEL_MARKERS if stem.endswith(m)), None) if label_kind == "volume" else None
            if marker is not None:
                labels.setdefault(stem[: -len(marker)], []).append(path)
            else:
                images.setdefault(stem, []).append(path)
    if not images and not labels:
        example = "case1.nrrd with case1_label.nrrd" if label_kind == "volume" else "case1.nrrd with case1.json"
        raise SegTuneError(f"{folder}: no training images and labels found (expected e.g. {example})")

    pairs = []
    for stem in sorted(set(images) | set(labels)):
        found_images, found_labels = images.get(stem, []), labels.get(stem, [])
        if len(found_images) > 1:
            problems[found_images[0].name] = "several images named " + ", ".join(p.name for p in found_images)
        elif len(found_labels) > 1:
            problems[found_labels[0].name] = (f"several labels for {found_images[0].name if found_images else stem}: "
                                              + ", ".join(p.name for p in found_labels))
        elif not found_labels:
            expected = f"{stem}_label{found_images[0].name[len(stem):]}" if label_kind == "volume" else f"{stem}.json"
            problems[found_images[0].name] = f"no label (expected {expected})"
        elif not found_images:
            problems[found_labels[0].name] = "label without an image"
        else:
            pairs.append((found_images[0], found_labels[0]))

    checked = []
    for image, label in pairs:
        try:
            header = read_header(image)
        except (SegTuneError, OSError) as exc:
            problems[image.name] = _message(exc)
            continue
        if label_kind == "slice-json":
            problem = _slice_labels_problem(label, header)
        else:
            try:
                difference = header.grid_difference(read_header(label))
                problem = f"label grid {difference} of {image.name}" if difference else None
            except (SegTuneError, OSError) as exc:
                problem = _message(exc)
        if problem:
            problems[label.name] = problem
        else:
            checked.append((image, label))
    if problems:
        listed = "; ".join(f"{name}: {reason}" for name, reason in sorted(problems.items()))
        raise SegTuneError(f"{folder}{os.sep} refused before training, {len(problems)} offending "
                           f"file{'s' if len(problems) > 1 else ''}: {listed}")
    return checked
