"""The network's input frame (§3.2.3): canonical orientation, 4 mm isotropic, centred 80^3 cube.

`preprocess` maps a volume on any grid (any orientation, oblique, anisotropic) into the cube;
`postprocess` maps a probability cube back onto the input's exact grid. Both resample once with
the composed voxel-to-voxel affine (scipy.ndimage.affine_transform), numpy/scipy only.

The cube's axes are the input's own voxel axes, permuted and flipped so that they point to the
nearest of right, anterior, superior (its array is indexed [k, j, i] ~ [S, A, R]); an oblique
input's rotation is kept in the cube's ijk_to_ras, so the image content is never rotated.
The cube is centred on the centre of the input's field of view.
"""

from dataclasses import dataclass
from itertools import permutations, product

import numpy as np
from scipy import ndimage

CUBE_SIZE = 80
CUBE_SPACING = 4.0  # mm
# anti-aliasing before down-sampling: a Gaussian of FWHM 0.75 * sqrt(target^2 - source^2); the full
# width shrinks convex labels more on the way back (Dice of a child kidney's round trip 0.977 vs 0.982)
ANTIALIAS_SIGMA_FACTOR = 0.75 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
INTENSITY_PERCENTILES = (0.5, 99.5)
INTENSITY_CLIP = (0.0, 1.5)
REFINE_BAND = 0.25  # postprocess: trilinear values this close to the threshold are recomputed with cubic B-splines


@dataclass
class PreprocessInfo:
    input_shape: tuple  # (k, j, i)
    input_ijk_to_ras: np.ndarray  # 4x4
    cube_ijk_to_ras: np.ndarray  # 4x4
    intensity_range: tuple  # input intensities mapped to 0 and 1

    @property
    def cube_to_input(self) -> np.ndarray:
        """4x4 from cube (i, j, k) to input (i, j, k)."""
        return np.linalg.solve(self.input_ijk_to_ras, self.cube_ijk_to_ras)


def canonical_directions(ijk_to_ras: np.ndarray) -> np.ndarray:
    """3x3 whose column r is the signed unit input axis nearest to RAS axis r (R, A, S).

    Where two assignments are equally near (axes at exactly 45°), the physically larger matrix
    (lexicographically) wins, so the choice never depends on the order the axes are stored in.
    """
    directions = ijk_to_ras[:3, :3] / np.linalg.norm(ijk_to_ras[:3, :3], axis=0)

    def candidate(perm):
        columns = np.stack([np.sign(directions[r, perm[r]]) * directions[:, perm[r]] for r in range(3)], axis=1)
        return round(float(np.trace(columns)), 9), tuple(np.round(columns.ravel(), 9)), columns

    return max((candidate(perm) for perm in permutations(range(3))), key=lambda c: c[:2])[2]


def cube_geometry(input_shape, input_ijk_to_ras: np.ndarray) -> np.ndarray:
    """4x4 ijk_to_ras of the cube for an input grid."""
    centre_ijk = (np.array(input_shape[::-1], dtype=float) - 1.0) / 2.0
    centre = input_ijk_to_ras[:3, :3] @ centre_ijk + input_ijk_to_ras[:3, 3]
    matrix = np.eye(4)
    matrix[:3, :3] = canonical_directions(input_ijk_to_ras) * CUBE_SPACING
    matrix[:3, 3] = centre - matrix[:3, :3] @ np.full(3, (CUBE_SIZE - 1) / 2.0)
    return matrix


def _resample(array: np.ndarray, out_to_in_ijk: np.ndarray, output_shape, order: int,
              mode: str = "constant") -> np.ndarray:
    """Resample an array indexed [k, j, i] with a 4x4 (i, j, k) output-to-input voxel map."""
    reverse = np.eye(3)[::-1]
    matrix = reverse @ out_to_in_ijk[:3, :3] @ reverse
    offset = reverse @ out_to_in_ijk[:3, 3]
    if order > 1:
        array = ndimage.spline_filter(array, order, output=np.float32, mode=mode)
    return ndimage.affine_transform(array, matrix, offset, output_shape=output_shape, order=order,
                                    mode=mode, cval=0.0, prefilter=False, output=np.float32)


def field_of_view(info: PreprocessInfo) -> np.ndarray:
    """Boolean cube: voxels whose centre lies inside the input's grid."""
    n = CUBE_SIZE
    k, j, i = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1).reshape(-1, 3).astype(np.float64)
    mapping = info.cube_to_input
    inside_ijk = ijk @ mapping[:3, :3].T + mapping[:3, 3]
    limits = np.array(info.input_shape[::-1], dtype=float) - 0.5
    return np.all((inside_ijk >= -0.5) & (inside_ijk <= limits), axis=1).reshape(n, n, n)


def resample_to_cube(array: np.ndarray, info: PreprocessInfo, order: int = 1) -> np.ndarray:
    """Input array -> cube (float32), anti-aliased to the cube's 4 mm; no intensity change.

    The field of view ends sharply, as the input does: the edge voxels are extended up to the
    grid's border (half a voxel out) and everything beyond is 0. Interpolating with zeros there
    instead draws a dark rim around the field of view, which a network trained on sharp edges
    takes for kidney.
    """
    spacing = np.linalg.norm(info.input_ijk_to_ras[:3, :3], axis=0)  # i, j, k
    sigma_mm = ANTIALIAS_SIGMA_FACTOR * np.sqrt(np.maximum(CUBE_SPACING**2 - spacing**2, 0.0))
    source = np.asarray(array, dtype=np.float32)
    if order > 0:
        source = ndimage.gaussian_filter(source, (sigma_mm / spacing)[::-1], truncate=3.0)
    shape = (CUBE_SIZE,) * 3
    cube = _resample(source, info.cube_to_input, shape, order, mode="nearest")
    return np.where(field_of_view(info), cube, 0.0).astype(np.float32)


