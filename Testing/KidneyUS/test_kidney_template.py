"""Template deformation segmenter (thesis §4.4): the warp layer, G, the Jacobian, templates, model store."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage

from KidneyUSLib import template_net as tn
from KidneyUSLib import templates, training, transforms
from KidneyUSLib.template_training import (TemplateTrainSettings, augment, evaluate_cases,
                                           train_model, train_template)
from SegTuneCore.errors import SegTuneError

torch.set_num_threads(1)
SHAPE = (40, 40, 40)


@pytest.fixture(scope="module")
def phantoms():
    """Two adults and one child, 40^3 (4 mm cubes averaged by 2)."""
    return (training.generated_set("adult", 2, first_seed=500).downsampled(2),
            training.generated_set("child", 1, first_seed=500).downsampled(2))


@pytest.fixture(scope="module")
def kidney(phantoms):
    return phantoms[0].labels[0]


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2 * (a & b).sum() / (a.sum() + b.sum())


# --- numpy reference for G (independent of transforms.py) ---------------------------------------

def numpy_g(params, centre) -> np.ndarray:
    """T·C+·Rz·Ry·Rx·S·C− built directly from the thesis' matrices (eq. 4.8), x y z order."""
    tx, ty, tz, rx, ry, rz, lx, ly, lz = params

    def h(m3=None, t=(0, 0, 0)):
        m = np.eye(4)
        if m3 is not None:
            m[:3, :3] = m3
        m[:3, 3] = t
        return m

    c, s = np.cos, np.sin
    rot_x = h(np.array([[1, 0, 0], [0, c(rx), -s(rx)], [0, s(rx), c(rx)]]))
    rot_y = h(np.array([[c(ry), 0, -s(ry)], [0, 1, 0], [s(ry), 0, c(ry)]]))
    rot_z = h(np.array([[c(rz), -s(rz), 0], [s(rz), c(rz), 0], [0, 0, 1]]))
    scale = h(np.diag(np.exp([lx, ly, lz])))
    return h(t=(tx, ty, tz)) @ h(t=centre) @ rot_z @ rot_y @ rot_x @ scale @ h(t=-np.asarray(centre))


def numpy_pull(template: np.ndarray, g: np.ndarray) -> np.ndarray:
    """out(p) = template(G·p) with scipy, converting x y z to array (z, y, x) order."""
    flip = np.eye(4)[[2, 1, 0, 3]]
    m = flip @ g @ flip
    return ndimage.affine_transform(template, m[:3, :3], m[:3, 3], order=1, mode="grid-constant", cval=0.0)


TRUE_PARAMS = (1.5, -1.0, 2.0, 0.12, -0.08, 0.2, 0.12, -0.1, 0.06)


# --- identity ------------------------------------------------------------------------------------

def test_identity_parameters_and_zero_field_return_the_template(kidney):
    template = torch.from_numpy(templates.mask_template(kidney))
    identity = torch.eye(4, dtype=torch.float64)[None]
    zero = torch.zeros((1, 3, *SHAPE), dtype=torch.float64)
    warped, grid = tn.warp_template(template.double()[None, None], identity, zero)
    assert torch.equal(grid, tn.voxel_grid(SHAPE, torch.float64)[None])
    assert torch.allclose(warped[0, 0], template.double(), atol=1e-12, rtol=0)
    grid = tn.warp_template(template.double()[None, None], identity, zero, frame="image")[1]
    assert torch.equal(grid, tn.voxel_grid(SHAPE, torch.float64)[None])
    # a fresh network (zero-initialised heads) is the identity, in float32, with either local branch
    for branch in templates.LOCAL_BRANCHES:
        config = tn.TemplateConfig(width=2, template_shape=SHAPE, global_width=4, local_branch=branch, local_width=4)
        net = tn.TemplateNet(config, template).eval()
        with torch.inference_mode():
            d = net.deform(torch.randn(2, 1, *SHAPE))
        assert torch.count_nonzero(d.parameters) == 0 and torch.count_nonzero(d.displacement) == 0
        assert (d.probabilities - template).abs().max() < 1e-5


# --- G on a phantom ------------------------------------------------------------------------------

def test_warp_with_true_parameters_matches_an_independent_resampling(kidney):
    template = templates.mask_template(kidney)
    centre = transforms.grid_centre(SHAPE)
    g = numpy_g(TRUE_PARAMS, centre)
    params = torch.tensor([TRUE_PARAMS], dtype=torch.float64)
    assert np.allclose(transforms.matrix_from_parameters(params, centre)[0].numpy(), g, atol=1e-12)
    warped, _ = tn.warp_template(torch.from_numpy(template).double()[None, None], torch.from_numpy(g)[None], None)
    assert np.abs(warped[0, 0].numpy() - numpy_pull(template, g)).max() < 1e-6


def test_known_transform_of_a_phantom_is_recovered_by_g(kidney):
    """The network replaced by 9 free parameters: gradient descent from the identity on the squared
    difference to the template moved by known parameters finds those parameters."""
    template = torch.from_numpy(templates.mask_template(kidney))[None, None]
    centre = transforms.grid_centre(SHAPE)
    truth = torch.tensor([TRUE_PARAMS], dtype=torch.float32)
    target = tn.warp_template(template, transforms.matrix_from_parameters(truth, centre), None)[0]
    units = torch.tensor([1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])  # voxels vs radians / log scales
    raw = torch.zeros(1, 9, requires_grad=True)
    optimiser = torch.optim.Adam([raw], lr=0.05)
    for _ in range(300):
        warped, _ = tn.warp_template(template, transforms.matrix_from_parameters(raw * units, centre), None)
        loss = (warped - target).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    found = (raw * units).detach()
    recovered = tn.warp_template(template, transforms.matrix_from_parameters(found, centre), None)[0]
    assert dice(recovered[0, 0] >= 0.5, target[0, 0] >= 0.5) > 0.97
    found = found[0].numpy()
    assert np.abs(found[:3] - TRUE_PARAMS[:3]).max() < 0.2      # voxels
    assert np.abs(found[3:6] - TRUE_PARAMS[3:6]).max() < 0.03   # radians
    assert np.abs(found[6:] - TRUE_PARAMS[6:]).max() < 0.02     # log scales


