"""Volumes with their geometry, and the bridges between arrays, SimpleITK images and files.

Conventions (the same as Slicer's):
- `Volume.array` is indexed [k, j, i], like `slicer.util.arrayFromVolume` and
  `SimpleITK.GetArrayFromImage`.
- `Volume.ijk_to_ras` is the 4x4 voxel-to-RAS matrix. ITK and the files it writes are LPS: the
  LPS<->RAS flip happens in `volume_to_sitk`/`volume_from_sitk` and nowhere else.

SimpleITK is imported lazily so that array-only users (training on a machine without SimpleITK)
can import this module. The MRML bridge lives in `SegTuneCore.mrml`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from SegTuneCore.errors import SegTuneError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Volume:
    array: np.ndarray
    ijk_to_ras: np.ndarray

    def __post_init__(self) -> None:
        self.ijk_to_ras = np.asarray(self.ijk_to_ras, dtype=np.float64)
        if self.ijk_to_ras.shape != (4, 4):
            raise ValueError("ijk_to_ras must be a 4x4 matrix")

    @classmethod
    def from_geometry(cls, array: np.ndarray, spacing: Sequence[float], origin: Sequence[float],
                      directions: np.ndarray | None = None) -> "Volume":
        """spacing (i, j, k) in mm, origin in RAS, directions columns = unit RAS axes of i, j, k."""
        directions = np.eye(3) if directions is None else np.asarray(directions, dtype=np.float64)
        matrix = np.eye(4)
        matrix[:3, :3] = directions * np.asarray(spacing, dtype=np.float64)[None, :]
        matrix[:3, 3] = origin
        return cls(np.asarray(array), matrix)

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        return self.ijk_to_ras[:3, 3].copy()

    @property
    def directions(self) -> np.ndarray:
        return self.ijk_to_ras[:3, :3] / self.spacing[None, :]

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape[:3][::-1])

    @property
    def ras_to_ijk(self) -> np.ndarray:
        return np.linalg.inv(self.ijk_to_ras)

    def with_array(self, array: np.ndarray) -> "Volume":
        if array.shape[:3] != self.array.shape[:3]:
            raise ValueError(f"array shape {array.shape} does not match the volume's {self.array.shape}")
        return Volume(array, self.ijk_to_ras.copy())

    def ijk_to_ras_points(self, ijk: np.ndarray) -> np.ndarray:
        ijk = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
        return ijk @ self.ijk_to_ras[:3, :3].T + self.ijk_to_ras[:3, 3]


@dataclass(frozen=True)
class Segment:
    name: str
    label_value: int
    color: tuple[float, float, float]


# --- SimpleITK bridge -----------------------------------------------------------------------

def volume_to_sitk(volume: Volume):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array), isVector=volume.array.ndim == 4)
    image.SetSpacing([float(s) for s in volume.spacing])
    image.SetOrigin([float(v) for v in LPS_TO_RAS @ volume.origin])
    image.SetDirection([float(v) for v in (LPS_TO_RAS @ volume.directions).ravel()])
    return image


def volume_from_sitk(image) -> Volume:
    import SimpleITK as sitk

    if image.GetDimension() != 3:
        raise SegTuneError(f"expected a 3D image, got a {image.GetDimension()}D image")
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    return Volume.from_geometry(
        sitk.GetArrayFromImage(image),
        spacing=image.GetSpacing(),
        origin=LPS_TO_RAS @ np.array(image.GetOrigin(), dtype=np.float64),
        directions=LPS_TO_RAS @ direction,
    )


# --- files ----------------------------------------------------------------------------------

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
# Outputs are single files (a header and its data file could not be renamed into place together),
# named in lower case as ITK's writers require.
OUTPUT_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha")


def check_segmentation_output_name(path: str | os.PathLike) -> None:
    if not Path(path).name.endswith(".seg.nrrd"):
        raise SegTuneError(f"{path}: a segmentation file must end with .seg.nrrd (in lower case)")


def check_volume_output_name(path: str | os.PathLike) -> None:
    name = Path(path).name
    if name.lower().endswith((".nhdr", ".mhd")):
        raise SegTuneError(f"{path}: a header with a separate data file is not written; use a single file "
                           f"({', '.join(OUTPUT_SUFFIXES)})")
    if not name.endswith(OUTPUT_SUFFIXES):
        raise SegTuneError(f"{path}: unsupported output file type (use one of {', '.join(OUTPUT_SUFFIXES)}, "
                           f"in lower case)")


def check_outputs(outputs: Sequence[str | os.PathLike], inputs: Sequence[str | os.PathLike] = ()) -> None:
    """A one-line error before any work when an output file cannot be written where it is asked
    for (a folder by that name, a file where its folder should be, a read-only folder) or would
    overwrite an input or another output (the same file by any spelling: relative, `..`, links)."""
    seen = {os.path.realpath(path): f"input {path}" for path in inputs}
    for path in outputs:
        key = os.path.realpath(path)
        if key in seen:
            raise SegTuneError(f"{path}: is also the {seen[key]}; write the output to another file")
        seen[key] = f"output {path}"
        if os.path.isdir(key):
            raise SegTuneError(f"{path}: is a folder, expected a file name")
        folder = Path(key).parent
        while not folder.exists():
            folder = folder.parent
        if not folder.is_dir():
            raise SegTuneError(f"{path}: cannot be written, {folder} is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise SegTuneError(f"{path}: cannot be written, the folder {folder} is read-only")


def check_input_file(path: Path) -> None:
    """A one-line error for a missing, directory, empty or truncated-NIfTI input file."""
    if not path.exists():
        raise SegTuneError(f"{path}: no such file")
    if path.is_dir():
        raise SegTuneError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise SegTuneError(f"{path}: file is empty")
    check_nifti_complete(path)


def check_nifti_complete(path: Path) -> None:
    """Refuse a truncated NIfTI file: ITK's (and so MRML's) NIfTI reader silently fills the
    missing voxels with zeros. Other files are left to their readers, which do report truncation."""
    import gzip
    import struct

    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            header = handle.read(540)
            needed = _nifti_data_end(header)
            if needed is None:
                return  # not NIfTI-1/2: the reader gives its own error
            handle.seek(needed - 1)
            complete = len(handle.read(1)) == 1
    except (OSError, EOFError, struct.error):
        complete = False
    if not complete:
        raise SegTuneError(f"{path}: truncated NIfTI file (the voxel data ends early)")


def _nifti_data_end(header: bytes) -> int | None:
    """vox_offset + voxel bytes from a NIfTI-1 or NIfTI-2 header (either byte order)."""
    import struct

    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
            break
    else:
        return None
    rank = dims[0]
    if not 1 <= rank <= 7 or bitpix <= 0:
        return None
    voxels = int(np.prod([max(int(n), 1) for n in dims[1:rank + 1]], dtype=np.int64))
    return offset + voxels * bitpix // 8


def read_volume(path: str | os.PathLike, *, require_3d: bool = True) -> Volume:
    """Read a scalar volume (NRRD, NIfTI, MHA); every failure is a one-line SegTuneError."""
    import SimpleITK as sitk

    path = Path(path)
    check_input_file(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise SegTuneError(f"{path}: not a readable image ({_itk_reason(exc)})") from None
    _check_scalar_3d(path, image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel(), require_3d)
    return volume_from_sitk(image)


def check_volume_header(path: str | os.PathLike) -> None:
    """`read_volume`'s checks from the header alone (no voxel is read): for readers such as
    MRML's, which would load frame 0 of a 4D image, or a tensor image, without a word."""
    from SegTuneCore.training_data import read_header  # it imports this module

    try:
        header = read_header(Path(path))
    except SegTuneError as exc:
        raise SegTuneError(f"{path}: {exc}") from None
    _check_scalar_3d(Path(path), 3, header.size, 1, True)


