"""Figures of docs/KidneyUS-phantom.md (needs SimpleITK and matplotlib):

    python KidneyUS/KidneyUSLib/data/phantom_figures.py ../shared/data/plus_us_spine_phantom_3d.mha docs/images

kidney_phantom.png: middle planes (probe plane and across it) of an adult and a child phantom on
their native grids, with the kidney label, and the same scenes as the network sees them (80^3
cube, 4 mm) through preprocessing and through the fast training path.
kidney_phantom_speckle.png: a real ultrasound patch next to a phantom speckle patch (same 0.5 mm
grid), and the histograms of mean-normalised grey levels with their Nakagami fits.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from KidneyUSLib import phantom, preprocessing
from KidneyUSLib.data import speckle_calibration

CASES = (("adult", 4), ("child", 7))


def probe_planes(scene, array: np.ndarray):
    """The native array reordered to (u, w, v) = (lateral, depth, elevational), probe at the top."""
    axes = [2 - list(scene.grid_axes).index(p) for p in (0, 2, 1)]
    ordered = np.transpose(array, axes)
    for out_axis, probe_axis in enumerate((0, 2, 1)):
        if scene.grid_signs[list(scene.grid_axes).index(probe_axis)] < 0:
            ordered = np.flip(ordered, axis=out_axis)
    return ordered


def kidney_figure(path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(CASES), 4, figsize=(16, 4.2 * len(CASES)))
    for row, (population, seed) in enumerate(CASES):
        scene = phantom.draw_scene(population, seed)
        volume, label = phantom.generate_phantom(population, seed)
        image, mask = probe_planes(scene, volume.array), probe_planes(scene, label.array)
        spacing = {p: scene.spacing_ijk[list(scene.grid_axes).index(p)] for p in range(3)}
        centre = np.round(np.argwhere(mask).mean(axis=0)).astype(int)
        views = [(image[:, :, centre[2]].T, mask[:, :, centre[2]].T, spacing[2] / spacing[0], "native: probe plane (lateral x depth)"),
                 (image[centre[0]], mask[centre[0]], spacing[2] / spacing[1], "native: across (elevational x depth)")]
        cube, info = preprocessing.preprocess(volume)
        cube_label = preprocessing.resample_to_cube(label.array, info) >= 0.5
        fast, fast_label = phantom.generate_training_pair(population, seed)
        i = int(np.round(np.argwhere(cube_label).mean(axis=0))[2])  # cube [k, j, i] = (u, w, v): a probe plane
        views += [(cube[:, :, i].T, cube_label[:, :, i].T, 1.0, "80^3 cube via preprocess"),
                  (fast[:, :, i].T, fast_label[:, :, i].T, 1.0, "80^3 cube via fast path")]
        for column, (picture, outline, aspect, title) in enumerate(views):
            ax = axes[row, column]
            ax.imshow(picture, cmap="gray", aspect=aspect)
            ax.contour(outline, [0.5], colors="lime", linewidths=1)
            ax.set_title(f"{population} seed {seed}: {title}", fontsize=9)
            ax.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=70)
    plt.close(figure)


def speckle_figure(real_path: Path, path: Path) -> dict:
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    real = sitk.GetArrayFromImage(sitk.ReadImage(str(real_path)))  # [z = beam, y = sweep, x = lateral]
    synthetic = speckle_calibration.phantom_speckle(seed=0, shape=(96, 96, 96))  # [w = beam, v, u]
    real_blocks = speckle_calibration.patches(real)
    synthetic_blocks = speckle_calibration.patches(synthetic)
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    axes[0].imshow(real[5:45, 50, 30:110], cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("real 3D ultrasound (PLUS spine phantom), beam downwards, 0.5 mm", fontsize=9)
    axes[1].imshow(synthetic[5:45, 48, 8:88], cmap="gray", vmin=0, vmax=255)
    axes[1].set_title("phantom speckle, same grid and orientation", fontsize=9)
    bins = np.linspace(0, 3, 61)
    fits = {}
    for name, blocks, color in (("real", real_blocks, "tab:blue"), ("phantom", synthetic_blocks, "tab:orange")):
        samples = np.concatenate([(b / b.mean()).ravel() for b in blocks])
        m, _, scale = stats.nakagami.fit(np.random.default_rng(0).choice(samples, 20000, replace=False), floc=0)
        axes[2].hist(samples, bins=bins, density=True, histtype="step", color=color, label=f"{name} (n={len(samples)})")
        axes[2].plot(bins, stats.nakagami.pdf(bins, m, 0, scale), color=color, linestyle="--", label=f"{name} Nakagami m={m:.2f}")
        fits[name] = m
    sigma = np.sqrt(1 / 2 / (4 / np.pi))  # unit-mean Rayleigh
    axes[2].plot(bins, stats.rayleigh.pdf(bins, 0, sigma), color="gray", linestyle=":", label="Rayleigh (unit mean)")
    axes[2].set_xlabel("grey level / patch mean")
    axes[2].legend(fontsize=8)
    for ax in axes[:2]:
        ax.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=70)
    plt.close(figure)
    return fits


def main():
    import matplotlib

    matplotlib.use("Agg")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ultrasound", type=Path)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    kidney_figure(args.folder / "kidney_phantom.png")
    print(json.dumps(speckle_figure(args.ultrasound, args.folder / "kidney_phantom_speckle.png")))


if __name__ == "__main__":
    main()
