"""G = T·C+·Rz·Ry·Rx·S·C− (thesis eq. 4.8) and warping with affine_grid/grid_sample."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from KidneyUSLib import transforms

torch.set_num_threads(1)  # 2 shared cores: extra threads only wait on each other

PARAMS = torch.tensor([[2.5, -1.0, 3.0, 0.3, -0.2, 0.4, 0.1, -0.15, 0.05]], dtype=torch.float64)
CENTRE = (15.5, 11.0, 9.5)


def _blob(shape=(24, 28, 32), centre=(12.0, 14.0, 15.0), radii=(6.0, 5.0, 8.0)):
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float64)
    inside = ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((x - centre[2]) / radii[2]) ** 2 <= 1
    return torch.from_numpy(inside.astype(np.float32))[None, None]


def test_matrix_is_the_product_of_its_parts_applied_in_sequence():
    g = transforms.matrix_from_parameters(PARAMS, CENTRE)[0].numpy()
    points = np.c_[np.random.default_rng(0).uniform(-20, 40, (50, 3)), np.ones(50)].T
    moved = points
    for part in reversed(transforms.parts_from_parameters(PARAMS, CENTRE)):  # C− first, T last
        moved = part[0].numpy() @ moved
    np.testing.assert_allclose(g @ points, moved, atol=1e-12)


def test_matrix_matches_an_independent_construction():
    tx, ty, tz, rx, ry, rz, lsx, lsy, lsz = PARAMS[0].numpy()
    # The thesis' Ry is a standard rotation by -ry; Rz·Ry·Rx is scipy's intrinsic "ZYX".
    rotation = Rotation.from_euler("ZYX", [rz, -ry, rx]).as_matrix()
    linear = rotation @ np.diag(np.exp([lsx, lsy, lsz]))
    c = np.array(CENTRE)
    expected = np.eye(4)
    expected[:3, :3] = linear
    expected[:3, 3] = np.array([tx, ty, tz]) + c - linear @ c
    g = transforms.matrix_from_parameters(PARAMS, CENTRE)[0].numpy()
    np.testing.assert_allclose(g, expected, atol=1e-12)


def test_zero_parameters_give_the_identity_and_it_is_differentiable():
    params = torch.zeros(2, 9, requires_grad=True)
    g = transforms.matrix_from_parameters(params, (3.0, 4.0, 5.0))
    np.testing.assert_allclose(g.detach().numpy(), np.broadcast_to(np.eye(4), (2, 4, 4)), atol=1e-7)
    g.sum().backward()
    assert params.grad is not None and torch.isfinite(params.grad).all()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_one_voxel_translation_shifts_the_matching_tensor_axis(axis):
    volume = torch.rand(1, 2, 7, 8, 9)
    params = torch.zeros(1, 9)
    params[0, axis] = 1.0  # x, y, z
    moved = transforms.warp(volume, transforms.matrix_from_parameters(params, transforms.grid_centre(volume.shape[2:])))
    tensor_axis = 4 - axis  # x is the last axis, z the third
    expected = torch.roll(volume, 1, dims=tensor_axis)
    expected.index_fill_(tensor_axis, torch.tensor([0]), 0.0)
    torch.testing.assert_close(moved, expected, atol=1e-6, rtol=0)


def test_sample_pulls_and_warp_pushes():
    volume = torch.rand(1, 1, 6, 6, 6)
    shift = transforms.translation(torch.tensor([[2.0, 0.0, 0.0]]))
    pulled = transforms.sample(volume, shift)  # out(x) = in(x + 2)
    torch.testing.assert_close(pulled[..., :4], volume[..., 2:], atol=1e-6, rtol=0)
    pushed = transforms.warp(volume, shift)  # out(x) = in(x - 2)
    torch.testing.assert_close(pushed[..., 2:], volume[..., :4], atol=1e-6, rtol=0)


@pytest.mark.parametrize("align_corners", [True, False])
def test_voxel_to_normalised_maps_voxel_centres_as_grid_sample_does(align_corners):
    shape = (5, 6, 7)
    n = transforms.voxel_to_normalised(shape, align_corners, dtype=torch.float64)
    for axis, size in enumerate((7, 6, 5)):  # x, y, z
        first, last = np.zeros(4), np.zeros(4)
        first[3] = last[3] = 1
        last[axis] = size - 1
        u0, u1 = (n.numpy() @ first)[axis], (n.numpy() @ last)[axis]
        # grid_sample's documented unnormalisation: (u + 1) / 2 · (size - 1) or ((u + 1) · size - 1) / 2
        unnorm = (lambda u: (u + 1) / 2 * (size - 1)) if align_corners else (lambda u: ((u + 1) * size - 1) / 2)
        assert unnorm(u0) == pytest.approx(0) and unnorm(u1) == pytest.approx(size - 1)


def test_warp_then_inverse_returns_the_input_inside_the_field_of_view():
    label = _blob()
    params = torch.tensor([[1.5, -2.0, 1.0, 0.2, -0.15, 0.3, 0.1, -0.1, 0.05]])
    g = transforms.matrix_from_parameters(params, transforms.grid_centre(label.shape[2:]))
    back = transforms.warp(transforms.warp(label, g), transforms.inverse(g)) > 0.5
    # voxels whose round trip stayed inside the grid
    fov = transforms.field_of_view(label.shape[2:], g)
    fov = transforms.warp(fov.double(), transforms.inverse(g).double(), mode="nearest") > 0.5
    truth = label.bool()
    inter = (back & truth & fov).sum().item()
    dice = 2 * inter / ((back & fov).sum().item() + (truth & fov).sum().item())
    assert fov.float().mean() > 0.5 and (truth & fov).sum() > 500
    assert dice >= 0.99


def test_warp_matches_scipy_at_points_moved_back_through_the_parts_in_sequence():
    """out(p) = in(G⁻¹·p): undo T, C+, Rz, Ry, Rx, S, C− one by one, interpolate with scipy."""
    from scipy import ndimage

    volume = torch.rand(1, 1, 12, 14, 16, dtype=torch.float64)
    params = torch.tensor([[1.0, 0.5, -0.5, 0.2, 0.1, -0.3, 0.1, 0.0, -0.1]], dtype=torch.float64)
    centre = transforms.grid_centre(volume.shape[2:])
    warped = transforms.warp(volume, transforms.matrix_from_parameters(params, centre))[0, 0].numpy()
    z, y, x = np.mgrid[:12, :14, :16].astype(np.float64)
    points = np.stack([x.ravel(), y.ravel(), z.ravel(), np.ones(x.size)])
    for part in transforms.parts_from_parameters(params, centre):
        points = np.linalg.solve(part[0].numpy(), points)
    expected = ndimage.map_coordinates(volume[0, 0].numpy(), points[2::-1], order=1, mode="constant", cval=0.0)
    expected = expected.reshape(warped.shape)
    inside = np.all((points[:3] >= 0) & (points[:3] <= np.array([[15], [13], [11]])), axis=0).reshape(warped.shape)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(warped[inside], expected[inside], atol=1e-9)