def check_3d_shape(name, size_ijk: Sequence[int]) -> None:
    """A volume, not a 2D image or a single slice (whose slices would be lines)."""
    if len(size_ijk) != 3 or min(size_ijk) < 2:
        raise SegTuneError(f"{name}: is a {'x'.join(str(s) for s in size_ijk)} image, expected a 3D volume")


def _check_scalar_3d(path: Path, dimension: int, size, components: int, require_3d: bool) -> None:
    if components != 1:
        raise SegTuneError(f"{path}: has {components} components per voxel, expected a scalar volume")
    if require_3d:
        check_3d_shape(path, size)
    if dimension != 3:
        raise SegTuneError(f"{path}: {dimension}D images are not supported")


def _itk_reason(exc: RuntimeError) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # ITK's last line is the useful description; the first ones are source locations.
    return lines[-1] if lines else "unknown reason"


def write_volume(volume: Volume, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write atomically: a reader never sees a half-written file."""
    from SegTuneCore.process import atomic_write

    path = Path(path)
    check_volume_output_name(path)
    with atomic_write(path) as tmp:
        _write_image(volume_to_sitk(volume), tmp, path, compress)
    return path


def _write_image(image, tmp: Path, path: Path, compress: bool) -> None:
    import SimpleITK as sitk

    try:
        sitk.WriteImage(image, str(tmp), compress)
    except RuntimeError as exc:  # ITK's multi-line message: keep its last, useful line
        raise SegTuneError(f"{path}: could not be written ({_itk_reason(exc)})") from None


# --- .seg.nrrd (Slicer's segmentation file) ---------------------------------------------------
# A single-layer labelmap NRRD whose key/value pairs carry the segment list. Written and read
# through SimpleITK so that engines need no MRML; the MRML segmentation storage node reads it.

def _segment_fields(index: int, segment: Segment, extent: tuple[int, ...]) -> dict[str, str]:
    color = " ".join(f"{c:.6g}" for c in segment.color)
    return {
        f"Segment{index}_ID": f"Segment_{segment.label_value}",
        f"Segment{index}_Name": segment.name,
        f"Segment{index}_NameAutoGenerated": "0",
        f"Segment{index}_Color": color,
        f"Segment{index}_ColorAutoGenerated": "0",
        f"Segment{index}_LabelValue": str(segment.label_value),
        f"Segment{index}_Layer": "0",
        f"Segment{index}_Extent": " ".join(str(e) for e in extent),
        f"Segment{index}_Tags": "",
    }


def write_segmentation(labels: Volume, segments: Sequence[Segment], path: str | os.PathLike) -> Path:
    from SegTuneCore.process import atomic_write

    path = Path(path)
    check_segmentation_output_name(path)
    values = [s.label_value for s in segments]
    if len(set(values)) != len(values) or any(v <= 0 or v > 255 for v in values):
        raise SegTuneError("segment label values must be distinct integers in 1..255")
    array = np.asarray(labels.array)
    # Voxels of labels that no segment names would stay in the file as anonymous values.
    array = np.where(np.isin(array, values), array, 0).astype(np.uint8)
    image = volume_to_sitk(labels.with_array(array))
    for index, segment in enumerate(segments):
        extent = _label_extent(array == segment.label_value)
        for key, value in _segment_fields(index, segment, extent).items():
            image.SetMetaData(key, value)
    image.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    image.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    image.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    with atomic_write(path) as tmp:
        # SimpleITK picks the writer from the suffix; the temporary name keeps ".nrrd".
        _write_image(image, tmp, path, True)
    return path


def _label_extent(mask: np.ndarray) -> tuple[int, ...]:
    if not mask.any():
        return (0, -1, 0, -1, 0, -1)
    bounds = []
    for axis in (2, 1, 0):  # i, j, k
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        bounds += [int(present[0]), int(present[-1])]
    return tuple(bounds)


def read_segmentation(path: str | os.PathLike) -> tuple[Volume, list[Segment]]:
    """Read a single-layer `.seg.nrrd` into a label volume and its segments."""
    import SimpleITK as sitk

    path = Path(path)
    check_input_file(path)
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        image = reader.Execute()
    except RuntimeError as exc:
        raise SegTuneError(f"{path}: not a readable segmentation ({_itk_reason(exc)})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise SegTuneError(f"{path}: only single-layer 3D segmentations are supported")
    keys = set(image.GetMetaDataKeys())
    segments = []
    index = 0
    while f"Segment{index}_Name" in keys:
        get = lambda field: image.GetMetaData(f"Segment{index}_{field}")  # noqa: E731
        layer = int(get("Layer")) if f"Segment{index}_Layer" in keys else 0
        if layer != 0:
            raise SegTuneError(f"{path}: overlapping segments (several layers) are not supported")
        color = tuple(float(c) for c in get("Color").split()) if f"Segment{index}_Color" in keys else (1.0, 1.0, 0.0)
        segments.append(Segment(get("Name"), int(get("LabelValue")), color))
        index += 1
    if not segments:
        raise SegTuneError(f"{path}: no segments found (not a .seg.nrrd file)")
    return volume_from_sitk(image), segments


# --- canonical orientation --------------------------------------------------------------------

@dataclass(frozen=True)
class CanonicalFrame:
    """Permutation and flips that make a volume's axes point (nearest) to +R, +A, +S.

    Only voxel order changes (no interpolation), so `from_canonical` is the exact inverse. The
    oblique remainder stays in the canonical volume's ijk_to_ras.
    """

    source_shape: tuple[int, int, int]   # array shape [k, j, i] of the source
    source_ijk_to_ras: np.ndarray
    axis_of: tuple[int, int, int]       # axis_of[r] = source ijk axis that becomes canonical axis r
    flipped: tuple[bool, bool, bool]    # canonical axis r is reversed

    @classmethod
    def of(cls, volume: Volume) -> "CanonicalFrame":
        directions = volume.directions
        # Assign each RAS axis the ijk axis most aligned with it (greedy on the largest cosine).
        cosines = np.abs(directions)  # [ras, ijk]
        axis_of = [-1, -1, -1]
        used: set[int] = set()
        for flat in np.argsort(-cosines, axis=None):
            ras, ijk = divmod(int(flat), 3)
            if axis_of[ras] == -1 and ijk not in used:
                axis_of[ras] = ijk
                used.add(ijk)
        flipped = tuple(bool(directions[r, axis_of[r]] < 0) for r in range(3))
        return cls(tuple(volume.array.shape[:3]), volume.ijk_to_ras.copy(), tuple(axis_of), flipped)

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        # Array axes are [k, j, i]: ijk axis a lives at array axis 2 - a.
        order = [2 - self.axis_of[r] for r in (2, 1, 0)]
        out = np.transpose(array, order + list(range(3, array.ndim)))
        for r in range(3):
            if self.flipped[r]:
                out = np.flip(out, axis=2 - r)
        return np.ascontiguousarray(out)

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        out = array
        for r in range(3):
            if self.flipped[r]:
                out = np.flip(out, axis=2 - r)
        order = [2 - self.axis_of[r] for r in (2, 1, 0)]
        inverse = np.argsort(order).tolist()
        return np.ascontiguousarray(np.transpose(out, inverse + list(range(3, out.ndim))))

    @property
    def canonical_ijk_to_ras(self) -> np.ndarray:
        source_shape_ijk = self.source_shape[::-1]
        permutation = np.zeros((4, 4))
        permutation[3, 3] = 1.0
        for r in range(3):
            a = self.axis_of[r]
            # canonical index c_r maps to source index: s_a = c_r, or (n_a - 1 - c_r) if flipped
            if self.flipped[r]:
                permutation[a, r] = -1.0
                permutation[a, 3] = source_shape_ijk[a] - 1
            else:
                permutation[a, r] = 1.0
        return self.source_ijk_to_ras @ permutation

    @property
    def canonical_spacing(self) -> np.ndarray:
        return np.linalg.norm(self.canonical_ijk_to_ras[:3, :3], axis=0)

    def canonical_volume(self, array: np.ndarray) -> Volume:
        return Volume(self.to_canonical(array), self.canonical_ijk_to_ras)


def resample_to_reference(array: np.ndarray, source_ijk_to_ras: np.ndarray, reference: Volume,
                          *, order: int = 1, fill: float = 0.0) -> np.ndarray:
    """Resample `array` (on the grid source_ijk_to_ras) onto the reference volume's grid.

    order 0 = nearest neighbour (labels), 1 = trilinear (probabilities as float32).
    """
    from scipy.ndimage import map_coordinates

    ref_to_source = np.linalg.inv(source_ijk_to_ras) @ reference.ijk_to_ras
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in reference.array.shape[:3]], indexing="ij")
    ijk = np.stack([i, j, k, np.ones_like(i)], axis=0).reshape(4, -1)
    source_ijk = (ref_to_source.astype(np.float64) @ ijk)[:3]
    coords = source_ijk[::-1]  # map_coordinates indexes the array in [k, j, i] order
    # A voxel is a box: a point within half a voxel of the border is inside (as in ITK). Plain
    # mode="constant" would drop a border voxel whose centre lands a rounding error outside.
    limits = np.asarray(np.shape(array)[:3], dtype=np.float64)[:, None]
    inside = np.all((coords >= -0.5) & (coords < limits - 0.5), axis=0)
    coords = np.clip(coords, 0.0, limits - 1.0)
    out = map_coordinates(np.asarray(array), coords, order=order, mode="nearest", prefilter=False)
    out[~inside] = fill
    return out.reshape(reference.array.shape[:3])