def test_image_frame_warp_is_g_after_the_displacement(kidney):
    """frame "image": ψ(p) = G(p + u(p)), u on the output grid — recomputed in numpy, and the
    template sampled at ψ by scipy's map_coordinates (not grid_sample)."""
    template = templates.mask_template(kidney)
    g = numpy_g(TRUE_PARAMS, transforms.grid_centre(SHAPE))
    rng = np.random.default_rng(3)
    u = ndimage.gaussian_filter(rng.normal(0, 6, (3, *SHAPE)), (0, 3, 3, 3))  # smooth, a few voxels
    warped, psi = tn.warp_template(torch.from_numpy(template).double()[None, None], torch.from_numpy(g)[None],
                                   torch.from_numpy(u)[None], frame="image")
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in SHAPE], indexing="ij")
    moved = np.stack([x, y, z]) + u                                # p + u(p), (x, y, z) first
    expected = np.einsum("ij,jdhw->idhw", g[:3, :3], moved) + g[:3, 3, None, None, None]
    np.testing.assert_allclose(psi[0].permute(3, 0, 1, 2).numpy(), expected, atol=1e-10)
    sampled = ndimage.map_coordinates(template, expected[::-1], order=1, mode="grid-constant", cval=0.0)
    np.testing.assert_allclose(warped[0, 0].numpy(), sampled, atol=1e-6)
    # a constant u is a translation before G: the same as pulling through G·T(u)
    shift = np.eye(4)
    shift[:3, 3] = (1.5, -2.0, 0.5)
    constant = torch.tensor(shift[:3, 3]).view(1, 3, 1, 1, 1).expand(1, 3, *SHAPE)
    warped, _ = tn.warp_template(torch.from_numpy(template).double()[None, None], torch.from_numpy(g)[None],
                                 constant, frame="image")
    assert np.abs(warped[0, 0].numpy() - numpy_pull(template, g @ shift)).max() < 1e-6


def test_registration_branch_sees_the_template_where_g_placed_it(kidney):
    """The FieldNet's second input is φ0∘G on the coarse grid (coarse voxel c at full voxel c·ratio),
    checked against scipy; it changes with G, which the thesis' single convolution cannot see."""
    template = torch.from_numpy(templates.mask_template(kidney))
    config = tn.TemplateConfig(width=2, template_shape=SHAPE, global_width=4, local_branch="registration", local_width=4)
    net = tn.TemplateNet(config, template).eval()
    torch.nn.init.normal_(net.global_branch.parameters_conv.bias, std=0.3)  # some G, whatever the image
    seen = []
    net.local_branch.field_conv.register_forward_hook(lambda module, inputs, output: seen.append(inputs[1]))
    with torch.inference_mode():
        d = net.deform(torch.randn(1, 1, *SHAPE))
    g = d.matrix[0].double().numpy()
    coarse = [n // 2 for n in SHAPE]
    ratio = (SHAPE[0] - 1) / (coarse[0] - 1)
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float64) * ratio for n in coarse], indexing="ij")
    points = np.einsum("ij,jdhw->idhw", g[:3, :3], np.stack([x, y, z])) + g[:3, 3, None, None, None]
    expected = ndimage.map_coordinates(template.double().numpy(), points[::-1], order=1, mode="grid-constant", cval=0.0)
    assert seen[0].shape == (1, 1, *coarse)
    assert np.abs(d.parameters.numpy()).max() > 0.05
    np.testing.assert_allclose(seen[0][0, 0].numpy(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="local branch"):
        tn.TemplateConfig(local_branch="voxelmorph")


def test_loss_adds_the_dice_of_the_template_moved_by_g_alone(phantoms, kidney):
    """global_loss w: Dice loss of the whole warp + λ/2·mean|u|² + w·Dice loss of φ0∘G, the last
    recomputed with scipy's resampling and a numpy soft Dice."""
    template = templates.mask_template(kidney)
    config = tn.TemplateConfig(width=2, template_shape=SHAPE, global_width=4, local_branch="registration",
                               local_width=4, global_loss=0.7, penalty=0.05)
    net = tn.TemplateNet(config, torch.from_numpy(template)).eval()
    torch.manual_seed(1)
    torch.nn.init.normal_(net.global_branch.parameters_conv.bias, std=0.2)
    torch.nn.init.normal_(net.local_branch.field_conv.out.bias, std=0.5)
    target = torch.from_numpy(phantoms[0].labels[1]).float()[None, None]
    with torch.no_grad():
        d = net.deform(torch.from_numpy(phantoms[0].images[1])[None, None])
        loss = float(net.loss(d, target))

    def soft_dice_loss(p, y):
        return 1 - (2 * (p * y).sum() + 1e-6) / (p.sum() + y.sum() + 1e-6)

    y = target[0, 0].numpy().astype(np.float64)
    placed = numpy_pull(template.astype(np.float64), d.matrix[0].double().numpy())
    u = d.displacement.double().numpy()
    assert np.abs(u).max() > 0.1
    expected = (soft_dice_loss(d.probabilities[0, 0].double().numpy(), y) + 0.5 * 0.05 * (u ** 2).sum(1).mean()
                + 0.7 * soft_dice_loss(placed, y))
    assert loss == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="global loss"):
        tn.TemplateConfig(geometric=False, global_loss=1.0)


def test_warp_is_differentiable_gradcheck():
    torch.manual_seed(0)
    shape = (4, 5, 6)
    template = torch.from_numpy(ndimage.gaussian_filter(np.random.default_rng(0).random(shape), 1.0))[None, None]
    centre = transforms.grid_centre(shape)
    params = torch.tensor([[0.31, -0.22, 0.17, 0.05, -0.07, 0.11, 0.04, -0.03, 0.06]], dtype=torch.float64,
                          requires_grad=True)
    field = (0.13 * torch.randn(1, 3, *shape, dtype=torch.float64)).requires_grad_(True)

    for frame in ("template", "image"):
        def warp(p, u):
            return tn.warp_template(template, transforms.matrix_from_parameters(p, centre), u, frame=frame)[0]

        assert torch.autograd.gradcheck(warp, (params, field), eps=1e-6, atol=1e-5)


