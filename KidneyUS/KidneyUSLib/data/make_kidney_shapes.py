"""Build kidney_shapes.npz, the real kidney shapes that seed the ultrasound phantom.

Run once (needs SimpleITK, which the phantom itself does not):
    python KidneyUS/KidneyUSLib/data/make_kidney_shapes.py ../shared/data/totalseg_ct_abdomen_seg.nii.gz

For each kidney of the TotalSegmentator label map (right = 2, left = 3) it stores the surface as
a radius function R(theta, phi) in the kidney's principal-axes frame, normalised by the
principal semi-axes: a point q (normalised coordinates) is inside the kidney when
|q| <= R(q / |q|). Axis 0 of that frame is the long axis (towards the upper pole), axis 1 points
to the hilum (medially), axis 2 = axis 0 x axis 1.

The CT has only 30 slices and cuts both kidneys at its inferior edge, about their middle. So the
frame is centred where the long axis leaves the CT, the upper half is measured, and the lower
half is its mirror image across the plane perpendicular to the long axis there. The mask is first
closed (15 mm ball) and its holes filled so that it describes the capsule with the renal sinus
inside, as a kidney ultrasound label does; what remains of the hilum opening seen from the centre
is limited to a concavity (radius >= MIN_RADIUS): deeper slots are the renal vessels' gap, which
a capsule label bridges. Also stored: the semi-axes (mm), the volume of the completed kidney (mL),
and the extent of the normalised shape along each axis (to scale a seed to a requested length).
"""

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

N_THETA, N_PHI = 33, 64  # theta in [0, pi] from the long axis; row 16 is the mirror plane
MIN_RADIUS = 0.55
LABELS = {"right": 2, "left": 3}
PAD = 6  # slices replicated below the cut so that rays along the mirror plane stay inside


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labelmap", type=Path)
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("kidney_shapes.npz"))
    args = parser.parse_args()

    image = sitk.ReadImage(str(args.labelmap))
    labels = sitk.GetArrayFromImage(image)
    index_to_mm = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())  # (x, y, z) -> LPS mm
    origin = np.array(image.GetOrigin())
    mm_to_index = np.linalg.inv(index_to_mm)
    ball = ndimage.iterate_structure(ndimage.generate_binary_structure(3, 1), 5)
    masks = {}
    for name, value in LABELS.items():
        mask = ndimage.binary_fill_holes(ndimage.binary_closing(np.pad(labels == value, PAD), ball))
        mask = mask[PAD:-PAD, PAD:-PAD, PAD:-PAD]
        if not mask[0].any():
            raise SystemExit(f"{name} kidney does not reach the inferior cut: this script expects the test CT")
        masks[name] = np.concatenate([np.repeat(mask[:1], PAD, axis=0), mask], axis=0)
    origin = origin - index_to_mm @ np.array([0.0, 0.0, PAD])  # the replicated slices lie below
    cut_z = (origin + index_to_mm @ np.array([0.0, 0.0, PAD]))[2]

    def points_of(mask):
        zyx = np.argwhere(mask[PAD:])
        return (zyx[:, ::-1] + [0, 0, PAD]) @ index_to_mm.T + origin

    centroids = {name: points_of(mask).mean(axis=0) for name, mask in masks.items()}
    midline = 0.5 * (centroids["right"] + centroids["left"])

    theta = np.linspace(0.0, np.pi, N_THETA)
    phi = np.linspace(0.0, 2.0 * np.pi, N_PHI, endpoint=False)
    upper = theta <= np.pi / 2 + 1e-9
    tt, pp = np.meshgrid(theta[upper], phi, indexing="ij")
    directions = np.stack([np.cos(tt), np.sin(tt) * np.cos(pp), np.sin(tt) * np.sin(pp)], axis=-1)
    steps = np.linspace(0.0, 2.0, 401)

    radii, semi_axes_all, volumes, extents, names = [], [], [], [], []
    for name, mask in masks.items():
        points = points_of(mask)
        centroid = points.mean(axis=0)
        eigval, axes = np.linalg.eigh(np.cov((points - centroid).T))
        order = np.argsort(eigval)[::-1]
        eigval, axes = eigval[order], axes[:, order]
        if axes[2, 0] < 0:  # long axis towards superior (LPS z)
            axes[:, 0] *= -1
        if np.dot(midline - centroid, axes[:, 1]) < 0:  # axis 1 towards the hilum (medial)
            axes[:, 1] *= -1
        axes[:, 2] = np.cross(axes[:, 0], axes[:, 1])
        centre = centroid + (cut_z - centroid[2]) / axes[2, 0] * axes[:, 0]
        semi_axes = np.array([((points - centre) @ axes[:, 0]).max(), *np.sqrt(5.0 * eigval[1:])])

        soft = ndimage.gaussian_filter(mask.astype(np.float32), 0.7)
        ray_mm = centre + (directions[..., None, :] * steps[:, None] * semi_axes) @ axes.T
        index = (ray_mm - origin) @ mm_to_index.T  # (x, y, z)
        inside = ndimage.map_coordinates(soft, index[..., ::-1].reshape(-1, 3).T, order=1).reshape(ray_mm.shape[:-1]) >= 0.5
        last_in = len(steps) - 1 - np.argmax(inside[..., ::-1], axis=-1)  # outermost point inside
        half = np.maximum(steps[last_in], MIN_RADIUS)
        radius = np.concatenate([half, half[-2::-1]], axis=0)  # the lower half mirrors the upper
        radius = ndimage.gaussian_filter(radius, (0.7, 0.7), mode=("nearest", "wrap"))

        full_t, full_p = np.meshgrid(theta, phi, indexing="ij")
        full_dirs = np.stack([np.cos(full_t), np.sin(full_t) * np.cos(full_p), np.sin(full_t) * np.sin(full_p)], axis=-1)
        surface = full_dirs * radius[..., None]
        # volume of the star-shaped solid: integral of R^3 / 3 over the sphere, times the semi-axes
        solid_angle = np.sin(full_t) * (theta[1] - theta[0]) * (phi[1] - phi[0])
        volume_ml = float((radius**3 / 3.0 * solid_angle).sum() * np.prod(semi_axes) / 1000.0)
        radii.append(radius.astype(np.float32))
        semi_axes_all.append(semi_axes)
        volumes.append(volume_ml)
        extents.append(surface.max(axis=(0, 1)) - surface.min(axis=(0, 1)))
        names.append(name)
        print(f"{name}: completed volume {volume_ml:.1f} mL, semi-axes {np.round(semi_axes, 1)} mm, "
              f"normalised extents {np.round(extents[-1], 2)}, length {extents[-1][0] * semi_axes[0]:.0f} mm")

    np.savez_compressed(
        args.output, radius=np.stack(radii), theta=theta, phi=phi, semi_axes_mm=np.stack(semi_axes_all),
        volume_ml=np.array(volumes), normalised_extent=np.stack(extents), names=np.array(names),
        source=np.array("TotalSegmentator test label map totalseg_ct_abdomen_seg.nii.gz (CC BY 4.0), labels 2 and 3"),
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
