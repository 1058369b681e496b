"""Speckle statistics of the real 3D ultrasound and of the phantom's speckle model.

    python KidneyUS/KidneyUSLib/data/speckle_calibration.py ../shared/data/plus_us_spine_phantom_3d.mha [--json OUT]

Both volumes are cut into 16^3-voxel patches; patches fully inside the imaged sector, less than 1 % saturated,
with a mean grey level between 40 and 200, are normalised by their mean and pooled. Reported: the
signal-to-noise ratio (mean / std; 1.91 for a Rayleigh amplitude) per patch (median) and pooled, Rayleigh and Nakagami fits
of the pooled samples (Nakagami m by maximum likelihood; m = 1 is Rayleigh), the Kolmogorov-Smirnov distance of
each fit, and the speckle size: the full width at half maximum (mm) of the autocorrelation along the
beam (axial), across it (lateral) and along the sweep (elevational). The real volume's beam runs
along its z axis, lateral is x, the freehand sweep is y. The phantom's patches come from its own
speckle model on a 0.5 mm grid (constant echo, the real volume's spacing) with w = beam axis.
Reading the .mha needs SimpleITK; the phantom does not.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from KidneyUSLib import phantom

PATCH = 16


def patches(volume: np.ndarray) -> list[np.ndarray]:
    out = []
    for z in range(0, volume.shape[0] - PATCH + 1, PATCH):
        for y in range(0, volume.shape[1] - PATCH + 1, PATCH):
            for x in range(0, volume.shape[2] - PATCH + 1, PATCH):
                block = volume[z:z + PATCH, y:y + PATCH, x:x + PATCH].astype(np.float64)
                if block.min() > 0 and np.mean(block >= 250) < 0.01 and 40 <= block.mean() <= 200:
                    out.append(block)
    return out


def fwhm(block: np.ndarray, axis: int, spacing: float) -> float:
    """FWHM (mm) of the mean 1D autocorrelation along an axis (linear interpolation at 0.5)."""
    centred = block - block.mean()
    n = block.shape[axis]
    spectrum = np.abs(np.fft.rfft(centred, n=2 * n, axis=axis)) ** 2
    acf = np.fft.irfft(spectrum, axis=axis).take(range(n), axis=axis)
    acf = acf.mean(axis=tuple(a for a in range(3) if a != axis))
    acf = acf / acf[0]
    below = np.flatnonzero(acf < 0.5)
    if len(below) == 0:
        return float("nan")
    i = below[0]
    lag = i - 1 + (acf[i - 1] - 0.5) / (acf[i - 1] - acf[i])
    return float(2 * lag * spacing)


def statistics(blocks: list[np.ndarray], spacing: float, axes: dict) -> dict:
    samples = np.concatenate([(b / b.mean()).ravel() for b in blocks])
    sigma = np.sqrt(np.mean(samples**2) / 2)  # Rayleigh MLE
    omega = np.mean(samples**2)
    subset = np.random.default_rng(0).choice(samples, size=min(len(samples), 20000), replace=False)
    m, _, nakagami_scale = stats.nakagami.fit(subset, floc=0)  # maximum likelihood
    ks_rayleigh = stats.kstest(samples, "rayleigh", args=(0, sigma)).statistic
    ks_nakagami = stats.kstest(samples, "nakagami", args=(m, 0, nakagami_scale)).statistic
    hist, edges = np.histogram(samples, bins=20, range=(0, 3), density=True)
    return {
        "patches": len(blocks),
        "snr_per_patch_median": float(np.median([b.mean() / b.std() for b in blocks])),
        "snr_pooled": float(1.0 / samples.std()),
        "rayleigh_sigma": float(sigma), "ks_rayleigh": float(ks_rayleigh),
        "nakagami_m": float(m), "nakagami_omega": float(nakagami_scale**2), "ks_nakagami": float(ks_nakagami),
        "second_moment": float(omega),
        "speckle_fwhm_mm": {name: float(np.mean([fwhm(b, axis, spacing) for b in blocks])) for name, axis in axes.items()},
        "histogram_of_normalised": {"edges": edges.round(3).tolist(), "density": hist.round(4).tolist()},
    }


def phantom_speckle(seed: int = 0, shape=(96, 96, 96), spacing: float = 0.5, level: float = 0.6,
                    noise: float = 0.05) -> np.ndarray:
    """The phantom's speckle model with a constant echo, array [w, v, u] (beam along axis 0)."""
    rng = np.random.default_rng(seed)
    sigma_vox = phantom.SPECKLE_SIGMA_MM[[2, 1, 0]] / spacing
    amplitude = np.full(shape, level, dtype=np.float32)
    return np.rint(phantom._display(phantom.speckle_envelope(rng, amplitude, noise, sigma_vox)))


def measure_cube_texture(seed: int = 0, spacing: float = 0.6, level: float = 0.6, noise: float = 0.05) -> dict:
    """Texture left in the 4 mm cube by preprocessing constant-echo native speckle, against the fast path's.

    Coefficient of variation, skewness and lag-1 correlation along the cube's k, j, i (lateral,
    axial, elevational) over the central 24^3 voxels.
    """
    from KidneyUSLib import preprocessing

    def measure(cube):
        core = cube[28:52, 28:52, 28:52].astype(np.float64)
        lag1 = [np.corrcoef(np.take(core, range(23), axis=a).ravel(), np.take(core, range(1, 24), axis=a).ravel())[0, 1]
                for a in range(3)]
        return {"cv": float(core.std() / core.mean()), "skewness": float(stats.skew(core.ravel())),
                "lag1_correlation_lateral_axial_elevational": [round(c, 3) for c in lag1]}

    n = 200  # [w, v, u] on the native grid; the canonical cube is [u, w, v]
    native = phantom_speckle(seed, (n, n, n), spacing, level, noise).transpose(2, 0, 1)
    volume = type("Native", (), {"array": native, "ijk_to_ras": np.diag([spacing, spacing, spacing, 1.0])})
    info = preprocessing.PreprocessInfo(native.shape, volume.ijk_to_ras, preprocessing.cube_geometry(native.shape, volume.ijk_to_ras), (0, 1))
    cube = preprocessing.resample_to_cube(native, info)
    texture = phantom.cube_texture(np.random.default_rng(seed), cube.shape)
    fast = phantom._mean_display(np.full(cube.shape, level), noise) * texture
    return {"preprocessed_native": measure(cube), "fast_path": measure(fast),
            "mean_level_native_vs_fast": [float(cube[28:52, 28:52, 28:52].mean()), float(fast.mean())]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ultrasound", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import SimpleITK as sitk

    image = sitk.ReadImage(str(args.ultrasound))
    real = sitk.GetArrayFromImage(image)  # [z, y, x]; the beam runs along z
    axes = {"axial": 0, "elevational": 1, "lateral": 2}
    result = {
        "real": statistics(patches(real), image.GetSpacing()[0], axes),
        "phantom": statistics(patches(phantom_speckle()), 0.5, axes),
        "cube_texture_after_preprocessing": measure_cube_texture(),
        "phantom_parameters": {"speckle_sigma_mm_lateral_elevational_axial": phantom.SPECKLE_SIGMA_MM.tolist(),
                               "display_gamma": phantom.DISPLAY_GAMMA},
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
