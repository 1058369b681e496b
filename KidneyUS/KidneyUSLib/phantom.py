"""3D ultrasound kidney phantom: a B-mode-like volume and its kidney label (numpy/scipy only).

One random *scene* per (population, seed) describes everything: the native grid (spacing, size,
storage orientation, optional oblique rotation), the probe (curvilinear fan, attenuation, gain,
noise, rib shadows) and the anatomy (a kidney shaped from real CT kidney masks, cortex, medullary
pyramids, renal sinus, hydronephrosis in 30 % of children, perirenal fat, liver or spleen, the
abdominal wall). Two renderings of the same scene:

- `generate_phantom` samples it on the native grid with multiplicative, spatially correlated
  Rayleigh speckle and additive noise, then compresses it to 8-bit like a scanner display;
- `generate_training_pair` samples it directly on the network's 80^3, 4 mm cube in the canonical
  frame of `preprocessing.preprocess`, with the speckle's statistics after 4 mm averaging.

Everything is defined in the probe frame (mm): u lateral, v elevational, w depth from the probe
face (w >= 0). Probe to patient: u -> superior, v -> right, w -> anterior (a posterior/flank
approach), then an optional oblique rotation. The grid's i, j, k axes are the probe axes in a
random signed order (any storage orientation).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage, special

from KidneyUSLib import preprocessing
from SegTuneCore.geometry import Volume  # numpy only: SimpleITK is imported lazily there

POPULATIONS = ("adult", "child")
SHAPES_FILE = Path(__file__).with_name("data") / "kidney_shapes.npz"

# probe axes (u, v, w) -> RAS (superior, right, anterior); a rotation (det +1)
PROBE_TO_PATIENT = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
# Speckle: Gaussian sigma (mm) of the complex field's point-spread function along (u, v, w)
# (lateral, elevational, axial) and the display compression exponent. Calibrated against the real
# 3D ultrasound in ../shared/data (docs/KidneyUS-phantom.md).
SPECKLE_SIGMA_MM = np.array([2.25, 2.9, 0.95])
DISPLAY_GAMMA = 0.78
DISPLAY_REFERENCE = 2.2  # envelope mapped to 255
NATIVE_SPACING_RANGE = (0.4, 1.0)
NATIVE_SIZE_RANGE = (150, 250)
MAX_OBLIQUE_DEG = 35.0  # below 45 deg: the canonical axes stay the probe axes
# fast path: the mean display level times a correlated log-normal texture whose coefficient of
# variation and correlation (sigma in cube voxels along k, j, i = lateral, axial, elevational)
# match native speckle after preprocessing's 4 mm anti-aliasing (docs/KidneyUS-phantom.md)
CUBE_TEXTURE_CV = 0.22
CUBE_TEXTURE_SIGMA_VOX = (0.55, 0.43, 0.64)
CUBE_PARTIAL_VOLUME_SIGMA = 0.35
CUBE_LINE_BLUR_MM = 1.7  # thin lines rendered on the 4 mm cube: about the anti-aliasing filter + sampling
FASCIA_SIGMA_MM = 0.6
CAPSULE_SIGMA_MM = 0.5

_POPULATION = {
    #            length mm    width/len    thick/len     cortex mm   wall mm     gain        noise        atten /mm
    "adult": dict(length=(100, 120), width=(0.45, 0.55), thick=(0.36, 0.44), cortex=(7, 10), wall=(15, 30),
                  gain=(0.9, 1.1), noise=(0.03, 0.06), atten=(0.004, 0.009), extra_depth=(10, 35),
                  cortex_echo=0.5, medulla_echo=0.2, sinus_echo=1.45, sinus_size=(0.42, 0.5), hydro=0.0),
    "child": dict(length=(55, 90), width=(0.48, 0.6), thick=(0.4, 0.5), cortex=(3, 6), wall=(6, 14),
                  gain=(1.25, 1.6), noise=(0.08, 0.14), atten=(0.006, 0.012), extra_depth=(5, 20),
                  cortex_echo=0.7, medulla_echo=0.12, sinus_echo=1.1, sinus_size=(0.32, 0.42), hydro=0.3),
}
_ECHO = dict(soft_tissue=0.75, subcutaneous_fat=0.7, muscle=0.42, fascia=1.6, perirenal_fat=1.15, liver=0.9,
             spleen=1.0, capsule=1.6, fluid=0.03, rib=2.0)


@dataclass
class Scene:
    population: str
    # native grid: probe-axis order (u, v, w) of the grid's i, j, k axes, their signs, size and spacing
    grid_axes: np.ndarray
    grid_signs: np.ndarray
    size_ijk: np.ndarray
    spacing_ijk: np.ndarray
    fov_uvw: np.ndarray  # extent (mm) of the grid along u, v, w
    probe_to_ras: np.ndarray  # 4x4
    # probe
    apex_offset: float
    half_angles: np.ndarray  # lateral, elevational (rad)
    gain: float
    noise: float
    attenuation: float
    ribs: np.ndarray  # (n, 4): u0, w0, radius, shadow transmission
    # anatomy
    kidney_centre: np.ndarray
    kidney_axes: np.ndarray  # columns: long axis, hilum axis, third axis (probe frame)
    kidney_scale: np.ndarray  # mm per normalised unit along each kidney axis
    shape_index: int
    bumps: np.ndarray  # (n, 4): direction (normalised frame), relative amplitude
    cortex_mm: float
    sinus_size: float
    pyramids: np.ndarray  # (n, 3) directions in the normalised frame
    hydronephrosis: float  # 0 = none, else the dilated pelvis' relative size
    echo: dict
    fat_mm: float
    wall_mm: float
    subcutaneous_mm: float
    organ: str
    organ_normal: np.ndarray
    organ_offset: float
    organ_waves: np.ndarray  # (n, 5): wave vector (3), phase, amplitude mm
    seed: int

    def ijk_to_probe(self) -> np.ndarray:
        """4x4 from native voxel indices (i, j, k) to probe-frame mm (voxel centres)."""
        matrix = np.zeros((4, 4))
        matrix[3, 3] = 1.0
        for axis in range(3):
            matrix[self.grid_axes[axis], axis] = self.grid_signs[axis] * self.spacing_ijk[axis]
        centre = np.array([0.0, 0.0, self.fov_uvw[2] / 2.0])
        matrix[:3, 3] = centre - matrix[:3, :3] @ ((self.size_ijk - 1) / 2.0)
        return matrix


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def _shapes():
    with np.load(SHAPES_FILE) as data:
        return {key: data[key] for key in ("radius", "theta", "phi", "normalised_extent")}


def draw_scene(population: str, seed: int, spacing=None, size=None, oblique=False) -> Scene:
    """All random choices of one phantom; the same (population, seed, spacing, size, oblique) gives the same scene."""
    if population not in POPULATIONS:
        raise ValueError(f"population must be one of {POPULATIONS}, not {population!r}")
    pop = _POPULATION[population]
    rng = np.random.default_rng([int(seed), POPULATIONS.index(population)])
    uniform = lambda bounds: float(rng.uniform(*bounds))  # noqa: E731

    shapes = _shapes()
    shape_index = int(rng.integers(len(shapes["radius"])))
    length = uniform(pop["length"])
    size_mm = np.array([length, length * uniform(pop["width"]), length * uniform(pop["thick"])])
    kidney_scale = size_mm / shapes["normalised_extent"][shape_index]

    # kidney orientation: long axis ~ lateral, hilum ~ elevational, tilted and rolled at random
    base = np.array([[1.0, 0, 0], [0, rng.choice([-1.0, 1.0]), 0], [0, 0, 0]])
    base[:, 2] = np.cross(base[:, 0], base[:, 1])
    tilt = _rotation(rng.normal(size=3), np.deg2rad(rng.uniform(0, 20)))
    roll = _rotation(base[:, 0], np.deg2rad(rng.uniform(-40, 40)))
    kidney_axes = tilt @ roll @ base
    if rng.random() < 0.5:  # left/right mirror image
        kidney_axes[:, 2] *= -1

    wall_mm = uniform(pop["wall"])
    subcutaneous_mm = wall_mm * rng.uniform(0.3, 0.6)
    fat_mm = rng.uniform(3, 9) if population == "adult" else rng.uniform(1.5, 5)
    half_depth = 0.5 * np.abs(kidney_axes[2]) @ size_mm
    depth = wall_mm + fat_mm + half_depth + uniform(pop["extra_depth"])
    apex_offset = rng.uniform(20, 45)
    half_angles = np.deg2rad([rng.uniform(33, 40), rng.uniform(28, 38)])
    fov_target = np.array([rng.uniform(1.35, 1.7) * length, rng.uniform(1.2, 1.5) * max(size_mm[1:]) + 30,
                           depth + half_depth + rng.uniform(15, 40)])

    order = rng.permutation(3)
    signs = rng.choice([-1.0, 1.0], size=3)
    grid_n = rng.integers(NATIVE_SIZE_RANGE[0], NATIVE_SIZE_RANGE[1] + 1, size=3)
    if size is not None:
        grid_n = np.asarray(size, dtype=int)
        if grid_n.shape != (3,) or grid_n.min() < 8:
            raise ValueError("size must be three integers >= 8")
    if spacing is not None:
        grid_s = np.asarray(spacing, dtype=float)
        if grid_s.shape != (3,) or grid_s.min() <= 0:
            raise ValueError("spacing must be three positive numbers")
        if size is None:
            grid_n = np.maximum(8, np.round(fov_target[order] / grid_s)).astype(int)
    else:
        grid_s = np.clip(fov_target[order] / grid_n, *NATIVE_SPACING_RANGE)
    fov = np.empty(3)
    fov[order] = grid_n * grid_s

    kidney_centre = np.array([rng.uniform(-0.08, 0.08) * fov[0], rng.uniform(-0.08, 0.08) * fov[1],
                              min(depth, 0.62 * fov[2])])

    rotation = PROBE_TO_PATIENT
    if oblique:
        rotation = _rotation(rng.normal(size=3), np.deg2rad(rng.uniform(15, MAX_OBLIQUE_DEG))) @ rotation
    probe_to_ras = np.eye(4)
    probe_to_ras[:3, :3] = rotation
    probe_to_ras[:3, 3] = rng.uniform(-60, 60, size=3)

    n_ribs = int(rng.integers(0, 3))
    ribs = np.array([[rng.uniform(-0.35, 0.35) * fov[0], rng.uniform(0.5, 0.9) * wall_mm, rng.uniform(4, 7) * (0.7 if population == "child" else 1),
                      rng.uniform(0.05, 0.3)] for _ in range(n_ribs)]).reshape(-1, 4)

    bumps = np.concatenate([_unit(rng.normal(size=(6, 3))), rng.uniform(-0.08, 0.08, size=(6, 1))], axis=1)
    pyramids = _unit(rng.normal(size=(int(rng.integers(8, 13)), 3)) * [1.0, 0.4, 1.0] - [0, 0.3, 0])
    hydronephrosis = rng.uniform(0.45, 0.65) if rng.random() < pop["hydro"] else 0.0
    jitter = lambda value: value * rng.uniform(0.88, 1.12)  # noqa: E731
    echo = {name: jitter(value) for name, value in _ECHO.items()}
    echo.update(cortex=jitter(pop["cortex_echo"]), medulla=jitter(pop["medulla_echo"]), sinus=jitter(pop["sinus_echo"]))

    organ = "liver" if rng.random() < 0.5 else "spleen"
    organ_normal = _unit(np.array([rng.choice([-1.0, 1.0]), rng.uniform(-0.3, 0.3), -rng.uniform(0.2, 0.9)]))
    support = np.linalg.norm((kidney_axes.T @ organ_normal) * size_mm / 2)
    organ_offset = float(organ_normal @ kidney_centre + support + fat_mm + rng.uniform(1, 6))
    organ_waves = np.concatenate([rng.normal(size=(3, 3)) * 2 * np.pi / 90, rng.uniform(0, 2 * np.pi, size=(3, 1)),
                                  rng.uniform(1, 4, size=(3, 1))], axis=1)

    return Scene(population=population, grid_axes=order, grid_signs=signs, size_ijk=grid_n, spacing_ijk=grid_s,
                 fov_uvw=fov, probe_to_ras=probe_to_ras, apex_offset=apex_offset, half_angles=half_angles,
                 gain=uniform(pop["gain"]), noise=uniform(pop["noise"]), attenuation=uniform(pop["atten"]), ribs=ribs,
                 kidney_centre=kidney_centre, kidney_axes=kidney_axes, kidney_scale=kidney_scale, shape_index=shape_index,
                 bumps=bumps, cortex_mm=uniform(pop["cortex"]), sinus_size=uniform(pop["sinus_size"]), pyramids=pyramids,
                 hydronephrosis=hydronephrosis, echo=echo, fat_mm=fat_mm, wall_mm=wall_mm, subcutaneous_mm=subcutaneous_mm,
                 organ=organ, organ_normal=organ_normal, organ_offset=organ_offset, organ_waves=organ_waves, seed=int(seed))


def _kidney_radius(scene: Scene, shapes: dict, directions: np.ndarray) -> np.ndarray:
    """Normalised surface radius along unit directions (kidney frame), with the scene's random bumps."""
    radius_map = shapes["radius"][scene.shape_index]
    radius_map = np.concatenate([radius_map, radius_map[:, :1]], axis=1)  # phi wraps
    theta = np.arccos(np.clip(directions[..., 0], -1, 1))
    phi = np.mod(np.arctan2(directions[..., 2], directions[..., 1]), 2 * np.pi)
    rows = theta / np.pi * (radius_map.shape[0] - 1)
    cols = phi / (2 * np.pi) * (radius_map.shape[1] - 1)
    radius = ndimage.map_coordinates(radius_map, [rows.ravel(), cols.ravel()], order=1, mode="nearest")
    radius = radius.reshape(directions.shape[:-1])
    bump = np.exp(4.0 * (directions @ scene.bumps[:, :3].T - 1.0)) @ scene.bumps[:, 3]
    return radius * (1.0 + bump)


