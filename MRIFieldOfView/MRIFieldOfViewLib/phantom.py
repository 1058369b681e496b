"""Whole-body MRI phantom with per-slice truth (DESIGN.md §5; our stand-in for §2.6.1's data set).

A subject is a set of smooth anatomical profiles along the body axis z (mm above the soles):
legs (two limbs: fat, muscle, femur or tibia + fibula with marrow), pelvis (buttocks, femoral
heads, acetabula, iliac wings, sacrum, bladder, rectum, bowel), abdomen (abdominal wall, visceral
fat, liver, spleen, kidneys, stomach, pancreas, bowel with gas, aorta, vertebra, psoas, lower ribs,
lung bases), chest (lungs with vessels, heart, mediastinum, ribs, sternum, scapulae, breasts,
shoulders), neck and head (face, sinuses, orbits, cerebellum, skull with diploe, CSF, grey and
white matter, ventricles). Arms lie along the body in some subjects. Vertebrae alternate with
discs every ~30 mm. Each axial slice is painted as a tissue label map on a millimetre grid, then
turned into an image: per-protocol tissue intensities (T1, T2, PD, randomly jittered), smooth
texture, a 3D bias field, Rician noise, and occasional straps (a bright band over the anterior
body, signal drop under it, §2.6.4). Slices are 1-8 mm thick (thick slices average two
sub-slices), the in-plane field of view and matrix vary, volumes end with empty slices above the
head when they reach it, and the geometry is any orientation (LPS- or RAS-stored, flipped slice
order, oblique). Dedicated spine volumes are small-field axial stacks centred on the spine.

Truth: one region name per k-slice; None for empty slices above the head. Landmarks (for a
1750 mm subject, scaled by height): legs < 830 mm < pelvis < 1020 < abdomen < 1270 < chest
< 1480 < head (the neck counts as head) < 1750 = vertex.

Only numpy and scipy are used: training generates phantoms in memory without SimpleITK.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .regions import ORDERED_REGIONS, SPINE

PROTOCOLS = ("T1", "T2", "PD")
REFERENCE_HEIGHT = 1750.0
# Region boundaries along z for the reference height: legs, pelvis, abdomen, chest, head.
BOUNDARIES = np.array([0.0, 830.0, 1020.0, 1270.0, 1480.0, 1750.0])

# Tissue labels and their mean intensity per protocol (T1, T2, PD), in [0, 1].
TISSUES = {
    "air": (0.0, 0.0, 0.0),
    "fat": (0.92, 0.72, 0.85),
    "muscle": (0.33, 0.2, 0.5),
    "cortex": (0.03, 0.03, 0.06),
    "yellow_marrow": (0.88, 0.68, 0.8),
    "red_marrow": (0.5, 0.38, 0.6),
    "disc": (0.3, 0.62, 0.6),
    "fluid": (0.1, 0.95, 0.7),
    "vessel": (0.12, 0.08, 0.25),
    "blood": (0.25, 0.35, 0.5),
    "liver": (0.5, 0.22, 0.58),
    "spleen": (0.38, 0.45, 0.64),
    "kidney": (0.38, 0.55, 0.66),
    "organ": (0.45, 0.35, 0.6),
    "bowel": (0.4, 0.5, 0.6),
    "lung": (0.03, 0.04, 0.06),
    "grey_matter": (0.42, 0.55, 0.76),
    "white_matter": (0.62, 0.38, 0.66),
    "cord": (0.45, 0.4, 0.62),
    "gland": (0.4, 0.42, 0.6),
}
TISSUE_NAMES = tuple(TISSUES)
T = {name: index for index, name in enumerate(TISSUE_NAMES)}


@dataclass
class Subject:
    """Random anatomy of one person (all lengths in mm)."""
    height: float
    width: float          # lateral scale
    depth: float          # antero-posterior scale
    fat: float            # subcutaneous fat thickness
    arms: bool
    breasts: float        # 0 = none
    bladder: float        # fullness scale
    jitter: np.ndarray    # landmark offsets (mm, reference scale) for the 4 inner boundaries
    blobs: np.ndarray     # bowel loops / gas: rows (x, y, z, radius, tissue)
    lung_vessels: np.ndarray  # rows (x, y, z, radius)
    vertebra_phase: float
    rib_phase: float
    folds: np.ndarray     # cortical folding: rows (wave vector x, y, z in rad/mm, phase)

    def folding(self, x: np.ndarray, y: np.ndarray, z: float) -> np.ndarray:
        """A smooth random field of unit variance that shapes gyri and sulci."""
        waves = self.folds
        field = np.zeros(x.shape)
        for kx, ky, kz, phase in waves:
            field += np.sin(kx * x + ky * y + kz * z + phase)
        return field * np.sqrt(2.0 / len(waves))

    def boundaries(self) -> np.ndarray:
        """Region boundaries along z for this subject (legs start, ..., vertex)."""
        edges = BOUNDARIES.copy()
        edges[1:5] += self.jitter
        return edges * self.height / REFERENCE_HEIGHT


def random_subject(rng: np.random.Generator) -> Subject:
    height = rng.uniform(1550, 1950)
    blobs = []
    for _ in range(rng.integers(25, 45)):  # bowel loops in the lower abdomen and upper pelvis
        z = rng.uniform(930, 1180)
        kind = rng.choice([T["bowel"], T["fluid"], T["air"], T["bowel"]])
        blobs.append((rng.uniform(-110, 110), rng.uniform(-80, 10), z, rng.uniform(8, 22), kind))
    vessels = np.column_stack([rng.uniform(-110, 110, 120), rng.uniform(-70, 60, 120),
                               rng.uniform(1270, 1470, 120), rng.uniform(1.5, 4, 120)])
    return Subject(
        height=height, width=rng.uniform(0.85, 1.2), depth=rng.uniform(0.85, 1.25),
        fat=rng.uniform(4, 30), arms=bool(rng.random() < 0.6),
        breasts=float(rng.uniform(0.6, 1.3)) if rng.random() < 0.4 else 0.0,
        bladder=rng.uniform(0.4, 1.4), jitter=rng.uniform(-25, 25, 4), blobs=np.array(blobs),
        lung_vessels=vessels, vertebra_phase=rng.uniform(0, 30), rib_phase=rng.uniform(0, 25),
        folds=_random_waves(rng, 24, wavelength=(6.0, 16.0)),
    )


def _random_waves(rng: np.random.Generator, count: int, wavelength: tuple[float, float]) -> np.ndarray:
    directions = rng.normal(size=(count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    k = 2 * np.pi / rng.uniform(*wavelength, count)
    return np.column_stack([directions * k[:, None], rng.uniform(0, 2 * np.pi, count)])


class _Canvas:
    """A tissue label map on a millimetre grid; shapes are painted in order (later wins)."""

    def __init__(self, xs: np.ndarray, ys: np.ndarray):
        self.xs, self.ys = xs, ys  # ascending; x: towards the patient's left, y: towards posterior
        self.x, self.y = np.meshgrid(xs, ys)
        self.labels = np.zeros(self.x.shape, dtype=np.uint8)

    def ellipse(self, cx, cy, a, b, tissue, angle=0.0, where=None):
        """Paint an ellipse (semi-axes a, b, rotated by angle) and return its full-size mask."""
        full = np.zeros(self.x.shape, dtype=bool)
        if a <= 0 or b <= 0:
            return full
        r = max(a, b)
        c0, c1 = np.searchsorted(self.xs, [cx - r, cx + r])
        r0, r1 = np.searchsorted(self.ys, [cy - r, cy + r])
        if c0 >= c1 or r0 >= r1:
            return full
        window = (slice(r0, r1), slice(c0, c1))
        dx, dy = self.x[window] - cx, self.y[window] - cy
        if angle:
            c, s = np.cos(angle), np.sin(angle)
            dx, dy = c * dx + s * dy, -s * dx + c * dy
        mask = (dx / a) ** 2 + (dy / b) ** 2 <= 1.0
        if where is not None:
            mask &= where[window]
        if tissue is not None:
            self.labels[window][mask] = T[tissue] if isinstance(tissue, str) else tissue
        full[window] = mask
        return full

    def bone(self, cx, cy, a, b, marrow="yellow_marrow", angle=0.0, cortex=3.0, where=None):
        self.ellipse(cx, cy, a, b, "cortex", angle, where)
        self.ellipse(cx, cy, a - cortex, b - cortex, marrow, angle, where)

    def inside(self, tissue: str) -> np.ndarray:
        return self.labels == T[tissue]


def _hump(z, start, end):
    """0 outside [start, end], rising to 1 in the middle (sine profile)."""
    if z <= start or z >= end:
        return 0.0
    return float(np.sin(np.pi * (z - start) / (end - start)))


def _vertebra(c: _Canvas, subject: Subject, z: float, cy: float, size: float, marrow="red_marrow"):
    in_disc = (z + subject.vertebra_phase) % 30.0 < 7.0
    c.ellipse(0, cy + 2.2 * size, 1.9 * size, 1.3 * size, "muscle")  # paraspinal muscles
    if in_disc:
        c.ellipse(0, cy, size, 0.85 * size, "disc")
    else:
        c.bone(0, cy, size, 0.85 * size, marrow)
        c.bone(0, cy + 1.7 * size, 0.25 * size, 0.9 * size, marrow, cortex=2)  # spinous process
        c.bone(-0.8 * size, cy + 1.0 * size, 0.25 * size, 0.5 * size, marrow, cortex=2)  # laminae
        c.bone(0.8 * size, cy + 1.0 * size, 0.25 * size, 0.5 * size, marrow, cortex=2)
    c.ellipse(0, cy + 1.15 * size, 0.45 * size, 0.4 * size, "fluid")  # canal
    c.ellipse(0, cy + 1.15 * size, 0.25 * size, 0.22 * size, "cord")


def _arms(c: _Canvas, subject: Subject, z: float, half_width: float):
    if not subject.arms or not 880 < z < 1460:
        return
    upper = z > 1150  # humerus above the elbow, radius + ulna below
    r = (42 if upper else 34) * subject.width
    for side in (-1, 1):
        cx = side * (half_width + r + 8)
        c.ellipse(cx, 5, r, r * 0.95, "fat")
        c.ellipse(cx, 5, r - 0.4 * subject.fat, r * 0.95 - 0.4 * subject.fat, "muscle")
        if upper:
            c.bone(cx, 5, 11, 11)
        else:
            c.bone(cx - 8, 0, 7, 7)
            c.bone(cx + 8, 8, 7, 7)


def _legs(c: _Canvas, s: Subject, z: float):
    for side in (-1, 1):
        cx = side * np.interp(z, [0, 480, 830], [85, 62, 92]) * s.width
        r = np.interp(z, [0, 80, 330, 470, 520, 700, 830], [32, 38, 58, 48, 50, 78, 92]) * s.width
        fat = s.fat * np.interp(z, [0, 400, 830], [0.3, 0.6, 1.0])
        c.ellipse(cx, 0, r, 0.92 * r, "fat")
        c.ellipse(cx, 0, r - fat, 0.92 * r - fat, "muscle")
        if 440 < z < 540:  # knee: condyles and patella
            c.bone(cx, 5, 36 * s.width, 26 * s.width)
            c.bone(cx, -33 * s.width, 16, 8)
        elif z >= 540:
            c.bone(cx - side * 5, -4, 14, 14, cortex=5)
        else:
            c.bone(cx - side * 8, -14, 13, 12, cortex=4)
            c.bone(cx + side * 22 * s.width, 10, 6, 6, cortex=2)
        # intermuscular fascia
        c.ellipse(cx + side * 10, 12, 0.45 * r, 2.0, "fat", angle=0.6 * side)


def _pelvis(c: _Canvas, s: Subject, z: float, t: float):
    a, b = np.interp(t, [0, 0.5, 1], [180, 190, 168]) * s.width, 112 * s.depth
    c.ellipse(0, 0, a, b, "fat")
    for side in (-1, 1):  # buttocks
        c.ellipse(side * 0.35 * a, 0.35 * b, 0.6 * a, 0.75 * b, "fat")
    c.ellipse(0, 0, a - s.fat, b - s.fat, "muscle")
    for side in (-1, 1):
        c.ellipse(side * 0.35 * a, 0.35 * b, 0.6 * a - s.fat, 0.75 * b - s.fat, "muscle")
    _arms(c, s, z, a)
    if t < 0.45:
        for side in (-1, 1):
            c.bone(side * 82 * s.width, 0, 24, 24)  # femoral heads
            if t > 0.12:
                c.ellipse(side * 82 * s.width, 0, 33, 33, "cortex")  # acetabulum
                c.bone(side * 82 * s.width, 0, 24, 24)
            if t < 0.3:
                c.bone(side * 125 * s.width, 5, 20, 16)  # greater trochanter
                c.bone(side * 52 * s.width, 45, 15, 20)  # ischial tuberosity
                c.bone(side * 16, -0.7 * b, 14, 9)  # pubis
    else:
        for side in (-1, 1):
            spread = (t - 0.45) * 110
            c.ellipse(side * (60 + spread) * s.width, 5, 30, 45, "muscle", angle=side * 0.5)  # iliacus
            c.bone(side * (75 + spread) * s.width, 25, 62, 8, angle=side * 0.75, cortex=2.5)  # iliac wing
        c.bone(0, 0.62 * b, 48, 17)  # sacrum
        c.ellipse(-20, 0.62 * b, 4, 4, "fluid")
        c.ellipse(20, 0.62 * b, 4, 4, "fluid")
    bladder = _hump(t, 0.05, 0.6) * s.bladder
    c.ellipse(0, -0.35 * b, 48 * bladder, 38 * bladder, "fluid")
    if t < 0.65:
        c.ellipse(0, 0.45 * b, 16, 14, "bowel")
        c.ellipse(0, 0.45 * b, 7, 6, "air")
    for side in (-1, 1):
        c.ellipse(side * 55, -0.1 * b, 6, 6, "vessel")


def _blobs(c: _Canvas, s: Subject, z: float, where: np.ndarray):
    for x, y, zc, r, tissue in s.blobs:
        dz = z - zc
        if abs(dz) < r:
            rr = np.sqrt(r * r - dz * dz)
            c.ellipse(x * s.width, y * s.depth, rr, rr * 0.8, int(tissue), where=where)


def _abdomen(c: _Canvas, s: Subject, z: float, t: float):
    a, b = 160 * s.width + 0.6 * s.fat, 112 * s.depth + 0.4 * s.fat
    c.ellipse(0, 0, a, b, "fat")
    c.ellipse(0, 0, a - s.fat, b - s.fat, "muscle")
    cavity = c.ellipse(0, -5, a - s.fat - 12, b - s.fat - 14, "fat")  # visceral fat
    _arms(c, s, z, a)
    spine_y = 0.5 * b
    if t > 0.88:  # lung bases in the posterior recesses
        for side in (-1, 1):
            c.ellipse(side * 70 * s.width, 0.35 * b, 45 * (t - 0.8) * 5, 30, "lung", where=cavity)
    liver = np.interp(t, [0.3, 0.6, 1.0], [0.0, 0.75, 1.0])
    if liver > 0:
        c.ellipse(-60 * s.width + 40 * (liver - 0.5), -5, 95 * liver * s.width, 80 * liver * s.depth, "liver", where=cavity)
    spleen = _hump(t, 0.5, 0.98)
    c.ellipse(88 * s.width, 0.35 * b, 30 * spleen, 50 * spleen, "spleen", angle=-0.5, where=cavity)
    stomach = _hump(t, 0.55, 1.1)
    c.ellipse(45 * s.width, -40, 42 * stomach, 35 * stomach, "organ", where=cavity)
    c.ellipse(45 * s.width, -40, 32 * stomach, 25 * stomach, "fluid" if s.bladder > 0.9 else "air", where=cavity)
    if 0.45 < t < 0.7:
        c.ellipse(15, 0.05 * b, 55, 12, "organ", angle=-0.2, where=cavity)  # pancreas
    gallbladder = _hump(t, 0.35, 0.55)
    c.ellipse(-38, -45, 16 * gallbladder, 14 * gallbladder, "fluid", where=cavity)
    for side, low in ((-1, 0.15), (1, 0.22)):
        k = _hump(t, low, low + 0.55)
        kx, ky = side * 68 * s.width, 0.32 * b
        c.ellipse(kx, ky, 28 * k, 38 * k, "kidney", angle=side * 0.5)
        c.ellipse(kx - side * 8, ky, 10 * k, 15 * k, "fluid", angle=side * 0.5)
    if t < 0.6:
        _blobs(c, s, z, cavity & (c.y < 0.25 * b))
    if t < 0.65:
        psoas = 12 + 18 * (0.65 - t)
        for side in (-1, 1):
            c.ellipse(side * 40, spine_y - 18, psoas, psoas * 0.9, "muscle")
    c.ellipse(15, spine_y - 35, 11, 11, "vessel")
    c.ellipse(-22, spine_y - 35, 12, 10, "vessel")
    _vertebra(c, s, z, spine_y, 21)
    if t > 0.7:  # lower ribs along the cavity wall
        for angle in np.linspace(-2.4, 2.4, 8) + 0.1 * np.sin(z / 20 + s.rib_phase):
            c.bone(np.sin(angle) * (a - s.fat - 10), -np.cos(angle) * (b - s.fat - 10), 8, 5, "red_marrow", cortex=2)


def _chest(c: _Canvas, s: Subject, z: float, t: float):
    shoulders = np.interp(t, [0.7, 1.0], [0.0, 1.0])
    a, b = (160 + 40 * shoulders) * s.width + 0.4 * s.fat, 108 * s.depth + 0.3 * s.fat
    c.ellipse(0, 0, a, b, "fat")
    c.ellipse(0, 0, a - s.fat, b - s.fat, "muscle")
    if s.breasts and 0.15 < t < 0.65:
        size = 55 * s.breasts * _hump(t, 0.15, 0.65)
        for side in (-1, 1):
            c.ellipse(side * 62, -b + 5, size, 0.8 * size, "fat")
            c.ellipse(side * 62, -b, 0.5 * size, 0.4 * size, "gland")
    cavity = c.ellipse(0, 0, 130 * s.width * (1 - 0.35 * shoulders), b - s.fat - 16, "muscle")
    _arms(c, s, z, a)
    if shoulders > 0:
        for side in (-1, 1):
            c.ellipse(side * (a - 10), 10, 45 * shoulders, 50, "muscle")
            c.bone(side * (a - 15), 10, 24 * shoulders, 24 * shoulders, "yellow_marrow")
            c.bone(side * 85 * s.width, 0.6 * b, 55, 6, angle=side * 0.35, cortex=2)  # scapula
    lung = _hump(t, -0.15, 1.08)
    for side in (-1, 1):
        c.ellipse(side * 65 * s.width, 8, 58 * lung * s.width, 80 * lung * s.depth, "lung", where=cavity)
    for x, y, zc, r in s.lung_vessels:
        if abs(z - zc) < r:
            c.ellipse(x * s.width, y * s.depth, r, r, "vessel", where=c.inside("lung"))
    heart = _hump(t, -0.1, 0.6)
    c.ellipse(20, -25, 62 * heart, 50 * heart, "muscle", angle=0.5, where=cavity)
    c.ellipse(22, -25, 45 * heart, 35 * heart, "blood", angle=0.5, where=cavity)
    if 0.5 < t < 0.95:
        c.ellipse(0, -15, 35, 30, "fat", where=cavity)  # mediastinal fat
        c.ellipse(10, -25, 13, 13, "vessel")
        c.ellipse(-15, -20, 10, 10, "vessel")
    c.ellipse(0, 5, 9, 9, "air")  # trachea / main bronchi region
    c.ellipse(18, 0.45 * b, 11, 11, "vessel")  # descending aorta
    _vertebra(c, s, z, 0.6 * b, 17)
    if 0.1 < t < 0.85:
        c.bone(0, -b + s.fat + 10, 15, 7, "red_marrow", cortex=2)  # sternum
    for angle in np.linspace(-2.6, 2.6, 12) + 0.15 * np.sin(z / 12 + s.rib_phase):
        if abs(angle) > 0.25:
            c.bone(np.sin(angle) * (128 * s.width * (1 - 0.35 * shoulders) + 4), -np.cos(angle) * (b - s.fat - 14),
                   9, 5, "red_marrow", angle=angle, cortex=2)


def _neck(c: _Canvas, s: Subject, z: float, t: float):
    shoulders = np.interp(t, [0.0, 0.35], [1.0, 0.0])
    c.ellipse(0, 10, (62 + 110 * shoulders) * s.width, 58 + 30 * shoulders, "fat")
    c.ellipse(0, 10, (58 + 105 * shoulders) * s.width, 54 + 28 * shoulders, "muscle")
    _vertebra(c, s, z, 18, 13)
    c.ellipse(0, -28, 9, 8, "air")  # trachea
    c.ellipse(-16, -28, 8, 6, "gland")  # thyroid
    c.ellipse(16, -28, 8, 6, "gland")
    for side in (-1, 1):
        c.ellipse(side * 32, -12, 6, 6, "vessel")
        c.ellipse(side * 40, -5, 7, 5, "vessel")


def _head(c: _Canvas, s: Subject, z: float, u: float):
    scale = 0.9 + 0.1 * s.width
    profile = np.sqrt(max(0.0, 1 - ((u - 0.5) / 0.52) ** 2)) if u > 0.5 else 1.0
    a, b = 74 * scale * profile, 94 * scale * profile
    if u < 0.3:  # face: jaw, tongue, sinuses, cerebellum
        a, b = a * (0.8 + 0.6 * u), b * (0.85 + 0.45 * u)
        c.ellipse(0, 5, a, b, "fat")
        c.ellipse(0, 5, a - 4, b - 4, "muscle")
        c.bone(0, -0.35 * b, 0.8 * a, 0.55 * b, "red_marrow", cortex=4)  # mandible
        c.ellipse(0, -0.35 * b, 0.8 * a - 8, 0.55 * b - 8, "muscle")  # tongue
        if u > 0.15:
            for side in (-1, 1):
                c.ellipse(side * 28, -0.45 * b, 14, 16, "air")  # maxillary sinuses
            c.ellipse(0, -0.55 * b, 8, 18, "air")  # nasal cavity
        c.ellipse(0, 0.45 * b, 45 * u / 0.3, 30 * u / 0.3, "grey_matter")  # cerebellum
        c.ellipse(0, 0.1 * b, 12, 11, "white_matter")  # brainstem
        return
    c.ellipse(0, 5, a, b, "fat")  # scalp
    c.bone(0, 5, a - 4, b - 4, "red_marrow", cortex=2.5)  # skull with diploe
    c.ellipse(0, 5, a - 11, b - 11, "fluid")  # CSF
    brain = c.ellipse(0, 5, a - 13, b - 13, "grey_matter")
    # Gyri: white matter fills the brain up to a folded boundary; sulci cut the cortex.
    rho = np.sqrt((c.x / max(a - 13, 1.0)) ** 2 + ((c.y - 5) / max(b - 13, 1.0)) ** 2)
    folds = s.folding(c.x, c.y, z)
    c.labels[brain & (rho < 0.78 + 0.12 * folds)] = T["white_matter"]
    c.labels[brain & (rho > 0.6) & (folds > 0.9)] = T["fluid"]
    if u < 0.45:  # orbits and eyes, temporal lobes, cerebellum below the tentorium
        for side in (-1, 1):
            c.ellipse(side * 30, -b + 22, 16, 14, "fat")
            c.ellipse(side * 30, -b + 22, 11, 11, "fluid")
        c.ellipse(0, 0.5 * b, 0.55 * a, 0.3 * b, "grey_matter", where=brain)
        c.ellipse(0, 0.15 * b, 12, 11, "white_matter")
    if 0.5 < u < 0.78:  # lateral ventricles
        for side in (-1, 1):
            c.ellipse(side * 9, 0, 5, 0.35 * b, "fluid", angle=side * 0.15)


def paint_slice(subject: Subject, z: float, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Tissue labels of the axial slice at height z (mm above the soles) on the grid xs (columns,
    towards the patient's left) x ys (rows, towards posterior), and the slice's region name."""
    edges = subject.boundaries()
    c = _Canvas(xs * REFERENCE_HEIGHT / subject.height, ys * REFERENCE_HEIGHT / subject.height)
    zr = z * REFERENCE_HEIGHT / subject.height  # the painters work at the reference height
    ref = BOUNDARIES.copy()
    ref[1:5] += subject.jitter
    region_index = int(np.searchsorted(edges, z, side="right")) - 1
    if region_index >= 5 or z < 0:
        return c.labels, None
    lo, hi = ref[region_index], ref[region_index + 1]
    t = (zr - lo) / (hi - lo)
    zz = BOUNDARIES[region_index] + t * (BOUNDARIES[region_index + 1] - BOUNDARIES[region_index])
    if region_index == 0:
        _legs(c, subject, zz)
    elif region_index == 1:
        _pelvis(c, subject, zz, t)
    elif region_index == 2:
        _abdomen(c, subject, zz, t)
    elif region_index == 3:
        _chest(c, subject, zz, t)
    else:
        neck = 80.0 / 270.0
        if t < neck:
            _neck(c, subject, zz, t / neck)
        else:
            _head(c, subject, zz, (t - neck) / (1 - neck))
    return c.labels, ORDERED_REGIONS[region_index]


