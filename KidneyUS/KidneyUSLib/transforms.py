"""Global geometric transforms G = T·C+·Rz·Ry·Rx·S·C− (thesis eq. 4.8) and warping with them.

Conventions (used by the geometric transfer layer, §3.4.1, and the template segmenter, §4.4):

- Points are homogeneous column vectors (x, y, z, 1) in *voxel* coordinates of a tensor
  [N, C, D, H, W]: x indexes W (the last axis), y indexes H, z indexes D. For the network
  frame (arrays [k, j, i] at 4 mm) x is i, so one voxel of translation is 4 mm.
- The 9 parameters are (tx, ty, tz) in voxels, (rx, ry, rz) in radians and
  (log sx, log sy, log sz): all zeros is the identity and every value is valid.
- The rotation matrices are the thesis' (its Ry has the opposite sign convention to Rx, Rz);
  C+ and C− are plain translations by ±centre (the printed matrices have a typo).
- `warp(volume, G)` moves the content by G: out(p) = in(G⁻¹·p), so a +1 voxel x translation
  shifts the last axis by +1. `sample(volume, A)` is the pull form: out(p) = in(A·p), the form
  of φ0∘G in eq. 4.7. `warp(warp(v, G), inverse(G))` is v inside the field of view.
- grid_sample takes normalised coordinates in [-1, 1] with the last grid dimension in (x, y, z)
  order; matrices are converted with `voxel_to_normalised` using the same ALIGN_CORNERS that
  is passed to affine_grid/grid_sample, so voxel centres map exactly.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.nn import functional as F

ALIGN_CORNERS = True
N_PARAMETERS = 9


def _eye(batch: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(4, dtype=like.dtype, device=like.device).expand(batch, 4, 4).clone()


def translation(t: torch.Tensor) -> torch.Tensor:
    """[B, 3] (x, y, z) -> [B, 4, 4]."""
    m = _eye(t.shape[0], t)
    m[:, :3, 3] = t
    return m


def scaling(s: torch.Tensor) -> torch.Tensor:
    """[B, 3] scale factors -> [B, 4, 4]."""
    m = _eye(s.shape[0], s)
    m[:, 0, 0], m[:, 1, 1], m[:, 2, 2] = s[:, 0], s[:, 1], s[:, 2]
    return m


def _rotation(angle: torch.Tensor, axes: tuple[int, int], sign: float) -> torch.Tensor:
    """Rotation in the plane of `axes` = (a, b): m[a,a]=m[b,b]=cos, m[a,b]=-sign·sin, m[b,a]=sign·sin."""
    m = _eye(angle.shape[0], angle)
    a, b = axes
    c, s = torch.cos(angle), torch.sin(angle)
    m[:, a, a], m[:, b, b] = c, c
    m[:, a, b], m[:, b, a] = -sign * s, sign * s
    return m


def rotation_x(r: torch.Tensor) -> torch.Tensor:
    return _rotation(r, (1, 2), 1.0)


def rotation_y(r: torch.Tensor) -> torch.Tensor:
    # The thesis' Ry: [[cos, 0, -sin], [0, 1, 0], [sin, 0, cos]].
    return _rotation(r, (0, 2), 1.0)


def rotation_z(r: torch.Tensor) -> torch.Tensor:
    return _rotation(r, (0, 1), 1.0)


def grid_centre(shape: Sequence[int]) -> tuple[float, float, float]:
    """Centre (x, y, z) in voxel coordinates of a spatial shape (D, H, W)."""
    d, h, w = shape
    return ((w - 1) / 2, (h - 1) / 2, (d - 1) / 2)


def parts_from_parameters(params: torch.Tensor, centre: Sequence[float]) -> list[torch.Tensor]:
    """The factors [T, C+, Rz, Ry, Rx, S, C−] of G from [B, 9] parameters (see module doc)."""
    # filled on the device: no host-to-device copy, so a CUDA graph can capture it
    c = torch.stack([torch.full_like(params[:, 0], value) for value in centre], dim=1)
    return [
        translation(params[:, 0:3]),
        translation(c),
        rotation_z(params[:, 5]),
        rotation_y(params[:, 4]),
        rotation_x(params[:, 3]),
        scaling(torch.exp(params[:, 6:9])),
        translation(-c),
    ]


def matrix_from_parameters(params: torch.Tensor, centre: Sequence[float]) -> torch.Tensor:
    """G = T·C+·Rz·Ry·Rx·S·C− as [B, 4, 4] (differentiable in params)."""
    g = None
    for part in parts_from_parameters(params, centre):
        g = part if g is None else g @ part
    return g


def inverse(matrix: torch.Tensor) -> torch.Tensor:
    # inv_ex skips the error check and its host sync (CUDA graphs); every matrix inverted here is
    # invertible by construction (rotations, exp scales, translations, voxel_to_normalised)
    return torch.linalg.inv_ex(matrix)[0]


def voxel_to_normalised(shape: Sequence[int], align_corners: bool = ALIGN_CORNERS,
                        dtype=torch.float32, device=None) -> torch.Tensor:
    """4x4 matrix taking voxel (x, y, z) to grid_sample's normalised (x, y, z) for shape (D, H, W)."""
    m = torch.eye(4, dtype=dtype, device=device)
    for axis, size in enumerate((shape[2], shape[1], shape[0])):
        # fill_, not item assignment: on CUDA `m[i, j] = x` copies a host tensor, which a CUDA
        # graph cannot capture
        m[axis, axis].fill_(2 / max(size - 1, 1) if align_corners else 2 / size)
        m[axis, 3].fill_(-1.0 if align_corners else 1 / size - 1)
    return m


def sample(volume: torch.Tensor, matrix: torch.Tensor, mode: str = "bilinear",
           padding_mode: str = "zeros") -> torch.Tensor:
    """out(p) = volume(matrix·p) for voxel coordinates p; volume [N, C, D, H, W], matrix [N, 4, 4].

    mode "bilinear" is trilinear for 5-D inputs.
    """
    shape = volume.shape[2:]
    n = voxel_to_normalised(shape, dtype=matrix.dtype, device=matrix.device)
    theta = (n @ matrix @ inverse(n))[:, :3, :]
    grid = F.affine_grid(theta.to(volume.dtype), list(volume.shape), align_corners=ALIGN_CORNERS)
    return F.grid_sample(volume, grid, mode=mode, padding_mode=padding_mode, align_corners=ALIGN_CORNERS)


def warp(volume: torch.Tensor, matrix: torch.Tensor, mode: str = "bilinear",
         padding_mode: str = "zeros") -> torch.Tensor:
    """Move the content of volume by matrix: out(p) = volume(matrix⁻¹·p)."""
    return sample(volume, inverse(matrix), mode=mode, padding_mode=padding_mode)


def field_of_view(shape: Sequence[int], matrix: torch.Tensor) -> torch.Tensor:
    """[N, 1, D, H, W] bool: voxels p whose source matrix⁻¹·p of `warp` lies inside the grid."""
    ones = torch.ones((matrix.shape[0], 1, *shape), dtype=matrix.dtype, device=matrix.device)
    return warp(ones, matrix, mode="nearest") > 0.5
