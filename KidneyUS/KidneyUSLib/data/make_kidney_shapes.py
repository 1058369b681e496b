"""Build kidney_shapes.npz, the real kidney shapes that seed the ultrasound phantom.

Run once (needs SimpleITK, which the phantom itself does not):
    python KidneyUS/KidneyUSLib/data/make_kidney_shapes.py ../shared/data/totalseg_ct_abdomen_seg.nii.gz

For each kidney of the TotalSegmentator label map (right = 2, left = 3) it stores the surface as
a radius function R(theta, phi) in the kidney's principal-axes frame, normalised by the
principal semi-axes: a point q (in normalised coordinates) is inside the kidney when
|q| <= R(q / |q|). Axis 0 of that frame is the long axis, axis 1 points to the hilum (medially),
axis 2 = axis 0 x axis 1.

The CT has only 30 slices and cuts both kidneys at its inferior edge (about their middle), so each
mask is completed by mirroring it at that cut. The mask is then closed (15 mm ball) and its holes
filled so that it describes the capsule with the renal sinus inside, as a kidney ultrasound label
does. What remains of the hilum opening seen from the centre is limited to a concavity
(radius >= MIN_RADIUS of the normalised ellipsoid): deeper slots are the renal vessels' gap, which a
capsule label bridges. Also stored: the semi-axes (mm), the volume (mL), and the extent of the
normalised shape along each axis (used to scale a seed to a requested length).
"""

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

N_THETA, N_PHI = 33, 64
MIN_RADIUS = 0.55
LABELS = {"right": 2, "left": 3}


def radius_function(mask: np.ndarray, index_to_mm: np.ndarray, origin: np.ndarray):
    """Principal frame, semi-axes and normalised radius map of one binary mask ([z, y, x] array)."""
    zyx = np.argwhere(mask)
    xyz = zyx[:, ::-1].astype(float)
    points = xyz @ index_to_mm.T + origin
    centre = points.mean(axis=0)
    eigval, eigvec = np.linalg.eigh(np.cov((points - centre).T))
    order = np.argsort(eigval)[::-1]
    eigval, axes = eigval[order], eigvec[:, order]
    semi_axes = np.sqrt(5.0 * eigval)  # an ellipsoid with these semi-axes has these second moments
    return centre, axes, semi_axes, points


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labelmap", type=Path)
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("kidney_shapes.npz"))
    args = parser.parse_args()

    image = sitk.ReadImage(str(args.labelmap))
    labels = sitk.GetArrayFromImage(image)
    # physical (LPS) mm of a continuous index (x, y, z)
    index_to_mm = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    origin = np.array(image.GetOrigin())
    mm_to_index = np.linalg.inv(index_to_mm)

    # mirror at the inferior cut: slice -1-z is slice z; the origin moves down by as many slices
    labels = np.concatenate([labels[::-1], labels], axis=0)
    origin = origin - index_to_mm @ np.array([0.0, 0.0, labels.shape[0] // 2])
    ball = ndimage.iterate_structure(ndimage.generate_binary_structure(3, 1), 5)
    masks = {name: ndimage.binary_fill_holes(ndimage.binary_closing(np.pad(labels == value, 6), ball))[6:-6, 6:-6, 6:-6]
             for name, value in LABELS.items()}
    frames = {name: radius_function(masks[name], index_to_mm, origin) for name in LABELS}
    midline = 0.5 * (frames["right"][0] + frames["left"][0])

    theta = np.linspace(0.0, np.pi, N_THETA)
    phi = np.linspace(0.0, 2.0 * np.pi, N_PHI, endpoint=False)
    tt, pp = np.meshgrid(theta, phi, indexing="ij")
    directions = np.stack([np.cos(tt), np.sin(tt) * np.cos(pp), np.sin(tt) * np.sin(pp)], axis=-1)
    steps = np.linspace(0.0, 2.0, 401)

    radii, semi_axes_all, volumes, extents, names = [], [], [], [], []
    for name in LABELS:
        centre, axes, semi_axes, points = frames[name]
        if axes[2, 0] < 0:  # long axis towards superior (LPS z)
            axes[:, 0] *= -1
        if np.dot(midline - centre, axes[:, 1]) < 0:  # axis 1 towards the hilum (medial)
            axes[:, 1] *= -1
        axes[:, 2] = np.cross(axes[:, 0], axes[:, 1])
        soft = ndimage.gaussian_filter(masks[name].astype(np.float32), 0.7)
        # march along each ray from the centre; the radius is the outermost point inside
        ray_mm = centre + (directions[..., None, :] * steps[:, None] * semi_axes) @ axes.T
        index = (ray_mm - origin) @ mm_to_index.T  # (x, y, z)
        inside = ndimage.map_coordinates(soft, index[..., ::-1].reshape(-1, 3).T, order=1).reshape(ray_mm.shape[:-1]) >= 0.5
        last_in = len(steps) - 1 - np.argmax(inside[..., ::-1], axis=-1)
        radius = ndimage.gaussian_filter(np.maximum(steps[last_in], MIN_RADIUS), (0.7, 0.7), mode=("nearest", "wrap"))
        surface = directions * radius[..., None]
        radii.append(radius.astype(np.float32))
        semi_axes_all.append(semi_axes)
        volumes.append(len(points) * np.prod(image.GetSpacing()) / 1000.0)
        extents.append(surface.max(axis=(0, 1)) - surface.min(axis=(0, 1)))
        names.append(name)
        print(f"{name}: volume {volumes[-1]:.1f} mL, semi-axes {np.round(semi_axes, 1)} mm, "
              f"normalised extents {np.round(extents[-1], 2)}")

    np.savez_compressed(
        args.output, radius=np.stack(radii), theta=theta, phi=phi, semi_axes_mm=np.stack(semi_axes_all),
        volume_ml=np.array(volumes), normalised_extent=np.stack(extents), names=np.array(names),
        source=np.array("TotalSegmentator test label map totalseg_ct_abdomen_seg.nii.gz (CC BY 4.0), labels 2 and 3"),
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