def _line_profile(distance_mm: np.ndarray, sigma_mm: float, blur_mm: float) -> np.ndarray:
    """A thin bright line of Gaussian profile, blurred by a Gaussian of blur_mm (same integral)."""
    width = np.hypot(sigma_mm, blur_mm)
    return (sigma_mm / width) * np.exp(-0.5 * (distance_mm / width) ** 2)


def render_scene(scene: Scene, points: np.ndarray, shapes: dict | None = None, blur_mm: float = 0.0):
    """Sample the scene at probe-frame points (..., 3) in mm.

    Returns (amplitude, label, in_sector): the mean echo amplitude before speckle (gain, depth
    attenuation and shadows included), the kidney label and the imaged sector. `blur_mm` widens
    the thin bright lines (fascia, capsule) keeping their integral, as a resampling filter of
    that sigma would: a coarse grid then sees them as a fine grid averaged down does.
    """
    shapes = shapes if shapes is not None else _shapes()
    echo = scene.echo
    u, v, w = points[..., 0], points[..., 1], points[..., 2]

    # kidney in its normalised frame; its fields are computed only near it (most points are far)
    q = ((points - scene.kidney_centre) @ scene.kidney_axes) / scene.kidney_scale
    r = np.linalg.norm(q, axis=-1)
    reach = (shapes["radius"][scene.shape_index].max() * (1 + np.abs(scene.bumps[:, 3]).sum())
             + (scene.fat_mm + 8.0) / scene.kidney_scale.min())  # beyond it: no kidney, fat or capsule line
    near = r < reach
    rho = np.full(r.shape, np.inf)
    depth_in = np.full(r.shape, -np.inf)  # mm below the capsule (negative outside)
    sinus_rho = np.full(r.shape, np.inf)
    in_pyramid_cone = np.zeros(r.shape, dtype=bool)
    q_near, r_near = q[near], r[near]
    directions = q_near / np.maximum(r_near, 1e-6)[:, None]
    radius = _kidney_radius(scene, shapes, directions)
    rho[near] = r_near / radius
    local_mm = radius * np.linalg.norm(directions * scene.kidney_scale, axis=-1)  # centre-to-surface distance
    depth_in[near] = (1.0 - rho[near]) * local_mm
    hilum = np.array([0.0, 0.22, 0.0])
    sinus_rho[near] = np.linalg.norm(q_near - hilum, axis=-1) / radius
    in_pyramid_cone[near] = (directions @ scene.pyramids.T).max(axis=-1) > np.cos(np.deg2rad(17))
    kidney = rho <= 1.0
    sinus = kidney & (sinus_rho < scene.sinus_size)
    cortex = kidney & (depth_in < scene.cortex_mm) & ~sinus
    pyramid = kidney & ~cortex & ~sinus & in_pyramid_cone

    # surroundings, deepest layer first
    amplitude = np.full(u.shape, echo["soft_tissue"], dtype=np.float32)
    organ_distance = points @ scene.organ_normal - scene.organ_offset
    organ_distance += np.sin(points @ scene.organ_waves[:, :3].T + scene.organ_waves[:, 3]) @ scene.organ_waves[:, 4]
    amplitude[organ_distance > 0] = echo[scene.organ]
    amplitude[(depth_in > -scene.fat_mm) & ~kidney] = echo["perirenal_fat"]
    amplitude[w < scene.wall_mm] = echo["muscle"] * (1 + 0.25 * np.sin(2 * np.pi * w[w < scene.wall_mm] / 2.5))
    amplitude[w < scene.subcutaneous_mm] = echo["subcutaneous_fat"]
    for boundary in (scene.subcutaneous_mm, scene.wall_mm):
        amplitude += echo["fascia"] * _line_profile(w - boundary, FASCIA_SIGMA_MM, blur_mm)

    amplitude[cortex] = echo["cortex"]
    amplitude[pyramid] = echo["medulla"]
    amplitude[sinus] = echo["sinus"]
    if scene.hydronephrosis:
        calyx = pyramid & (rho < 0.8)
        pelvis = kidney & (sinus_rho < scene.hydronephrosis) & (depth_in > 0.6 * scene.cortex_mm)
        amplitude[calyx | pelvis] = echo["fluid"]
    amplitude += echo["capsule"] * _line_profile(depth_in, CAPSULE_SIGMA_MM, blur_mm)

    # probe: fan, attenuation with range, ribs and their shadows
    along = w + scene.apex_offset
    lateral_angle = np.arctan2(u, along)
    in_sector = ((np.abs(lateral_angle) < scene.half_angles[0]) & (np.abs(np.arctan2(v, along)) < scene.half_angles[1])
                 & (w >= 0) & (w <= scene.fov_uvw[2]))
    range_mm = np.sqrt(u * u + v * v + along * along)
    amplitude *= np.exp(-scene.attenuation * (range_mm - scene.apex_offset)).astype(np.float32)
    plane_range = np.hypot(u, along)
    for u0, w0, rib_radius, transmission in scene.ribs:
        rib_range = np.hypot(u0, w0 + scene.apex_offset)
        half_width = np.arcsin(min(rib_radius / rib_range, 1.0))
        edge = np.clip((half_width - np.abs(lateral_angle - np.arctan2(u0, w0 + scene.apex_offset))) / (0.2 * half_width) + 0.5, 0, 1)
        behind = plane_range > rib_range
        amplitude *= np.where(behind, 1.0 - (1.0 - transmission) * edge, 1.0).astype(np.float32)
        amplitude[np.hypot(u - u0, w - w0) < rib_radius] = echo["rib"]
    amplitude *= scene.gain
    return amplitude.astype(np.float32), kidney & in_sector, in_sector