def test_local_branch_is_the_mean_filter_upsampling_and_gaussian_in_sequence():
    """§4.4.2 (plain displacement, no integration) against torch's own ops: 3x3x3 mean, trilinear
    upsampling, Gaussian with replicated edges."""
    from torch.nn import functional as F

    torch.manual_seed(0)
    v = torch.randn(2, 3, 10, 12, 8, dtype=torch.float64)
    out_shape, sigma = (20, 24, 16), 1.5
    reference = F.avg_pool3d(v, 3, stride=1, padding=1, count_include_pad=False)
    reference = F.interpolate(reference, size=out_shape, mode="trilinear", align_corners=True)
    x = torch.arange(-5, 6, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = 5
        reference = F.conv3d(F.pad(reference, pad, mode="replicate"), kernel.view(shape).expand(3, *shape[1:]), groups=3)
    branch = tn.LocalBranch(3, out_shape, v.shape[2:], sigma, steps=0)
    with torch.no_grad():
        torch.nn.init.dirac_(branch.field_conv.weight)  # v = the features
        u = branch(v.float())
    assert torch.allclose(u.double(), tn.FIELD_SCALE * reference, atol=1e-5)


def test_integrated_velocity_does_not_fold_where_the_plain_displacement_does():
    d, h, w = SHAPE
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in SHAPE], indexing="ij")
    r2 = (x - w / 2) ** 2 + (y - h / 2) ** 2 + (z - d / 2) ** 2
    field = np.zeros((1, 3, *SHAPE))
    field[0, 0] = -3 * (x - w / 2) * np.exp(-r2 / 36)  # folds as a displacement (see below)
    field[0, 1] = 4 * np.exp(-r2 / 50)                 # and a large shift
    field = torch.from_numpy(field)
    identity = torch.eye(4, dtype=torch.float64)[None]
    empty = torch.zeros(1, 1, *SHAPE, dtype=torch.float64)
    assert tn.folded_fraction(tn.warp_template(empty, identity, field)[1]).item() > 0
    integrated = tn.integrate_velocity(field, 7)
    assert tn.folded_fraction(tn.warp_template(empty, identity, integrated)[1]).item() == 0
    assert integrated[0, 1].max() > 3  # still a large deformation
    assert torch.equal(tn.integrate_velocity(torch.zeros_like(field), 7), torch.zeros_like(field))
    # a constant velocity integrates to the same constant displacement
    constant = torch.full_like(field, 0.7)
    assert torch.allclose(tn.integrate_velocity(constant, 5), constant, atol=1e-12)


# --- Jacobian and folding ------------------------------------------------------------------------

def test_jacobian_of_identity_is_one_and_of_a_scaling_the_product_of_scales():
    identity = tn.voxel_grid(SHAPE, torch.float64)[None]
    assert torch.allclose(tn.jacobian_determinant(identity), torch.ones(1, *SHAPE, dtype=torch.float64))
    params = torch.tensor([[0.5, -1, 2, 0.3, -0.2, 0.1, np.log(1.2), np.log(0.7), np.log(0.9)]], dtype=torch.float64)
    g = transforms.matrix_from_parameters(params, transforms.grid_centre(SHAPE))
    _, grid = tn.warp_template(torch.zeros(1, 1, *SHAPE, dtype=torch.float64), g, None)
    det = tn.jacobian_determinant(grid)
    assert torch.allclose(det, torch.full_like(det, 1.2 * 0.7 * 0.9), atol=1e-10)
    assert tn.folded_fraction(grid).item() == 0.0


def test_jacobian_of_an_affine_map_matches_numpy_determinant():
    a = np.array([[1.2, 0.1, -0.3], [0.3, 0.9, 0.2], [0.05, -0.1, 1.1]])
    grid = tn.voxel_grid((5, 6, 7), torch.float64)[None] @ torch.from_numpy(a).T + torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    assert torch.allclose(tn.jacobian_determinant(grid), torch.tensor(np.linalg.det(a), dtype=torch.float64), atol=1e-12)


def test_folded_field_is_detected():
    d, h, w = SHAPE
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in SHAPE], indexing="ij")
    r2 = (x - w / 2) ** 2 + (y - h / 2) ** 2 + (z - d / 2) ** 2
    # u_x = -3 (x - cx) near the centre: ∂ψx/∂x = 1 - 3 < 0 there, a fold
    u = np.zeros((1, 3, *SHAPE))
    u[0, 0] = -3 * (x - w / 2) * np.exp(-r2 / 36)
    _, grid = tn.warp_template(torch.zeros(1, 1, *SHAPE, dtype=torch.float64), torch.eye(4, dtype=torch.float64)[None],
                               torch.from_numpy(u))
    det = tn.jacobian_determinant(grid)
    # analytic determinant of ψ = p + u(p): 1 + ∂u_x/∂x
    analytic = 1 + (-3 * np.exp(-r2 / 36) * (1 - 2 * (x - w / 2) ** 2 / 36))
    inside = (slice(2, -2),) * 3
    assert np.abs(det[0].numpy()[inside] - analytic[inside]).max() < 0.1
    fraction = tn.folded_fraction(grid).item()
    assert 0 < fraction < 0.2
    assert fraction == pytest.approx((analytic <= 0).mean(), abs=0.01)


# --- output is one component ---------------------------------------------------------------------

def test_smooth_deformation_of_a_template_is_one_component(phantoms, kidney):
    torch.manual_seed(1)
    net = tn.TemplateNet(tn.TemplateConfig(width=2, template_shape=SHAPE, global_width=4),
                         torch.from_numpy(templates.mask_template(kidney))).eval()
    images = torch.from_numpy(np.concatenate([phantoms[0].images, phantoms[1].images]))[:, None]
    with torch.inference_mode():  # a random, non-trivial G and L: up to 1.5 voxels of displacement
        net.global_branch.parameters_conv.bias.copy_(torch.tensor([0.5, -0.4, 0.3, 0.4, -0.3, 0.2, 0.3, -0.2, 0.1]))
        net.local_branch.field_conv.weight.normal_(0, 1.0)
        net.local_branch.field_conv.weight *= 1.5 / net.deform(images).displacement.abs().max()
        d = net.deform(images)
    assert 1.0 < d.displacement.abs().max() < 2.5 and d.parameters.abs().max() == 2.0
    assert (tn.folded_fraction(d.grid) == 0).all()
    for output in d.probabilities[:, 0].numpy():
        assert ndimage.label(output >= 0.5)[1] == 1


# --- templates -----------------------------------------------------------------------------------