def normalise_intensity(cube: np.ndarray, in_fov: np.ndarray, intensity_range=None) -> np.ndarray:
    """Map the in-field-of-view percentiles to [0, 1] (clipped to INTENSITY_CLIP); 0 outside."""
    low, high = intensity_range if intensity_range is not None else np.percentile(cube[in_fov], INTENSITY_PERCENTILES)
    scaled = np.clip((cube - low) / max(high - low, 1e-6), *INTENSITY_CLIP)
    return np.where(in_fov, scaled, 0.0).astype(np.float32)


def preprocess(volume) -> tuple[np.ndarray, PreprocessInfo]:
    """Volume (array [k, j, i] + ijk_to_ras) -> (float32 cube [80, 80, 80], PreprocessInfo)."""
    array = np.asarray(volume.array)
    ijk_to_ras = np.asarray(volume.ijk_to_ras, dtype=np.float64)
    info = PreprocessInfo(tuple(array.shape), ijk_to_ras, cube_geometry(array.shape, ijk_to_ras), (0.0, 1.0))
    cube = resample_to_cube(array, info)
    in_fov = field_of_view(info)
    info.intensity_range = tuple(float(x) for x in np.percentile(cube[in_fov], INTENSITY_PERCENTILES))
    return normalise_intensity(cube, in_fov, info.intensity_range), info


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask.astype(np.uint8)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return (labels == np.argmax(sizes)).astype(np.uint8)


def cube_to_input(cube: np.ndarray, info: PreprocessInfo, order: int = 3) -> np.ndarray:
    """Cube values resampled onto the input's grid (float32, 0 outside the cube).

    Cubic B-splines by default: their 0.5 iso-surface follows a smooth 4 mm probability map
    more closely than trilinear interpolation (label round trip of a child kidney: Dice 0.98 vs 0.97).
    """
    to_cube = np.linalg.inv(info.cube_to_input)
    return _resample(np.asarray(cube, dtype=np.float32), to_cube, info.input_shape, order)


def postprocess(probability: np.ndarray, info: PreprocessInfo, threshold: float = 0.5,
                largest_component: bool = True) -> np.ndarray:
    """Probability cube -> uint8 0/1 mask on the input's exact grid: the threshold of `cube_to_input`.

    Cubic interpolation is only evaluated where it can change the decision: trilinear values
    first, then cubic ones at the voxels within REFINE_BAND of the threshold (a few % of a large
    input; the B-spline and trilinear values of a probability map differ by far less than that).
    Both only inside the box of input voxels that a cube value within reach of the threshold can
    touch (`_input_box`; the kidney's neighbourhood), and the largest component is found there.
    """
    cube = np.asarray(probability, dtype=np.float32)
    mask = np.zeros(info.input_shape, dtype=np.uint8)
    box = _input_box(cube >= threshold - REFINE_BAND, info)
    if box is None:
        return mask
    origin = np.eye(4)
    origin[:3, 3] = [box[2].start, box[1].start, box[0].start]  # (i, j, k) of the box's first voxel
    to_cube = np.linalg.inv(info.cube_to_input) @ origin
    shape = tuple(b.stop - b.start for b in box)
    values = _resample(cube, to_cube, shape, order=1)
    band = np.flatnonzero(np.abs(values - threshold) < REFINE_BAND)
    if band.size:
        kji = np.stack(np.unravel_index(band, shape)).astype(np.float64)
        reverse = np.eye(3)[::-1]
        cube_kji = (reverse @ to_cube[:3, :3] @ reverse) @ kji + (reverse @ to_cube[:3, 3])[:, None]
        coefficients = ndimage.spline_filter(cube, 3, output=np.float32, mode="constant")
        values.flat[band] = ndimage.map_coordinates(coefficients, cube_kji, order=3, mode="constant", cval=0.0,
                                                    prefilter=False)
    inside = values >= threshold
    mask[box] = keep_largest_component(inside) if largest_component else inside
    return mask


def _input_box(candidates: np.ndarray, info: PreprocessInfo) -> tuple[slice, slice, slice] | None:
    """The input voxels (k, j, i slices) whose trilinear value can reach the refine band: those
    whose 8 cube neighbours include a candidate (value >= threshold - REFINE_BAND). Elsewhere the
    value is a convex combination of cube values below that, so the mask is 0 there."""
    if not candidates.any():
        return None
    ks, js, is_ = (np.flatnonzero(candidates.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    low = np.array([is_[0], js[0], ks[0]], dtype=float) - 1  # (i, j, k), one cube voxel of slack each side
    high = np.array([is_[-1], js[-1], ks[-1]], dtype=float) + 1
    corners = np.array([[*corner, 1.0] for corner in product(*zip(low, high))])
    ijk = corners @ info.cube_to_input.T
    first = np.maximum(np.floor(ijk[:, :3].min(axis=0)), 0).astype(int)
    last = np.minimum(np.ceil(ijk[:, :3].max(axis=0)), np.array(info.input_shape[::-1]) - 1).astype(int)
    if np.any(last < first):
        return None
    return tuple(slice(first[axis], last[axis] + 1) for axis in (2, 1, 0))