def _display(envelope: np.ndarray) -> np.ndarray:
    """Scanner-like compression of the envelope to [0, 255]."""
    return 255.0 * np.clip(envelope / DISPLAY_REFERENCE, 0, 1) ** DISPLAY_GAMMA


def _mean_display(amplitude: np.ndarray, noise: float) -> np.ndarray:
    """E[_display(|amplitude * z + noise * n|)] for unit-mean Rayleigh z, n (clipping neglected).

    The envelope is Rayleigh with E[envelope^2] = 4/pi (amplitude^2 + noise^2), so
    E[envelope^gamma] = E[envelope^2]^(gamma/2) Gamma(1 + gamma/2).
    """
    second_moment = 4.0 / np.pi * (amplitude.astype(np.float64) ** 2 + noise**2)
    mean = second_moment ** (DISPLAY_GAMMA / 2) * special.gamma(1 + DISPLAY_GAMMA / 2)
    return (255.0 * mean / DISPLAY_REFERENCE**DISPLAY_GAMMA).astype(np.float32)


def _complex_gaussian(rng: np.random.Generator, shape, sigma_vox=None):
    """Real and imaginary parts of a complex Gaussian field whose modulus is Rayleigh with mean 1,
    spatially correlated by a Gaussian point-spread function (sigma in voxels) when given."""
    parts = []
    for _ in range(2):
        part = rng.standard_normal(shape, dtype=np.float32)
        if sigma_vox is not None:
            part = ndimage.gaussian_filter(part, sigma_vox, truncate=3.0)
            part *= np.float32(1.0 / part.std())
        part *= np.float32(np.sqrt(2.0 / np.pi))
        parts.append(part)
    return parts