def test_mean_template_of_moved_copies_is_the_shape_at_the_mean_pose(kidney):
    mask = kidney > 0
    centroid, axes, spread = templates.moments(mask)
    # aligning a mask to its own moments returns it
    assert dice(templates.align_to(mask, centroid, axes, spread) >= 0.5, mask) > 0.97
    # two moved copies (opposite shifts, one also rotated) average back to the mask
    centre = transforms.grid_centre(SHAPE)
    copies = [numpy_pull(mask.astype(np.float32), numpy_g(params, centre)) >= 0.5
              for params in ((2, -1, 1, 0, 0, 0, 0, 0, 0), (-2, 1, -1, 0, 0, 0.15, 0, 0, 0))]
    assert dice(copies[0], copies[1]) < 0.7
    assert dice(templates.mean_template(copies) >= 0.5, mask) > 0.85
    # an aligned copy has the requested moments (checked with numpy's own moments)
    target_spread = spread * np.array([1.1, 0.9, 1.0])
    aligned = templates.align_to(copies[1], centroid, axes, target_spread) >= 0.5
    points = np.argwhere(aligned).astype(float)
    assert np.abs(points.mean(0) - centroid).max() < 0.3
    spreads = np.sqrt(np.linalg.eigvalsh(np.cov(points.T)))[::-1]
    assert np.abs(spreads / target_spread - 1).max() < 0.08


def test_mask_template_threshold_is_the_mask(kidney):
    template = templates.mask_template(kidney)
    assert template.dtype == np.float32 and 0 < template.min() and template.max() < 1
    assert np.array_equal(template >= 0.5, kidney > 0)
    # the logistic of the signed distance: a boundary voxel inside is sigmoid(0.5), outside sigmoid(-0.5)
    inside_edge = (kidney > 0) & ~ndimage.binary_erosion(kidney > 0)
    assert np.allclose(template[inside_edge], 1 / (1 + np.exp(-0.5)), atol=1e-6)


# --- augmentation --------------------------------------------------------------------------------

def test_augmentation_moves_image_and_label_together(phantoms):
    labels = torch.from_numpy(phantoms[0].labels.astype(np.float32))[:, None]
    images, moved = augment(labels.clone(), labels.clone(), np.random.default_rng(3), voxel_mm=8.0)
    assert set(torch.unique(moved).tolist()) <= {0.0, 1.0}
    assert dice((images >= 0.5).numpy(), moved.numpy()) > 0.97  # noise std 0.02 barely flips a voxel
    assert dice(moved.numpy(), labels.numpy()) < 0.99            # something moved
    ratio = moved.sum() / labels.sum()
    assert 0.7 < ratio < 1.4                                       # scaling std 0.05 per axis


# --- training, saving, loading -------------------------------------------------------------------

