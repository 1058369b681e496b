"""Axial slices of any volume as the slice classifier sees them (training and inference alike).

Which axis is "axial": the IJK axis whose direction is most aligned with S (superior) in RAS.
For ordinary axial acquisitions that is k, the volume's third array axis; for volumes stored
with the patient axis along i or j (e.g. a coronal or sagittal storage order of an axial-ish
stack), that axis is used instead and `SliceStack.slice_axis` says which one it was. In every
case `k_indices[n]` is the index of slice n along `slice_axis`, slices are returned in array
order, and `positions_mm[n]` is the S coordinate of the slice centre: sort by it to order slices
physically (flipped or LPS-stored volumes have S decreasing with the index).

In-plane, each slice is shown in radiological display: anterior at the top, the patient's
right on the image's left, whatever the storage order or flips. Oblique volumes use the nearest
axes (the remaining tilt, < 45 degrees, is not resampled: the classifier is trained with
rotations). The physical aspect ratio is kept: the slice is padded to a square field of view
with background, then resized to SIZE x SIZE with antialiasing.

Intensities are scaled per volume (robust percentiles), so empty slices stay dark and a slice's
brightness relative to the rest of the body is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from SegTuneCore.errors import SegTuneError

SIZE = 128
LOW_PERCENTILE = 1.0
HIGH_PERCENTILE = 99.5
# Recorded in every model's model.json; bump when this function's output changes.
PREPROCESSING = {"name": "axial_slices", "version": 1, "size": SIZE,
                 "percentiles": [LOW_PERCENTILE, HIGH_PERCENTILE], "display": "radiological"}


@dataclass
class SliceStack:
    images: np.ndarray        # float32 [N, SIZE, SIZE], about [0, 1]
    k_indices: np.ndarray     # int64 [N], index of each slice along slice_axis
    positions_mm: np.ndarray  # float64 [N], S coordinate (RAS, mm) of each slice centre
    slice_axis: int           # IJK axis the slices are taken along: 0 = i, 1 = j, 2 = k

    def __len__(self) -> int:
        return len(self.k_indices)

    def physical_order(self) -> np.ndarray:
        """Indices that sort the slices from inferior to superior."""
        return np.argsort(self.positions_mm, kind="stable")


def slice_axis_of(ijk_to_ras: np.ndarray) -> int:
    """The IJK axis (0, 1, 2) whose direction has the largest superior component."""
    directions = np.asarray(ijk_to_ras, dtype=np.float64)[:3, :3]
    directions = directions / np.linalg.norm(directions, axis=0, keepdims=True)
    return int(np.argmax(np.abs(directions[2])))


def intensity_range(array: np.ndarray) -> tuple[float, float]:
    """Robust (low, high) intensities of a volume from a strided sample of its voxels."""
    stride = max(1, int(round((array.size / 4e6) ** (1 / 3))))
    sample = np.asarray(array[::stride, ::stride, ::stride], dtype=np.float32)
    low, high = np.percentile(sample, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if not high > low:
        high = low + 1.0
    return float(low), float(high)


def _display_axes(directions: np.ndarray, slice_axis: int) -> tuple[int, bool, int, bool]:
    """(row axis, flip rows, column axis, flip columns) in IJK for radiological display."""
    u, v = [axis for axis in range(3) if axis != slice_axis]
    # Rows follow the anterior axis, columns the right-left axis; pick the better assignment.
    if abs(directions[1, u]) + abs(directions[0, v]) >= abs(directions[1, v]) + abs(directions[0, u]):
        row, column = u, v
    else:
        row, column = v, u
    # Top row is anterior (rows run towards posterior); left column is the patient's right.
    return row, directions[1, row] > 0, column, directions[0, column] > 0


def axial_slices(volume, size: int = SIZE) -> SliceStack:
    """Every axial slice of `volume` (a SegTuneCore.geometry.Volume), normalised and resized."""
    import torch
    import torch.nn.functional as F

    array = np.asarray(volume.array)
    if array.ndim != 3 or min(array.shape) < 1:
        raise SegTuneError(f"expected a 3D scalar volume, got an array of shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise SegTuneError(f"expected a real-valued volume, got {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise SegTuneError("the volume contains NaN or infinite values")
    matrix = np.asarray(volume.ijk_to_ras, dtype=np.float64)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    if not np.all(spacing > 0):
        raise SegTuneError("the volume's IJK-to-RAS matrix is singular")
    directions = matrix[:3, :3] / spacing
    slice_axis = slice_axis_of(matrix)
    row, flip_rows, column, flip_columns = _display_axes(directions, slice_axis)

    # array is [k, j, i]: IJK axis a is array axis 2 - a. Bring to [slice, row, column].
    stack = np.transpose(array, (2 - slice_axis, 2 - row, 2 - column))
    if flip_rows:
        stack = stack[:, ::-1, :]
    if flip_columns:
        stack = stack[:, :, ::-1]
    low, high = intensity_range(array)

    rows_mm, columns_mm = stack.shape[1] * spacing[row], stack.shape[2] * spacing[column]
    side_mm = max(rows_mm, columns_mm)
    out_rows = max(1, int(round(size * rows_mm / side_mm)))
    out_columns = max(1, int(round(size * columns_mm / side_mm)))
    top, left = (size - out_rows) // 2, (size - out_columns) // 2

    images = np.zeros((stack.shape[0], size, size), dtype=np.float32)
    chunk = max(1, int(2e7 // max(1, stack.shape[1] * stack.shape[2])))
    with torch.no_grad():
        for start in range(0, stack.shape[0], chunk):
            block = np.ascontiguousarray(stack[start:start + chunk], dtype=np.float32)
            block = np.clip((block - low) / (high - low), 0.0, 1.0)
            tensor = torch.from_numpy(block)[:, None]
            resized = F.interpolate(tensor, size=(out_rows, out_columns), mode="bilinear",
                                    align_corners=False, antialias=True)
            images[start:start + chunk, top:top + out_rows, left:left + out_columns] = resized[:, 0].numpy()
    np.clip(images, 0.0, 1.0, out=images)

    count = stack.shape[0]
    centre = (np.array(array.shape[::-1], dtype=np.float64) - 1) / 2
    indices = np.arange(count, dtype=np.int64)
    ijk = np.tile(centre, (count, 1))
    ijk[:, slice_axis] = indices
    positions = ijk @ matrix[2, :3] + matrix[2, 3]
    return SliceStack(images=images, k_indices=indices, positions_mm=positions, slice_axis=slice_axis)