def speckle_envelope(rng: np.random.Generator, amplitude: np.ndarray, noise: float, sigma_vox) -> np.ndarray:
    """|amplitude * speckle + noise * electronic noise|, both complex Gaussian (RF-like) fields."""
    real, imaginary = _complex_gaussian(rng, amplitude.shape, sigma_vox)
    noise_real, noise_imaginary = _complex_gaussian(rng, amplitude.shape)
    noise = np.float32(noise)
    real = amplitude * real + noise * noise_real
    imaginary = amplitude * imaginary + noise * noise_imaginary
    return np.hypot(real, imaginary)


def _grid_points(ijk_to_probe: np.ndarray, shape_kji, k: int) -> np.ndarray:
    """Probe-frame points of one k-slab (shape_kji[1], shape_kji[2], 3)."""
    j, i = np.meshgrid(np.arange(shape_kji[1]), np.arange(shape_kji[2]), indexing="ij")
    ijk = np.stack([i, j, np.full_like(i, k)], axis=-1).astype(np.float64)
    return (ijk @ ijk_to_probe[:3, :3].T + ijk_to_probe[:3, 3]).astype(np.float32)


def generate_phantom(population: str, seed: int, spacing=None, size=None, oblique=False):
    """(volume, label): uint8 B-mode-like volume and uint8 0/1 kidney label on the native grid."""
    scene = draw_scene(population, seed, spacing, size, oblique)
    shapes = _shapes()
    ijk_to_probe = scene.ijk_to_probe()
    shape_kji = tuple(int(n) for n in scene.size_ijk[::-1])
    amplitude = np.empty(shape_kji, dtype=np.float32)
    label = np.empty(shape_kji, dtype=np.uint8)
    sector = np.empty(shape_kji, dtype=bool)
    for k in range(shape_kji[0]):
        amplitude[k], label[k], sector[k] = render_scene(scene, _grid_points(ijk_to_probe, shape_kji, k), shapes)

    rng = np.random.default_rng([scene.seed, POPULATIONS.index(population), 1])
    sigma_vox = [SPECKLE_SIGMA_MM[scene.grid_axes[axis]] / scene.spacing_ijk[axis] for axis in (2, 1, 0)]  # k, j, i
    envelope = speckle_envelope(rng, amplitude, scene.noise, sigma_vox)
    image = np.where(sector, np.rint(_display(envelope)), 0).astype(np.uint8)

    ijk_to_ras = scene.probe_to_ras @ ijk_to_probe
    return Volume(image, ijk_to_ras), Volume(label, ijk_to_ras.copy())