def test_train_save_load_round_trip_through_the_model_store(phantoms, kidney, tmp_path):
    from SegTuneCore.models import ModelStore

    config = tn.TemplateConfig(width=2, template_shape=SHAPE, global_width=4, template_kind="mean")
    settings = TemplateTrainSettings(epochs=1, batch_size=2, seed=0)
    network, metrics = train_template([phantoms[0], phantoms[1]], config, settings, torch.device("cpu"),
                                      test_sets=[phantoms[1]], output=tmp_path / "model", voxel_mm=8.0)
    assert metrics["single_component_children"] == 1.0 and metrics["folded_max_children"] == 0.0
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["task"] == "KidneyUS.segmentation" and meta["architecture"]["name"] == tn.ARCHITECTURE
    store = ModelStore(root=tmp_path / "store", bundled_dirs=[])
    entry = store.install(tmp_path / "model")
    segmenter = tn.load_template_segmenter(entry, "cpu", bf16=False, channels_last=False)
    assert torch.equal(segmenter.network.template, network.template)
    cube = phantoms[1].images[0]
    probability, info = segmenter(cube)
    with torch.inference_mode():
        expected = network.eval()(torch.from_numpy(cube)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(probability, expected, rtol=0, atol=1e-5)  # the body's inference form
    assert ndimage.label(probability >= 0.5)[1] == 1 and info["folded_fraction"] == 0.0
    assert set(info["parameters"]) == set(tn.PARAMETER_NAMES)
    # bf16 convolutions + channels_last_3d (the CPU default where supported): the warp stays fp32
    fast, _ = tn.load_template_segmenter(entry, "cpu", bf16=True, channels_last=True)(cube)
    assert fast.dtype == np.float32 and dice(fast >= 0.5, probability >= 0.5) > 0.95 and ndimage.label(fast >= 0.5)[1] == 1
    # an 80^3 cube (the pipeline's) is averaged onto the 40^3 model and the output comes back at 80^3
    big, _ = segmenter(np.repeat(np.repeat(np.repeat(cube, 2, 0), 2, 1), 2, 2))
    assert big.shape == (80, 80, 80) and dice(big[::2, ::2, ::2] >= 0.5, probability >= 0.5) > 0.95
    with pytest.raises(SegTuneError):
        segmenter(cube[:30])
    # --method picks the default of its own architecture: the U-Net stays the default, the template
    # model is found for `--method template`, and activating it makes it the default
    from pathlib import Path

    from KidneyUSLib.segmentation import resolve_model

    bundled = Path(tn.__file__).resolve().parent.parent / "Resources" / "Models"
    both = ModelStore(root=tmp_path / "both", bundled_dirs=[bundled])
    with pytest.raises(SegTuneError, match="no template model installed or bundled"):
        resolve_model(None, "template", both)
    installed = both.install(tmp_path / "model")
    assert resolve_model(None, None, both).version == resolve_model(None, "unet", both).version == "unet-default"
    assert resolve_model(None, "template", both).path == installed.path
    both.activate("KidneyUS.segmentation", installed.version)
    assert resolve_model(None, None, both).path == installed.path
    assert resolve_model(None, "unet", both).version == "unet-default"
    with pytest.raises(SegTuneError, match="not a 'template' one"):
        resolve_model("unet-default", "template", both)
    # bench-template's untrained U-Net beside this model has the model's body, whatever --width says
    import argparse

    from KidneyUSLib import bench_template

    pair = bench_template._networks(argparse.Namespace(template=str(tmp_path / "model"), unet=None, width=7),
                                    torch.device("cpu"))
    unet_side, template_side = pair(False)
    assert (unet_side.meta["architecture"]["width"], unet_side.meta["architecture"]["levels"]) == (2, config.levels)
    # a U-Net model is refused by the template loader; a tampered one by the store
    weights = tmp_path / "model" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(SegTuneError):
        tn.load_template_segmenter(tmp_path / "model", "cpu")


def test_evaluation_reports_components_folding_and_parameters(phantoms, kidney):
    net = tn.TemplateNet(tn.TemplateConfig(width=2, template_shape=SHAPE, global_width=4),
                         torch.from_numpy(templates.mask_template(kidney)))
    result = evaluate_cases(net, phantoms[1], torch.device("cpu"))
    assert result["components"] == [1] and result["folded"] == [0.0] and len(result["parameters"][0]) == 9
    assert result["dice"][0] == pytest.approx(dice(templates.mask_template(kidney) >= 0.5, phantoms[1].labels[0]), abs=1e-6)


# --- command line --------------------------------------------------------------------------------

def run_module(*args):
    return subprocess.run([sys.executable, "-m", "KidneyUSLib", "train", "--method", "template", *args],
                          capture_output=True, text=True, timeout=300)


def test_train_command_options_train_a_template_model(tmp_path, capsys):
    """`train --method template`: train_cli's options plus add_template_arguments, to train_from_args."""
    import argparse

    from KidneyUSLib import train_cli
    from KidneyUSLib.template_training import train_from_args

    parser = argparse.ArgumentParser()
    train_cli.configure(parser)
    assert all(action.dest in vars(parser.parse_args(["--output", "x"])) for action in parser._actions[1:])
    out = tmp_path / "model"
    args = parser.parse_args(["--adults", "2", "--children", "1", "--test-adults", "1", "--test-children", "1",
                              "--epochs", "1", "--width", "2", "--downsample", "2", "--output", str(out), "--json",
                              "--progress", "quiet", "--template", "mean", "--local-branch", "registration",
                              "--local-width", "4", "--global-loss", "0.5"])
    args.method = "template"
    assert train_from_args(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "template" and 0 <= result["metrics"]["dice_adults"] <= 1
    meta = json.loads((out / "model.json").read_text())
    assert meta["architecture"]["template_shape"] == [40, 40, 40] and meta["architecture"]["template_kind"] == "mean"
    assert meta["architecture"]["local_branch"] == "registration" and meta["architecture"]["local_width"] == 4
    assert meta["architecture"]["global_loss"] == 0.5
    segmenter = tn.load_template_segmenter(out, "cpu", bf16=False, channels_last=False)
    assert isinstance(segmenter.network.local_branch.field_conv, tn.FieldNet)
    trained = segmenter.network.local_branch.field_conv.out.weight
    assert trained.abs().max() > 0  # the field's last convolution left zero: it trained
    probability, info = segmenter(np.zeros((40, 40, 40), np.float32))
    assert ndimage.label(probability >= 0.5)[1] == 1 and info["folded_fraction"] == 0.0


def test_init_with_a_template_model_continues_training_it(tmp_path, capsys):
    """`--init TEMPLATE_MODEL`: the same architecture and template, its weights as the start, the
    loss weights of the new run; a model of another size is refused before training."""
    import argparse

    from KidneyUSLib import train_cli
    from KidneyUSLib.template_training import train_from_args
    from SegTuneCore.models import load_model

    parser = argparse.ArgumentParser()
    train_cli.configure(parser)
    common = ["--adults", "2", "--children", "1", "--epochs", "1", "--progress", "quiet", "--json"]

    def train(*extra):
        args = parser.parse_args([*common, *extra])
        args.method = "template"
        return train_from_args(args)

    first, second, small = tmp_path / "first", tmp_path / "second", tmp_path / "small"
    assert train("--width", "2", "--local-branch", "registration", "--local-width", "4", "--output", str(first)) == 0
    assert train("--width", "2", "--downsample", "2", "--output", str(small)) == 0
    with pytest.raises(SegTuneError, match=r"takes \(40, 40, 40\) cubes"):
        train("--init", str(small), "--output", str(second))
    assert not second.exists()
    assert train("--init", str(first), "--global-loss", "0.3", "--output", str(second)) == 0
    capsys.readouterr()
    before, meta_before = load_model(first)
    after, meta_after = load_model(second)
    assert meta_after["initial_model"]["sha256"] == meta_before["sha256"]
    assert meta_after["architecture"] == {**meta_before["architecture"], "global_loss": 0.3}
    assert torch.equal(after["template"], before["template"])
    assert any(not torch.equal(after[k], before[k]) for k in before if k.startswith("local_branch"))


def test_body_from_a_unet_computes_the_unets_own_features():
    """load_body_from_unet: the body's bottleneck is what the U-Net's encoder computes (captured by
    the U-Net's own bottleneck hook), and a U-Net of another width is refused."""
    from KidneyUSLib import unet

    torch.manual_seed(0)
    source = unet.UNet3D(unet.UNetConfig(width=2, levels=3, dropout=0.0)).eval()
    network = tn.TemplateNet(tn.TemplateConfig(width=2, levels=3, dropout=0.0, template_shape=(16, 16, 16))).eval()
    copied = network.load_body_from_unet(source.state_dict())
    assert copied == len(network.body.state_dict())
    x = torch.randn(1, 1, 16, 16, 16)
    captured = []
    with torch.no_grad():
        source.forward_logits(x, bottleneck=lambda f: captured.append(f) or f)
        bottleneck, _ = network.body(x)
    torch.testing.assert_close(bottleneck, captured[0])
    other = unet.UNet3D(unet.UNetConfig(width=4, levels=3)).state_dict()
    with pytest.raises(ValueError, match="does not match"):
        network.load_body_from_unet(other)


def test_probability_input_body_gives_the_unets_own_probability_to_both_branches():
    """probability_input: the body loaded from a U-Net returns that U-Net's sigmoid output
    (UNet3D's own forward), each 2x2x2 block of it reaches the field branch as 8 channels (checked
    against a numpy loop), and zero-initialised branches still return the template exactly."""
    from KidneyUSLib import unet

    torch.manual_seed(0)
    source = unet.UNet3D(unet.UNetConfig(width=2, levels=3, dropout=0.0)).eval()
    config = tn.TemplateConfig(width=2, levels=3, dropout=0.0, template_shape=(16, 16, 16), local_branch="registration",
                               local_width=4, probability_input=True)
    template = torch.from_numpy(templates.mask_template(np.pad(np.ones((6, 8, 4), bool), ((5, 5), (4, 4), (6, 6)))))
    network = tn.TemplateNet(config, template).eval()
    assert network.load_body_from_unet(source.state_dict()) == len(network.body.state_dict())
    assert "head.weight" in network.body.state_dict()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        bottleneck, features, probability = network.body(x)
        torch.testing.assert_close(probability, source(x))
        deformation = network.deform(x)
    torch.testing.assert_close(deformation.probabilities, template.expand(2, 1, 16, 16, 16), atol=1e-5, rtol=0)

    blocks = tn.space_to_depth(probability, 2).numpy()
    p = probability.numpy()
    expected = np.empty((2, 8, 8, 8, 8), np.float32)
    for i, (dz, dy, dx) in enumerate(np.ndindex(2, 2, 2)):
        expected[:, i] = p[:, 0, dz::2, dy::2, dx::2]
    np.testing.assert_array_equal(blocks, expected)
    seen = []
    network.local_branch.field_conv.reduce.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    network.global_branch.blocks.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        network.deform(x)
    global_input, field_input = seen  # the global branch runs first
    block_means = p[:, 0].reshape(2, 4, 4, 4, 4, 4, 4).mean(axis=(2, 4, 6))  # 4x4x4 blocks: the bottleneck grid
    np.testing.assert_allclose(global_input[:, bottleneck.shape[1]].numpy(), block_means, atol=1e-6)
    np.testing.assert_array_equal(field_input[:, features.shape[1]:].numpy(), expected)
    with pytest.raises(ValueError, match="probability"):
        network.deform_features(bottleneck, features)


def test_train_template_from_a_unet_with_a_frozen_body(tmp_path):
    """`train --method template --init UNET --freeze-body`: width and levels come from the U-Net,
    the body stays the U-Net's exactly, the branches train, model.json names the U-Net."""
    from safetensors.torch import load_file

    from KidneyUSLib import segmentation, unet

    torch.manual_seed(0)
    source = unet.UNet3D(unet.UNetConfig(width=2, levels=2, dropout=0.0))
    with torch.no_grad():  # non-trivial batch-norm statistics: a body left in train mode would change them
        for module in source.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    source_dir = training.save_network(tmp_path / "unet", source.eval(),
                                       {"task": segmentation.TASK, "architecture": source.config.to_dict()})
    out = tmp_path / "template"
    trained = run_module("--init", str(source_dir), "--freeze-body", "--probability-input", "--adults", "2", "--children", "1",
                         "--epochs", "1", "--width", "8", "--lr", "0.05", "--output", str(out), "--progress", "quiet")
    assert trained.returncode == 0, trained.stderr
    meta = json.loads((out / "model.json").read_text())
    assert meta["architecture"]["width"] == 2 and meta["architecture"]["levels"] == 2
    assert meta["initial_model"]["body_frozen"] is True and meta["architecture"]["probability_input"] is True
    tensors = load_file(out / "weights.safetensors")
    assert "body.head.weight" in tensors  # the U-Net's output layer, kept too
    reference = source.state_dict()
    body = {k[len("body."):]: v for k, v in tensors.items() if k.startswith("body.")}
    assert body and all(torch.equal(v.reshape(reference[k].shape), reference[k]) for k, v in body.items())
    heads = [v for k, v in tensors.items() if k.startswith("global_branch.parameters_conv.weight")]
    assert heads and heads[0].abs().sum() > 0  # started at zero, trained


@pytest.mark.parametrize("probability_input", [False, True])
def test_frozen_body_features_are_cached_once_with_augmented_copies(phantoms, probability_input):
    """cache_body_features: the first copy of every item is the body's output on the item itself
    (recomputed here; with probability_input the U-Net's probability too), the others are
    augmented; branches trained on the cache see the right labels."""
    from KidneyUSLib.template_training import body_is_frozen, cache_body_features

    torch.manual_seed(0)
    adults, children = phantoms
    network = tn.TemplateNet(tn.TemplateConfig(width=2, levels=2, dropout=0.0, template_shape=SHAPE,
                                               probability_input=probability_input),
                             torch.from_numpy(templates.mask_template(adults.labels[0])))
    network.body.requires_grad_(False)
    assert body_is_frozen(network)
    settings = TemplateTrainSettings(feature_copies=2)
    cache = cache_body_features(network, [adults, children], settings, torch.device("cpu"), 8.0, False,
                                np.random.default_rng(0))
    assert [len(c[-1]) for c in cache] == [2 * len(adults), 2 * len(children)]
    with torch.no_grad():
        outputs = network.body(torch.from_numpy(children.images[:1])[:, None])
    assert len(cache[1]) == len(outputs) + 1 == (4 if probability_input else 3)
    for cached, computed in zip(cache[1], outputs):  # stored in bf16
        torch.testing.assert_close(cached[0].float(), computed[0], atol=0.05, rtol=0.02)
    assert torch.equal(cache[1][-1][0, 0], torch.from_numpy(children.labels[0]).to(torch.uint8))
    assert not torch.equal(cache[0][-1][len(adults)], cache[0][-1][0])  # the augmented copy moved
    history = train_model(network, [adults, children], TemplateTrainSettings(epochs=2, batch_size=2, lr=0.01,
                                                                             feature_copies=2),
                          torch.device("cpu"), voxel_mm=8.0)
    assert len(history.train_loss) == 2 and all(np.isfinite(history.train_loss))
    assert network.global_branch.parameters_conv.weight.abs().sum() > 0


def test_cli_refuses_bad_input(tmp_path):
    bad = run_module("--adults", "2", "--no-geometric", "--no-deformation", "--output", str(tmp_path / "x"))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "error:" in bad.stderr
    assert not (tmp_path / "x").exists()
    missing = run_module("--output", str(tmp_path / "y"))
    assert missing.returncode == 2 and "--adults" in missing.stderr and not (tmp_path / "y").exists()
    crop = run_module("--adults", "2", "--crop", "48", "--output", str(tmp_path / "z"))
    assert crop.returncode == 2 and "--crop" in crop.stderr and not (tmp_path / "z").exists()
    frozen = run_module("--adults", "2", "--freeze-body", "--output", str(tmp_path / "f"))
    assert frozen.returncode == 2 and "--init" in frozen.stderr and not (tmp_path / "f").exists()
    coarse = run_module("--adults", "2", "--init", "unet-default", "--downsample", "2", "--output", str(tmp_path / "d"))
    assert coarse.returncode == 2 and "--downsample 1" in coarse.stderr and not (tmp_path / "d").exists()
    lazy = run_module("--adults", "2", "--no-geometric", "--global-loss", "1", "--output", str(tmp_path / "g"))
    assert lazy.returncode == 2 and "--global-loss" in lazy.stderr and not (tmp_path / "g").exists()
    foreign = run_module("--adults", "2", "--init", "v999", "--output", str(tmp_path / "v"))
    assert foreign.returncode != 0 and "v999" in foreign.stderr and not (tmp_path / "v").exists()


def test_template_segmenter_in_the_segmentation_pipeline_returns_the_label_on_the_native_grid():
    """An untrained network (G = identity, u = 0) whose template is the phantom's own cube label:
    the pipeline (canonical 4 mm cube -> template -> native grid) gives back the native label."""
    from KidneyUSLib.phantom import generate_phantom, generate_training_pair
    from KidneyUSLib.segmentation import segment_volume

    volume, label = generate_phantom("adult", 0, size=(100, 100, 100))
    template = templates.mask_template(generate_training_pair("adult", 0)[1])
    net = tn.TemplateNet(tn.TemplateConfig(width=2, global_width=4), torch.from_numpy(template))
    segmenter = tn.TemplateSegmenter(net, {"architecture": net.architecture()}, torch.device("cpu"), False, False)
    infos = []

    def probability(cube):
        p, info = segmenter(cube)
        infos.append(info)
        return p

    result = segment_volume(volume, probability, largest_component=False)
    assert result.labels.shape == label.array.shape
    assert dice(result.labels, label.array) > 0.85  # 4 mm cube and back
    assert ndimage.label(result.labels)[1] == 1
    assert infos[0]["folded_fraction"] == 0.0 and infos[0]["min_jacobian"] == pytest.approx(1.0)


def test_template_segmenter_reports_whether_its_own_unet_bears_the_kidney_out():
    """With probability_input, unet_dice is the Dice of the warped template against the body's
    U-Net output (recomputed here with numpy from the trained form); a U-Net that sees no kidney
    gives 0 and a warning, one that sees kidney everywhere 2|T| / (|T| + N)."""
    from KidneyUSLib import unet
    from KidneyUSLib.phantom import generate_phantom, generate_training_pair
    from KidneyUSLib.segmentation import segment_volume

    template = templates.mask_template(generate_training_pair("adult", 0)[1])
    config = tn.TemplateConfig(width=2, global_width=4, dropout=0.0, probability_input=True)
    net = tn.TemplateNet(config, torch.from_numpy(template)).eval()
    torch.manual_seed(0)
    net.load_body_from_unet(unet.UNet3D(unet.UNetConfig(width=2, levels=config.levels, dropout=0.0)).state_dict())
    cube = np.random.default_rng(0).normal(size=config.template_shape).astype(np.float32)

    def numpy_dice(a, b):
        return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())

    x = torch.from_numpy(cube)[None, None]
    with torch.no_grad():  # the U-Net's bias moved so that it sees kidney in about half the cube
        net.body.head.bias -= torch.logit(net.body(x)[2]).median()
        outputs = net.body(x)
        warped = net.deform_features(*outputs).probabilities[0, 0].numpy() > 0.5
    seen = outputs[2][0, 0].numpy() > 0.5
    assert 0 < seen.sum() < seen.size
    segmenter = tn.TemplateSegmenter(net, {"architecture": net.architecture()}, torch.device("cpu"), False, False)
    assert segmenter(cube)[1]["unet_dice"] == pytest.approx(numpy_dice(warped, seen), abs=2e-3)

    volume, _ = generate_phantom("adult", 0, size=(100, 100, 100))
    for bias, expected in ((-30.0, 0.0), (30.0, numpy_dice(warped, np.ones_like(seen)))):
        net.body.head.bias.data.fill_(bias)
        segmenter = tn.TemplateSegmenter(net, {"architecture": net.architecture()}, torch.device("cpu"), False, False)
        result = segment_volume(volume, lambda c: segmenter(c), largest_component=False)
        assert result.network["unet_dice"] == pytest.approx(expected, abs=1e-4)
        assert result.labels.any()  # the template always draws a kidney: hence the check
        assert len(result.warnings) == 1 and f"Dice {expected:.2f}" in result.warnings[0]


def test_command_line_defaults_are_the_configuration_defaults():
    assert templates.DEFAULT_PENALTY == tn.TemplateConfig.penalty
    assert templates.DEFAULT_FIELD_LEVEL == tn.TemplateConfig.field_level
    assert templates.GLOBAL_POOLING[0] == tn.TemplateConfig.global_pooling
    assert templates.LOCAL_BRANCHES[0] == tn.TemplateConfig.local_branch
    assert templates.DEFAULT_LOCAL_WIDTH == tn.TemplateConfig.local_width
    import argparse

    parser = argparse.ArgumentParser()
    templates.add_template_arguments(parser)
    defaults = parser.parse_args([])
    assert defaults.global_loss == tn.TemplateConfig.global_loss
    assert defaults.probability_input == tn.TemplateConfig.probability_input


def test_attention_pooling_starts_as_average_pooling_and_is_a_softmax_weighted_vote():
    """Zero attention logits: exactly the thesis' average of the 9 parameter maps. Trained logits:
    the softmax-weighted sum of the votes, recomputed here in numpy from the blocks' output."""
    torch.manual_seed(0)
    attention = tn.GlobalBranch(8, 6, "attention").eval()
    average = tn.GlobalBranch(8, 6, "average").eval()
    average.load_state_dict({k: v for k, v in attention.state_dict().items() if not k.startswith("attention_conv")})
    torch.nn.init.normal_(attention.parameters_conv.weight)
    average.parameters_conv.weight.data.copy_(attention.parameters_conv.weight)
    features = torch.randn(2, 8, 4, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(attention(features), average(features))
        torch.nn.init.normal_(attention.attention_conv.weight, std=3.0)
        pooled = attention(features).double().numpy()
        x = attention.blocks(torch.cat([features, tn.coordinate_channels(features)], dim=1)).double().numpy()
    flat = x.reshape(2, 6, -1)
    vote_w = attention.parameters_conv.weight.detach().double().numpy()[:, :, 0, 0, 0]
    votes = np.einsum("oc,bcn->bon", vote_w, flat) + attention.parameters_conv.bias.detach().double().numpy()[None, :, None]
    logits = np.einsum("c,bcn->bn", attention.attention_conv.weight.detach().double().numpy()[0, :, 0, 0, 0], flat)
    weights = np.exp(logits - logits.max(1, keepdims=True))
    weights /= weights.sum(1, keepdims=True)
    assert weights.max() > 2.0 / flat.shape[2]  # not the uniform average any more
    expected = np.einsum("bon,bn->bo", votes, weights) * np.array(tn.PARAMETER_SCALE)
    np.testing.assert_allclose(pooled, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        tn.TemplateConfig(global_pooling="max")


def test_models_without_pooling_or_local_branch_entries_load_as_the_thesis():
    architecture = tn.TemplateConfig(template_shape=(16, 16, 16)).to_dict()
    for key in ("global_pooling", "local_branch", "local_width"):
        del architecture[key]
    assert tn.TemplateConfig.from_dict(architecture).global_pooling == "average"
    network = tn.TemplateNet(tn.TemplateConfig.from_dict(architecture))
    assert network.global_branch.attention_conv is None
    assert isinstance(network.local_branch.field_conv, torch.nn.Conv3d) and network.field_frame == "template"


def test_segment_command_with_a_template_model_reports_folding(tmp_path):
    """`segment --method template`: one Kidney segment on the input grid, and the JSON says how
    many voxels folded and how many components the output has."""
    from KidneyUSLib.phantom import generate_phantom
    from SegTuneCore.geometry import read_segmentation, write_volume

    model = tmp_path / "model"
    trained = run_module("--adults", "2", "--children", "1", "--test-adults", "1", "--test-children", "1",
                         "--epochs", "1", "--width", "2", "--downsample", "2", "--output", str(model),
                         "--progress", "quiet")
    assert trained.returncode == 0, trained.stderr
    volume, _ = generate_phantom("adult", 5, size=(96, 96, 96), spacing=(1.0, 1.0, 1.0))
    write_volume(volume, tmp_path / "us.nrrd")
    out = subprocess.run([sys.executable, "-m", "KidneyUSLib", "segment", str(tmp_path / "us.nrrd"), "--output",
                          str(tmp_path / "k.seg.nrrd"), "--method", "template", "--model", str(model), "--device",
                          "cpu", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert 0.0 <= summary["template"]["folded_fraction"] < 1.0 and summary["template"]["components"] >= 0
    assert "unet_dice" not in summary["template"]  # no U-Net output inside this model to compare with
    printed = [line for line in out.stderr.splitlines() if line.startswith("warning: ")]
    assert printed == [f"warning: {warning}" for warning in summary["warnings"]]
    labels, segments = read_segmentation(tmp_path / "k.seg.nrrd")
    assert [s.name for s in segments] == ["Kidney"] and labels.array.shape == volume.array.shape
    refused = subprocess.run([sys.executable, "-m", "KidneyUSLib", "segment", str(tmp_path / "us.nrrd"), "--output",
                              str(tmp_path / "u.seg.nrrd"), "--method", "unet", "--model", str(model)],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and not (tmp_path / "u.seg.nrrd").exists()


def test_bench_template_times_both_segmenters_and_reports_their_ratio():
    """`bench-template --unet unet-default` (a bundled name, resolved by the store): one row per
    precision, the ratio is the template's median over the U-Net's, and the verdict follows it."""
    result = subprocess.run([sys.executable, "-m", "KidneyUSLib", "bench-template", "--unet", "unet-default",
                             "--width", "2", "--repeats", "1", "--size", "0", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["unet_model"] == "unet-default" and report["rows"]
    for row in report["rows"]:
        assert row["unet_s"] > 0 and row["template_s"] > 0
        assert row["ratio"] == pytest.approx(row["template_s"] / row["unet_s"])
    assert report["meets_target"] == all(row["ratio"] <= report["target_ratio"] for row in report["rows"])
    refused = subprocess.run([sys.executable, "-m", "KidneyUSLib", "bench-template", "--template", "unet-default"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "not a 'template' one" in refused.stderr


def test_experiment_template_trains_each_row_and_writes_the_table_and_figure(tmp_path):
    """`experiment template` at a toy scale: every requested row trained on the same data, the
    registration row's network is what its label says, and table, results and Fig. 4.4 are written."""
    import argparse

    from KidneyUSLib import experiments_template

    parser = argparse.ArgumentParser()
    experiments_template.configure(parser)
    figure = tmp_path / "params.png"
    args = parser.parse_args(["--methods", "geometric+deformation,geometric+registration", "--seeds", "1",
                              "--adults", "2", "--children", "1", "--test-adults", "2", "--test-children", "2",
                              "--width", "2", "--epochs", "1", "--time-budget", "0", "--output", str(tmp_path / "out"),
                              "--figure", str(figure)])
    assert experiments_template.run(args) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["runs"]) == {"geometric+deformation", "geometric+registration"}
    for method, runs in results["runs"].items():
        run = runs[0]
        assert run["epochs"] == 1 and len(run["adults"]["dice"]) == 2 and len(run["children"]["dice"]) == 2
        assert all(0 <= d <= 1 for d in run["adults"]["dice"] + run["children"]["dice"])
    registration = results["runs"]["geometric+registration"][0]["parameters"]
    thesis = results["runs"]["geometric+deformation"][0]["parameters"]
    assert registration > thesis  # the FieldNet
    table = (tmp_path / "out" / "table.md").read_text()
    assert experiments_template.METHODS["geometric+registration"] in table and table.count("\n") == 4
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["fig_4_4"]["adult_mean"] and len(results["fig_4_4"]["adult_mean"]) == 9
    with pytest.raises(SegTuneError, match="unknown"):
        experiments_template.run(parser.parse_args(["--methods", "voxelmorph", "--output", str(tmp_path / "x")]))


@pytest.mark.parametrize("largest_component", [False, True])
def test_the_reported_components_are_those_of_the_written_output(largest_component):
    from KidneyUSLib.segmentation import segment_volume
    from KidneyUSLib.selftest import phantom as native_phantom

    volume, _ = native_phantom("adult", oblique=False)

    def two_pieces(cube):  # a template segmenter's answer that a cut field of view splits in two
        probability = np.zeros(cube.shape, np.float32)
        probability[30:40, 30:40, 20:30] = 1.0
        probability[30:40, 30:40, 50:60] = 1.0
        return probability, {"folded_fraction": 0.0}

    result = segment_volume(volume, two_pieces, largest_component=largest_component)
    assert result.network["components"] == ndimage.label(result.labels)[1] == (1 if largest_component else 2)