@dataclass
class Acquisition:
    protocol: str
    slice_thickness: float
    pixel: float
    matrix: tuple[int, int]       # (rows = A-P, columns = R-L)
    centre: tuple[float, float]   # field of view centre (x, y) in body mm
    z_start: float
    slices: int
    noise: float
    straps: list = field(default_factory=list)  # (z_centre, half_width)


def _tissue_table(protocol: str, rng: np.random.Generator) -> np.ndarray:
    column = PROTOCOLS.index(protocol)
    values = np.array([TISSUES[name][column] for name in TISSUE_NAMES])
    values = values * rng.uniform(0.85, 1.15, len(values))
    values[T["air"]] = 0.0
    return np.clip(values, 0.0, 1.2) ** rng.uniform(0.8, 1.25)


PAINT_MATRIX = 160  # anatomy is painted at most this fine, then interpolated to the matrix


def render(subject: Subject, acq: Acquisition, rng: np.random.Generator,
           slice_indices: np.ndarray | None = None) -> tuple[np.ndarray, list[str | None]]:
    """Image [slices, rows, columns] (float32) in canonical order: k up, rows posterior, columns left.

    slice_indices: render only these slices of the acquisition (in this order)."""
    indices = np.arange(acq.slices) if slice_indices is None else np.asarray(slice_indices)
    rows, columns = acq.matrix
    factor = min(1.0, PAINT_MATRIX / max(rows, columns))
    paint_rows, paint_columns = max(8, int(round(rows * factor))), max(8, int(round(columns * factor)))
    paint_pixel = (acq.pixel * columns / paint_columns, acq.pixel * rows / paint_rows)
    xs = acq.centre[0] + (np.arange(paint_columns) - (paint_columns - 1) / 2) * paint_pixel[0]
    ys = acq.centre[1] + (np.arange(paint_rows) - (paint_rows - 1) / 2) * paint_pixel[1]
    x, y = np.meshgrid(acq.centre[0] + (np.arange(columns) - (columns - 1) / 2) * acq.pixel,
                       acq.centre[1] + (np.arange(rows) - (rows - 1) / 2) * acq.pixel)
    table = _tissue_table(acq.protocol, rng).astype(np.float32)
    offsets = [0.0] if acq.slice_thickness < 5 else [-0.25 * acq.slice_thickness, 0.25 * acq.slice_thickness]
    image = np.zeros((len(indices), rows, columns), dtype=np.float32)
    labels: list[str | None] = []
    bias = rng.normal(0, 0.18, 6)
    texture_scale = rng.uniform(0.04, 0.1)
    z_mid = acq.z_start + 0.5 * acq.slices * acq.slice_thickness
    strap_band = np.abs(y + np.sqrt(np.maximum(0, 1 - (x / 260) ** 2)) * 140) < 6
    in_plane_field = np.exp(bias[0] * x / 250 + bias[1] * y / 250 + bias[3] * (x / 250) ** 2
                            + bias[4] * (y / 250) ** 2 + bias[5] * x * y / 250 ** 2).astype(np.float32)
    for n, index in enumerate(indices):
        z = acq.z_start + (index + 0.5) * acq.slice_thickness
        plane = np.zeros((paint_rows, paint_columns), dtype=np.float32)
        for dz in offsets:
            tissue, label = paint_slice(subject, z + dz, xs, ys)
            plane += table[tissue]
        plane /= len(offsets)
        labels.append(paint_slice(subject, z, xs[:1], ys[:1])[1])
        coarse = rng.normal(0, 1, (max(2, paint_rows // 10), max(2, paint_columns // 10)))
        texture = ndimage.zoom(ndimage.gaussian_filter(coarse, 1.0), (paint_rows / coarse.shape[0], paint_columns / coarse.shape[1]), order=1)
        plane *= 1 + texture_scale * texture[:paint_rows, :paint_columns] / max(1e-6, texture.std())
        if factor < 1.0:
            plane = ndimage.zoom(plane, (rows / paint_rows, columns / paint_columns), order=1)[:rows, :columns]
        for z_strap, half in acq.straps:
            if abs(z - z_strap) < half:
                body = plane > 0.05
                plane = plane * 0.35
                plane[strap_band & ~body] = 1.0
        image[n] = plane * in_plane_field * np.float32(np.exp(bias[2] * (z - z_mid) / 600))
    # Rician noise: the magnitude of a complex signal with Gaussian noise on both channels.
    real = rng.standard_normal(image.shape, dtype=np.float32)
    real *= acq.noise
    real += image
    imag = rng.standard_normal(image.shape, dtype=np.float32)
    imag *= acq.noise
    np.hypot(real, imag, out=real)
    return real, labels


def random_acquisition(subject: Subject, rng: np.random.Generator, regions: list[str] | None = None,
                       protocol: str | None = None, spine: bool = False,
                       max_matrix: int = 384) -> Acquisition:
    """A field of view along z covering `regions` (a contiguous run) or a spine study."""
    protocol = protocol or str(rng.choice(PROTOCOLS))
    edges = subject.boundaries()
    if spine:
        level = rng.choice(["lumbar", "thoracic", "cervical"], p=[0.45, 0.35, 0.2])
        z_lo, z_hi, spine_y = {"lumbar": (edges[2] + 10, edges[3] - 20, 56),
                               "thoracic": (edges[3] + 20, edges[4] - 20, 65),
                               "cervical": (edges[4] + 5, edges[4] + 75, 18)}[level]
        thickness = rng.uniform(2.5, 5)
        slices = int(rng.integers(12, 40))
        z_start = rng.uniform(z_lo, max(z_lo, z_hi - slices * thickness))
        slices = max(8, min(slices, int((z_hi - z_start) / thickness) + 8))
        fov = rng.uniform(120, 200)
        matrix = int(rng.integers(160, max_matrix + 1)) if max_matrix >= 160 else max_matrix
        return Acquisition(protocol, thickness, fov / matrix, (matrix, matrix),
                           (rng.uniform(-10, 10), spine_y * subject.depth + rng.uniform(-25, 10)),
                           z_start, slices, rng.uniform(0.01, 0.05))
    regions = list(regions or ORDERED_REGIONS)
    first, last = ORDERED_REGIONS.index(regions[0]), ORDERED_REGIONS.index(regions[-1])
    if regions != list(ORDERED_REGIONS[first:last + 1]):
        raise ValueError(f"regions must be a contiguous run of {', '.join(ORDERED_REGIONS)}; got {', '.join(regions)}")
    # Start in the lower part of the first region, end in the upper part of the last one (the
    # whole first/last region sometimes); reaching the vertex adds empty slices above the head.
    low_span = edges[first + 1] - edges[first]
    high_span = edges[last + 1] - edges[last]
    # Head studies start between the upper neck and the skull base, not at the shoulders.
    start_range = (0.2, 0.45) if first == 4 else (0.0, 0.45)
    z_start = edges[first] + (0.0 if first == 0 and rng.random() < 0.3 else rng.uniform(*start_range) * low_span)
    if last == 4 and rng.random() < 0.7:
        z_end = edges[5] + rng.uniform(5, 60)
    else:
        z_end = edges[last + 1] - rng.uniform(0.0, 0.45) * high_span
    thickness = float(rng.choice([rng.uniform(1, 3), rng.uniform(3, 6), rng.uniform(5, 8)]))
    slices = max(4, int(round((z_end - z_start) / thickness)))
    head_only = first == last == 4
    fov = rng.uniform(180, 260) if head_only else rng.uniform(380, 520 if subject.arms else 460)
    columns = int(rng.integers(min(128, max_matrix), max_matrix + 1))
    rows = columns if rng.random() < 0.6 else max(64, int(columns * rng.uniform(0.65, 1.0)))
    straps = []
    if rng.random() < 0.15:
        for _ in range(rng.integers(1, 3)):
            straps.append((rng.uniform(z_start, z_start + slices * thickness), rng.uniform(12, 25)))
    return Acquisition(protocol, thickness, fov / columns, (rows, columns),
                       (rng.uniform(-15, 15), rng.uniform(-10, 25)), z_start, slices,
                       rng.uniform(0.008, 0.04), straps)


def random_orientation(rng: np.random.Generator, oblique_degrees: float = 12.0) -> tuple[list[bool], np.ndarray]:
    """(flips of the canonical k, rows, columns axes, a small rotation) for a random storage."""
    flips = [bool(rng.random() < 0.3), bool(rng.random() < 0.5), bool(rng.random() < 0.5)]
    rotation = np.eye(3)
    if rng.random() < 0.3:
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = np.radians(rng.uniform(-oblique_degrees, oblique_degrees))
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    return flips, rotation


@dataclass
class Phantom:
    array: np.ndarray             # [k, j, i] int16
    ijk_to_ras: np.ndarray        # 4x4
    slice_labels: list[str | None]  # per k-slice
    protocol: str
    subject: Subject
    acquisition: Acquisition
    subset: bool = False          # only some slices were rendered (training sets): no true geometry

    def volume(self):
        """The phantom as a SegTuneCore Volume (not for slice subsets: their k spacing is irregular)."""
        from SegTuneCore.geometry import Volume

        if self.subset:
            raise ValueError("a phantom rendered as a slice subset has no regular geometry")
        return Volume(self.array, self.ijk_to_ras)


def make_phantom(seed: int, regions: list[str] | None = None, protocol: str | None = None,
                 spine: bool = False, orientation: bool = True, max_matrix: int = 384,
                 max_slices: int | None = None) -> Phantom:
    """A deterministic phantom for `seed` (same seed and options -> identical volume).

    max_slices: render only a random subset of at most that many slices, in order (a cheap
    source of training slices from thin-slice volumes; the matrix then keeps the acquisition's
    slice spacing, so only the in-plane geometry and the slice order are meaningful)."""
    if protocol is not None and protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}")
    rng = np.random.default_rng(seed)
    subject = random_subject(rng)
    acq = random_acquisition(subject, rng, regions, protocol, spine, max_matrix)
    subset = max_slices is not None and acq.slices > max_slices
    chosen = np.sort(rng.choice(acq.slices, max_slices, replace=False)) if subset else None
    image, labels = render(subject, acq, rng, chosen)
    if spine:
        labels = [SPINE] * len(labels)
    scale = rng.uniform(300, 3000)
    array = np.clip(np.round(image * scale), 0, 32767).astype(np.int16)

    # Canonical storage: k -> superior, j (rows) -> posterior, i (columns) -> patient's left,
    # i.e. LPS like DICOM. Body z maps to S = z - 1000 mm.
    directions = np.diag([-1.0, -1.0, 1.0])
    spacing = np.array([acq.pixel, acq.pixel, acq.slice_thickness])
    rows, columns = acq.matrix
    first_centre = np.array([acq.centre[0] - (columns - 1) / 2 * acq.pixel,
                             acq.centre[1] - (rows - 1) / 2 * acq.pixel,
                             acq.z_start + 0.5 * acq.slice_thickness - 1000.0])
    origin = np.array([-first_centre[0], -first_centre[1], first_centre[2]])
    matrix = np.eye(4)
    matrix[:3, :3] = directions * spacing
    matrix[:3, 3] = origin
    if orientation:
        flips, rotation = random_orientation(rng)
        for array_axis, flip in enumerate(flips):
            if flip:
                ijk_axis = 2 - array_axis
                count = array.shape[array_axis]
                matrix[:3, 3] += matrix[:3, ijk_axis] * (count - 1)
                matrix[:3, ijk_axis] *= -1
                array = np.flip(array, axis=array_axis)
                if array_axis == 0:
                    labels = labels[::-1]
        centre = matrix[:3, :3] @ ((np.array(array.shape[::-1]) - 1) / 2) + matrix[:3, 3]
        matrix[:3, :3] = rotation @ matrix[:3, :3]
        matrix[:3, 3] = centre - matrix[:3, :3] @ ((np.array(array.shape[::-1]) - 1) / 2)
    return Phantom(np.ascontiguousarray(array), matrix, list(labels), acq.protocol, subject, acq, subset)