def cube_texture(rng: np.random.Generator, shape) -> np.ndarray:
    """Multiplicative speckle texture of the 4 mm cube: log-normal, mean 1, coefficient of variation
    CUBE_TEXTURE_CV, correlated like averaged native speckle. Log-normal rather than Gaussian because
    averaged speckle is skewed (measured skewness 0.65; a log-normal with CV 0.22 has 0.67): a
    symmetric texture has too many dark spots, which a network takes for kidney."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), CUBE_TEXTURE_SIGMA_VOX)
    log_sigma = np.sqrt(np.log1p(CUBE_TEXTURE_CV**2))
    return np.exp(log_sigma * field / field.std() - 0.5 * log_sigma**2)


def cube_ijk_to_probe(scene: Scene) -> np.ndarray:
    """4x4 from the canonical cube's (i, j, k) to probe mm, as `preprocessing.preprocess` builds the cube.

    Canonical i, j, k run towards right, anterior, superior: the probe's v, w, u axes (the oblique
    rotation stays below 45 degrees, so the nearest axes never change).
    """
    matrix = np.eye(4)
    canonical = PROBE_TO_PATIENT.T  # columns: probe axis of RAS axis r
    matrix[:3, :3] = canonical * preprocessing.CUBE_SPACING
    centre = np.array([0.0, 0.0, scene.fov_uvw[2] / 2.0])
    matrix[:3, 3] = centre - matrix[:3, :3] @ np.full(3, (preprocessing.CUBE_SIZE - 1) / 2.0)
    return matrix


def generate_training_pair(population: str, seed: int):
    """(cube float32 [80,80,80], label uint8 [80,80,80]) in the network's canonical 4 mm frame.

    The same scene as `generate_phantom(population, seed)`, rendered straight on the cube, with the
    speckle's statistics after 4 mm averaging; ~1 s instead of ~5 s to generate then preprocess.
    """
    scene = draw_scene(population, seed)
    shapes = _shapes()
    n = preprocessing.CUBE_SIZE
    to_probe = cube_ijk_to_probe(scene)
    points = np.stack([_grid_points(to_probe, (n, n, n), k) for k in range(n)])
    amplitude, label, sector = render_scene(scene, points, shapes, blur_mm=CUBE_LINE_BLUR_MM)
    amplitude = ndimage.gaussian_filter(amplitude, CUBE_PARTIAL_VOLUME_SIGMA)

    rng = np.random.default_rng([scene.seed, POPULATIONS.index(population), 2])
    intensity = np.minimum(_mean_display(amplitude, scene.noise) * cube_texture(rng, amplitude.shape), 255.0)
    # the sector's edges get the same partial-volume blur as the anatomy (native: anti-aliasing)
    intensity = (intensity * ndimage.gaussian_filter(sector.astype(np.float32), CUBE_PARTIAL_VOLUME_SIGMA)).astype(np.float32)

    # the native grid's field of view inside the cube, as preprocess sees it
    ijk = np.argwhere(np.ones((n, n, n), dtype=bool))[:, ::-1].astype(np.float64)
    native = np.linalg.solve(scene.ijk_to_probe(), np.c_[ijk @ to_probe[:3, :3].T + to_probe[:3, 3], np.ones(len(ijk))].T)[:3].T
    in_fov = np.all((native >= -0.5) & (native <= scene.size_ijk - 0.5), axis=1).reshape(n, n, n)
    cube = preprocessing.normalise_intensity(np.where(in_fov, intensity, 0.0).astype(np.float32), in_fov)
    return cube, (label & in_fov).astype(np.uint8)
