"""Template deformation segmenter (thesis §4.4): the network moves a kidney template onto the image.

The output is the template φ0 pulled back through ψ = L∘G (eq. 4.7): φ(p) = φ0(L(G(p))) for
every voxel p of the output cube, with
- G = T·C+·Rz·Ry·Rx·S·C− (eq. 4.8, transforms.py) from 9 parameters (translation in voxels,
  rotations in radians, log scales) predicted from the U-Net body's lowest level by two 3x3x3
  convolution blocks (the capacity §4.7 asks for, with CoordConv coordinate channels so the
  pooled features can see position) and a 1x1x1 convolution with 9 filters followed by global
  average pooling (§4.4.1). G maps output voxels into the template's voxels (pull form): scale
  parameters above 0 sample the template more widely, i.e. *shrink* it.
- L = Id + u in the template referential: v from a 3x3x3 convolution with 3 filters on a coarse
  decoder level, a 3x3x3 mean filter, trilinear upsampling to the template grid and a Gaussian
  filter K_σ (eq. 4.9, §4.4.2); u is evaluated at G(p), so ψ(p) = G(p) + u(G(p)) exactly.
  `local_branch="registration"` (not in the thesis) predicts v instead with a small two-level
  convolution net from the features *and the template as G placed it*, and lets L act on the
  image grid where those features are: ψ = G∘L, ψ(p) = G(p + u(p)) (Mory et al. 2012's order).
`probability_input` (not in the thesis) runs the body to the U-Net's own output layer and gives
its kidney probability to both branches, so the template is fitted to what the U-Net sees while
keeping the template's topology.
Both heads start at zero, so a fresh network returns the template itself.

The loss is Dice + λ/2·mean|u|² (eq. 4.10 plus the L2 penalty of eq. 4.11). `jacobian_determinant`
of ψ (central differences, exact for affine maps) gives the folded voxels (det <= 0): where ψ is
a diffeomorphism the output has the template's topology — one connected component.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from . import transforms, unet
from .templates import DEFAULT_LOCAL_WIDTH, GLOBAL_POOLING, KINDS, LOCAL_BRANCHES
from .unet import ConvBlock
from .unet_inference import InferenceUNet3D

ARCHITECTURE = "template-deformation"
PARAMETER_NAMES = ("tx", "ty", "tz", "rx", "ry", "rz", "log_sx", "log_sy", "log_sz")
# Head output -> parameter units (voxels, radians, log scale): one unit of output is a plausible
# range of each, so Adam's step size suits them all.
PARAMETER_SCALE = (4.0, 4.0, 4.0, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25)
FIELD_SCALE = 4.0  # field head output -> template voxels (the mean and Gaussian filters shrink it)


@dataclass(frozen=True)
class TemplateConfig:
    width: int = 8
    levels: int = 4
    dropout: float = 0.1
    geometric: bool = True        # predict G (False: G is the identity, "deformation only")
    deformation: bool = True      # predict L (False: L is the identity)
    field_level: int = 1          # U-Net decoder level of the displacement field (0 = full resolution)
    field_sigma: float = 2.0      # Gaussian K_σ on the upsampled field, in template voxels
    global_width: int = 32        # channels of the two convolution blocks before the 9 parameters
    global_pooling: str = "average"  # of the 9 parameter maps: "average" (thesis) or "attention"
    penalty: float = 0.01         # λ of eq. 4.11 (per voxel, displacements in voxels)
    integration_steps: int = 6    # scaling-and-squaring steps of the field (0: the thesis' plain displacement)
    template_shape: tuple[int, int, int] = (80, 80, 80)
    template_kind: str = "mask"   # "mask" (one training mask) or "mean" (aligned mean shape)
    local_branch: str = "thesis"  # "thesis": one conv, ψ = L∘G; "registration": FieldNet, ψ = G∘L
    local_width: int = DEFAULT_LOCAL_WIDTH  # channels of the registration branch's FieldNet
    global_loss: float = 0.0      # weight of the Dice of φ0∘G alone (0: the thesis' loss only)
    probability_input: bool = False  # the body runs to the U-Net's output; its probability feeds both branches

    def __post_init__(self):
        if not (self.geometric or self.deformation):
            raise ValueError("a template network needs the geometric and/or the deformation branch")
        if self.width < 1 or self.levels < 2 or not 0 <= self.field_level < self.levels:
            raise ValueError(f"width {self.width}, levels {self.levels} and field level {self.field_level} need "
                             f"width >= 1, levels >= 2 and 0 <= field level < levels")
        # a model.json is checksummed only through its weights: its numbers are checked here
        if not 0.0 <= self.dropout < 1.0 or not math.isfinite(self.penalty) or self.penalty < 0:
            raise ValueError(f"dropout {self.dropout} must lie in [0, 1) and penalty {self.penalty} be >= 0")
        if not (math.isfinite(self.field_sigma) and self.field_sigma > 0) or self.integration_steps < 0:
            raise ValueError(f"field sigma {self.field_sigma} must be > 0 and integration steps "
                             f"{self.integration_steps} >= 0")
        if self.template_kind not in KINDS:
            raise ValueError(f"unknown template kind {self.template_kind!r} (use {' or '.join(KINDS)})")
        if self.global_pooling not in GLOBAL_POOLING:
            raise ValueError(f"unknown global pooling {self.global_pooling!r} (use {' or '.join(GLOBAL_POOLING)})")
        if self.global_loss < 0 or (self.global_loss > 0 and not self.geometric):
            raise ValueError(f"global loss weight {self.global_loss} needs the geometric branch and must be >= 0")
        if self.local_branch not in LOCAL_BRANCHES or self.local_width < 1:
            raise ValueError(f"unknown local branch {self.local_branch!r} or width {self.local_width} "
                             f"(use {' or '.join(LOCAL_BRANCHES)}, width >= 1)")
        divisor = 2 ** (self.levels - 1)
        if len(self.template_shape) != 3 or any(n % divisor for n in self.template_shape):
            raise ValueError(f"template shape {self.template_shape} must be 3 multiples of {divisor}")

    def to_dict(self) -> dict:
        return {"name": ARCHITECTURE, **asdict(self), "template_shape": list(self.template_shape)}

    @classmethod
    def from_dict(cls, architecture: dict) -> "TemplateConfig":
        fields = {k: architecture[k] for k in cls.__dataclass_fields__ if k in architecture}
        if "template_shape" in fields:
            fields["template_shape"] = tuple(int(n) for n in fields["template_shape"])
        return cls(**fields)

    @property
    def divisor(self) -> int:
        return 2 ** (self.levels - 1)


@dataclass
class Deformation:
    """What the network did to the template for a batch."""

    probabilities: torch.Tensor          # [B, 1, D, H, W] the warped template
    parameters: torch.Tensor             # [B, 9] in PARAMETER_NAMES units
    matrix: torch.Tensor                 # [B, 4, 4] G, output voxel -> template voxel
    displacement: torch.Tensor | None    # [B, 3, D, H, W] u in voxels (x, y, z) of its frame, None without L
    grid: torch.Tensor                   # [B, D, H, W, 3] ψ(p) in template voxels (x, y, z)


class UNetBody(nn.Module):
    """The U-Net of unet.py (same blocks and widths) cut at the decoder level of the field, or
    whole, output layer included, with `probability_input`."""

    def __init__(self, config: TemplateConfig):
        super().__init__()
        w, n = config.width, config.levels
        self.field_level = config.field_level
        self.encoders = nn.ModuleList()
        in_ch = 1
        for level in range(n):
            mid, out = w * 2 ** level, w * 2 ** (level + 1)
            self.encoders.append(nn.ModuleList([ConvBlock(in_ch, mid), ConvBlock(mid, out)]))
            in_ch = out
        self.bottleneck_channels = in_ch
        self.decoders = nn.ModuleList()
        lowest = 0 if config.probability_input else config.field_level if config.deformation else n - 1
        for level in reversed(range(lowest, n - 1)):
            out = w * 2 ** (level + 1)
            self.decoders.append(nn.ModuleList([ConvBlock(in_ch + out, out), ConvBlock(out, out)]))
            in_ch = out
        self.field_channels = w * 2 ** (config.field_level + 1)
        # named as the U-Net's output layer, so load_body_from_unet copies it
        self.head = nn.Conv3d(in_ch, 1, 1) if config.probability_input else None
        self.dropout = nn.Dropout3d(config.dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(bottleneck features, features at the field level[, the U-Net's kidney probability])."""
        skips = []
        for level, (first, second) in enumerate(self.encoders):
            if level:
                x = F.max_pool3d(x, 2)
            x = self.dropout(second(first(x)))
            skips.append(x)
        bottleneck = field = x
        for level, (first, second), skip in zip(reversed(range(len(skips) - 1)), self.decoders, reversed(skips[:-1])):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = self.dropout(second(first(torch.cat([x, skip], dim=1))))
            if level == self.field_level:
                field = x
        if self.head is None:
            return bottleneck, field
        return bottleneck, field, torch.sigmoid(self.head(x).float())


class InferenceBody(nn.Module):
    """A trained UNetBody's outputs from its inference form (unet_inference): for segmenting."""

    def __init__(self, body: UNetBody):
        super().__init__()
        self.net = InferenceUNet3D(body)
        levels = list(reversed(range(len(body.encoders) - 1)))[:len(body.decoders)]
        self.field_index = levels.index(body.field_level) if body.field_level in levels else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        bottleneck, outputs = self.net.features(x)
        field = bottleneck if self.field_index is None else outputs[self.field_index]
        if self.net.head is None:
            return bottleneck, field
        return bottleneck, field, torch.sigmoid(self.net.head(outputs[-1]).float())


def space_to_depth(x: torch.Tensor, factor: int) -> torch.Tensor:
    """[B, C, D, H, W] -> [B, C·factor³, D/f, H/f, W/f]: every f³ block as channels, losslessly."""
    b, c, d, h, w = x.shape
    x = x.reshape(b, c, d // factor, factor, h // factor, factor, w // factor, factor)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * factor ** 3, d // factor, h // factor, w // factor)


def _zero_conv(in_channels: int, out_channels: int, kernel: int) -> nn.Conv3d:
    conv = nn.Conv3d(in_channels, out_channels, kernel, padding=kernel // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def coordinate_channels(like: torch.Tensor) -> torch.Tensor:
    """[B, 3, D, H, W] normalised (x, y, z) coordinates in [-1, 1] (CoordConv)."""
    b, _, d, h, w = like.shape
    axes = [torch.linspace(-1, 1, n, dtype=like.dtype, device=like.device) for n in (d, h, w)]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([x, y, z])[None].expand(b, 3, d, h, w)


class GlobalBranch(nn.Module):
    """Bottleneck features -> 9 parameters: 2 conv blocks, 1x1x1 conv with 9 filters, pooling.

    "average": the thesis' global average pooling. "attention": a weighted average whose weights
    are a softmax over positions of one more 1x1x1 convolution; its zero start gives uniform
    weights, i.e. exactly average pooling. With the coordinate channels, the votes can be
    positions, so the kidney's location is a softmax-weighted centroid instead of something an
    average over the whole cube has to encode.
    """

    def __init__(self, in_channels: int, width: int, pooling: str = "average"):
        super().__init__()
        if pooling not in GLOBAL_POOLING:
            raise ValueError(f"unknown global pooling {pooling!r} (use {' or '.join(GLOBAL_POOLING)})")
        self.blocks = nn.Sequential(ConvBlock(in_channels + 3, width), ConvBlock(width, width))
        self.parameters_conv = _zero_conv(width, transforms.N_PARAMETERS, 1)
        self.attention_conv = _zero_conv(width, 1, 1) if pooling == "attention" else None
        self.register_buffer("scale", torch.tensor(PARAMETER_SCALE), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.blocks(torch.cat([features, coordinate_channels(features)], dim=1))
        votes = self.parameters_conv(x).float().flatten(2)  # [B, 9, positions]
        if self.attention_conv is None:
            return votes.mean(2) * self.scale
        weights = torch.softmax(self.attention_conv(x).float().flatten(2), dim=2)  # [B, 1, positions]
        return (votes * weights).sum(2) * self.scale


def gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def filter_matrix(size: int, weights: torch.Tensor) -> torch.Tensor:
    """[size, size] matrix of a centred 1D filter with replicated edges: out = M @ in."""
    radius = weights.numel() // 2
    m = torch.zeros(size, size, dtype=torch.float64)
    rows = torch.arange(size)
    for offset, w in zip(range(-radius, radius + 1), weights):
        m.index_put_((rows, (rows + offset).clamp(0, size - 1)), w.expand(size).clone(), accumulate=True)
    return m


def mean_matrix(size: int) -> torch.Tensor:
    """[size, size] 3-tap mean without padding (each output averages the neighbours that exist)."""
    m = filter_matrix(size, torch.ones(3, dtype=torch.float64))
    m[0, 0] = m[-1, -1] = 1.0  # no replicated edge: the window is cut
    return m / m.sum(1, keepdim=True)


def upsampling_matrix(size: int, coarse: int) -> torch.Tensor:
    """[size, coarse] linear interpolation with the corners aligned (as F.interpolate, align_corners=True)."""
    eye = torch.eye(coarse, dtype=torch.float64)[:, None, :]
    return F.interpolate(eye, size=size, mode="linear", align_corners=True)[:, 0, :].T


def apply_separable(field_: torch.Tensor, matrices: Sequence[torch.Tensor]) -> torch.Tensor:
    """[B, C, d, h, w] -> [B, C, D, H, W] with matrices ([D, d], [H, h], [W, w]) along each axis."""
    md, mh, mw = (m.to(field_.dtype) for m in matrices)
    x = mh @ (field_ @ mw.T)                                   # [B, C, d, H, W]
    b, c, d, h, w = x.shape
    return (md @ x.reshape(b, c, d, h * w)).reshape(b, c, md.shape[0], h, w)


def integrate_velocity(velocity: torch.Tensor, steps: int) -> torch.Tensor:
    """Displacement of exp(v) by scaling and squaring (Arsigny et al. 2006, Dalca et al. 2018):
    u ← v/2^steps, then `steps` times u ← u + u∘(Id + u). Velocity and result [B, 3, d, h, w] in
    voxels (x, y, z) of their own grid; zero stays exactly zero."""
    shape = velocity.shape[2:]
    grid = voxel_grid(shape, velocity.dtype, velocity.device)
    displacement = velocity / 2 ** steps
    for _ in range(steps):
        points = to_normalised(grid + displacement.permute(0, 2, 3, 4, 1), shape)
        displacement = displacement + F.grid_sample(displacement, points, mode="bilinear", padding_mode="border",
                                                    align_corners=transforms.ALIGN_CORNERS)
    return displacement


class FieldNet(nn.Module):
    """Features and the template as G placed it, both on the coarse grid -> v (3 channels).

    The thesis' single convolution sees only the image's features, so it cannot know where the
    template's boundary lies: the displacement it must predict depends on G, which changes from
    image to image. This two-level U-Net of `width` channels sees both, as a registration network
    sees its moving and fixed images. Its last convolution starts at zero (L = Id).
    """

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.reduce = nn.Conv3d(in_channels, width, 1)  # the body's many channels, cheaply
        self.encoder = nn.Sequential(ConvBlock(width + 1, width), ConvBlock(width, width))
        self.lower = nn.Sequential(ConvBlock(width, 2 * width), ConvBlock(2 * width, 2 * width))
        self.decoder = ConvBlock(3 * width, width)
        self.out = _zero_conv(width, 3, 3)

    def forward(self, features: torch.Tensor, placed: torch.Tensor) -> torch.Tensor:
        x = self.encoder(torch.cat([self.reduce(features), placed.to(features.dtype)], dim=1))
        lower = F.interpolate(self.lower(F.max_pool3d(x, 2)), size=x.shape[2:], mode="nearest")
        return self.out(self.decoder(torch.cat([x, lower], dim=1)))


class LocalBranch(nn.Module):
    """Field-level features -> u [B, 3, D, H, W] on the template grid (§4.4.2).

    v (3x3x3 conv, 3 filters; or a FieldNet of `width` channels that also takes the placed
    template) -> 3x3x3 mean filter -> [exp(v) by scaling and squaring, on the coarse grid, when
    `steps` > 0] -> trilinear upsampling -> Gaussian K_σ. With steps = 0 this is the thesis'
    plain displacement field; integrating a velocity keeps L invertible in the continuous limit,
    the guarantee the plain field lacks. With a few steps on the coarse grid, very large velocities
    can still fold a little: `segment` measures and reports the folded fraction
    (docs/KidneyUS-template.md).
    """

    def __init__(self, in_channels: int, shape: Sequence[int], coarse_shape: Sequence[int], sigma: float,
                 steps: int = 0, width: int | None = None):
        super().__init__()
        self.field_conv = _zero_conv(in_channels, 3, 3) if width is None else FieldNet(in_channels, width)
        self.steps = steps
        self.coarse_shape = tuple(coarse_shape)
        for axis, (n, c) in enumerate(zip(shape, coarse_shape)):
            self.register_buffer(f"mean_{axis}", mean_matrix(c).float(), persistent=False)
            smooth_up = filter_matrix(n, gaussian_kernel(sigma)) @ upsampling_matrix(n, c)
            self.register_buffer(f"upsample_{axis}", smooth_up.float(), persistent=False)
        # template voxels per coarse voxel along x, y, z (corners aligned)
        ratio = [(n - 1) / max(c - 1, 1) for n, c in zip(shape[::-1], coarse_shape[::-1])]
        self.register_buffer("ratio", torch.tensor(ratio).view(1, 3, 1, 1, 1), persistent=False)

    def coarse_points(self) -> torch.Tensor:
        """[d, h, w, 3] the coarse grid's voxels in voxels (x, y, z) of the full grid."""
        return voxel_grid(self.coarse_shape, self.ratio.dtype, self.ratio.device) * self.ratio.view(3)

    def forward(self, features: torch.Tensor, placed: torch.Tensor | None = None) -> torch.Tensor:
        v = self.field_conv(features) if placed is None else self.field_conv(features, placed)
        with torch.autocast(v.device.type, enabled=False):  # the field is always fp32
            v = FIELD_SCALE * apply_separable(v.float(), (self.mean_0, self.mean_1, self.mean_2))
            if self.steps:
                v = integrate_velocity(v / self.ratio, self.steps) * self.ratio
            return apply_separable(v, (self.upsample_0, self.upsample_1, self.upsample_2))


def voxel_grid(shape: Sequence[int], dtype=torch.float32, device=None) -> torch.Tensor:
    """[D, H, W, 3] voxel coordinates (x, y, z) of every voxel."""
    d, h, w = shape
    z, y, x = torch.meshgrid(*[torch.arange(n, dtype=dtype, device=device) for n in (d, h, w)], indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def to_normalised(points: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Voxel (x, y, z) -> grid_sample's normalised coordinates for a grid of `shape` (D, H, W)."""
    n = transforms.voxel_to_normalised(shape, dtype=points.dtype, device=points.device)
    return points @ n[:3, :3].T + n[:3, 3]


def apply_affine(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """G [B, 4, 4] applied to voxel points [..., 3] or [B, ..., 3] (x, y, z) -> [B, ..., 3]."""
    points = points.expand(matrix.shape[0], *points.shape[-4:])
    return torch.einsum("bij,bdhwj->bdhwi", matrix[:, :3, :3], points) + matrix[:, None, None, None, :3, 3]


def pull(template: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """The template [1 or B, 1, D', H', W'] at points [B, D, H, W, 3] in its voxels (x, y, z); 0 outside."""
    source = template.to(points.dtype).expand(points.shape[0], *template.shape[1:])
    return F.grid_sample(source, to_normalised(points, template.shape[2:]), mode="bilinear",
                         padding_mode="zeros", align_corners=transforms.ALIGN_CORNERS)


def warp_template(template: torch.Tensor, matrix: torch.Tensor, displacement: torch.Tensor | None,
                  output_shape: Sequence[int] | None = None, frame: str = "template") -> tuple[torch.Tensor, torch.Tensor]:
    """φ0∘ψ: (warped [B, 1, D, H, W], ψ grid [B, D, H, W, 3] in template voxels).

    template [1, 1, D', H', W'] (or [B, ...]); matrix G [B, 4, 4] from output to template voxels;
    displacement u [B, 3, ...] in voxels, or None. frame "template" (eq. 4.7): u on the template
    grid, ψ = L∘G, ψ(p) = G(p) + u(G(p)). frame "image": u on the output grid, ψ = G∘L,
    ψ(p) = G(p + u(p)).
    """
    shape = tuple(output_shape or template.shape[2:])
    p = voxel_grid(shape, matrix.dtype, matrix.device)
    if displacement is not None and frame == "image":
        p = p + displacement.to(matrix.dtype).permute(0, 2, 3, 4, 1)
    psi = apply_affine(matrix, p)
    if displacement is not None and frame == "template":
        u = F.grid_sample(displacement.to(psi.dtype), to_normalised(psi, template.shape[2:]), mode="bilinear",
                          padding_mode="border", align_corners=transforms.ALIGN_CORNERS)
        psi = psi + u.permute(0, 2, 3, 4, 1)
    return pull(template, psi), psi


def jacobian_determinant(grid: torch.Tensor) -> torch.Tensor:
    """det ∂ψ/∂p [B, D, H, W] of a map ψ given on the voxels as [B, D, H, W, 3] (x, y, z).

    Central differences inside, one-sided at the border: exact where ψ is affine.
    """
    dx, dy, dz = torch.gradient(grid, dim=(3, 2, 1))  # columns of ∂ψ/∂p
    return (dx[..., 0] * (dy[..., 1] * dz[..., 2] - dz[..., 1] * dy[..., 2])
            - dy[..., 0] * (dx[..., 1] * dz[..., 2] - dz[..., 1] * dx[..., 2])
            + dz[..., 0] * (dx[..., 1] * dy[..., 2] - dy[..., 1] * dx[..., 2]))


def folded_fraction(grid: torch.Tensor) -> torch.Tensor:
    """[B] share of voxels where ψ folds (Jacobian determinant <= 0)."""
    return (jacobian_determinant(grid) <= 0).flatten(1).float().mean(1)


class TemplateNet(nn.Module):
    """Image [B, 1, D, H, W] -> the template warped onto it (probabilities [B, 1, D, H, W])."""

    def __init__(self, config: TemplateConfig = TemplateConfig(), template: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        self.body = UNetBody(config)
        extra = (1, 8 ** config.field_level) if config.probability_input else (0, 0)  # probability channels
        self.global_branch = (GlobalBranch(self.body.bottleneck_channels + extra[0], config.global_width,
                                           config.global_pooling) if config.geometric else None)
        coarse = tuple(n // 2 ** config.field_level for n in config.template_shape)
        self.local_branch = (LocalBranch(self.body.field_channels + extra[1], config.template_shape, coarse,
                                         config.field_sigma, config.integration_steps, self.field_net_width)
                             if config.deformation else None)
        if template is None:
            template = torch.zeros(config.template_shape)
        template = torch.as_tensor(template, dtype=torch.float32)
        if tuple(template.shape) != config.template_shape:
            raise ValueError(f"template shape {tuple(template.shape)} differs from the configuration's {config.template_shape}")
        self.register_buffer("template", template.clone())

    @property
    def field_net_width(self) -> int | None:
        return self.config.local_width if self.config.local_branch == "registration" else None

    @property
    def field_frame(self) -> str:
        return "image" if self.config.local_branch == "registration" else "template"

    def deform(self, image: torch.Tensor) -> Deformation:
        if tuple(image.shape[2:]) != self.config.template_shape:
            raise ValueError(f"input {tuple(image.shape[2:])} must have the template's shape {self.config.template_shape}")
        return self.deform_features(*self.body(image))

    def deform_features(self, bottleneck: torch.Tensor, features: torch.Tensor,
                        probability: torch.Tensor | None = None) -> Deformation:
        """The two branches and the warp on the body's output (a frozen body's output can be cached).

        With `probability_input` the U-Net's kidney probability joins the bottleneck (averaged to
        its grid) and the field features (each 2^field_level block as channels: no detail lost).
        """
        if self.config.probability_input:
            if probability is None:
                raise ValueError("this template network's branches take the U-Net's probability")
            probability = probability.to(bottleneck.dtype)
            bottleneck = torch.cat([bottleneck, F.avg_pool3d(probability, self.config.divisor)], dim=1)
            features = torch.cat([features, space_to_depth(probability, 2 ** self.config.field_level)], dim=1)
        if self.global_branch is not None:
            params = self.global_branch(bottleneck)
        else:
            params = torch.zeros(bottleneck.shape[0], transforms.N_PARAMETERS, device=bottleneck.device)
        template = self.template[None, None]
        with torch.autocast(bottleneck.device.type, enabled=False):  # transforms and sampling in fp32
            g = transforms.matrix_from_parameters(params.float(), transforms.grid_centre(self.config.template_shape))
        u = None
        if self.local_branch is not None:
            placed = None
            if self.field_net_width is not None:  # the template where G put it, an input like an image
                with torch.no_grad(), torch.autocast(bottleneck.device.type, enabled=False):
                    placed = pull(template, apply_affine(g, self.local_branch.coarse_points()))
            u = self.local_branch(features, placed)
        with torch.autocast(bottleneck.device.type, enabled=False):
            warped, grid = warp_template(template, g, u, frame=self.field_frame)
        return Deformation(warped, params, g, u, grid)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.deform(image).probabilities

    def loss(self, deformation: Deformation, target: torch.Tensor) -> torch.Tensor:
        """Dice loss (eq. 4.10) + λ/2·mean |u|² (eq. 4.11) [+ w·Dice loss of φ0∘G].

        The last term (not in the thesis, `global_loss` = w) asks G alone to place the template:
        with the Dice of the whole warp only, the field can do all the work and G stays near a
        constant (Dice of φ0∘G 0.2–0.4 measured), leaving the field displacements of 10+ voxels.
        """
        loss = unet.dice_loss(deformation.probabilities, target)
        if self.config.global_loss > 0:
            with torch.autocast(target.device.type, enabled=False):
                placed, _ = warp_template(self.template[None, None], deformation.matrix, None)
            loss = loss + self.config.global_loss * unet.dice_loss(placed, target)
        if deformation.displacement is not None and self.config.penalty > 0:
            loss = loss + 0.5 * self.config.penalty * deformation.displacement.pow(2).sum(1).mean()
        return loss

    def load_body_from_unet(self, unet_tensors: dict[str, torch.Tensor]) -> int:
        """Start the body from a trained plain U-Net of the same width and levels (its encoder and
        the decoder levels down to the field's share names and shapes); returns the tensors copied."""
        body = self.body.state_dict()
        missing = [k for k in body if k not in unet_tensors]
        # numel, not shape: the model store keeps 0-d tensors (num_batches_tracked) as 1-d
        wrong = [k for k in body if k in unet_tensors and unet_tensors[k].numel() != body[k].numel()]
        if missing or wrong:
            raise ValueError(f"the U-Net does not match the template body ({len(missing)} tensors missing, "
                             f"{len(wrong)} of another shape, e.g. {(missing or wrong)[0]})")
        self.body.load_state_dict({k: unet_tensors[k].reshape(body[k].shape) for k in body}, strict=True)
        return len(body)

    def architecture(self) -> dict:
        return self.config.to_dict()

    @classmethod
    def from_architecture(cls, architecture: dict) -> "TemplateNet":
        return cls(TemplateConfig.from_dict(architecture))


# --- inference ----------------------------------------------------------------------------------

class TemplateSegmenter:
    """cube (the network frame, any multiple of the template's shape) -> (probability cube, info).

    info: folded_fraction (share of voxels where det ∂ψ/∂p <= 0), min_jacobian, the 9 global
    parameters by name, the template kind, and with `probability_input` unet_dice: the Dice of the
    warped template against the body's own U-Net output, both at 0.5 (`segment_volume` adds the
    components of the output and warns when unet_dice is low).
    """

    def __init__(self, network: TemplateNet, meta: dict, device: torch.device,
                 bf16: bool | None = None, channels_last: bool | None = None):
        from SegTuneCore.device import capabilities

        caps = capabilities(device)
        self.network = network.to(device).eval()
        self.body = InferenceBody(self.network.body)
        self.meta = meta
        self.device = device
        self.bf16 = caps["bf16"] if bf16 is None else bf16  # the convolutions; the warp stays fp32
        self.channels_last = caps["channels_last_3d"] if channels_last is None else channels_last
        if self.channels_last:
            self.body.to(memory_format=torch.channels_last_3d)

    @property
    def precision(self) -> str:
        return ("bf16" if self.bf16 else "fp32") + ("+channels_last_3d" if self.channels_last else "")

    def __call__(self, cube) -> tuple["np.ndarray", dict]:
        import numpy as np

        from SegTuneCore.errors import SegTuneError

        cube = np.asarray(cube)
        shape = self.network.config.template_shape
        if cube.ndim != 3:
            raise SegTuneError(f"the network takes a 3D cube, got shape {cube.shape}")
        factors = {n // m for n, m in zip(cube.shape, shape)}
        if len(factors) != 1 or any(n % m for n, m in zip(cube.shape, shape)) or 0 in factors:
            raise SegTuneError(f"cube {cube.shape} is not a whole multiple of the template's {shape}")
        if not np.isfinite(cube).all():
            raise SegTuneError("the cube contains NaN or infinite values")
        factor = factors.pop()
        x = torch.from_numpy(np.ascontiguousarray(cube, dtype=np.float32))[None, None].to(self.device)
        with torch.inference_mode():
            if factor > 1:
                x = F.avg_pool3d(x, factor)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                body_outputs = self.body(x)
                deformation = self.network.deform_features(*body_outputs)
            det = jacobian_determinant(deformation.grid)
            probabilities = deformation.probabilities
            # a template always yields a kidney; the U-Net inside says whether the image shows one
            agreement = (float(unet.dice_score(probabilities > 0.5, body_outputs[2] > 0.5)[0])
                         if len(body_outputs) == 3 else None)
            if factor > 1:
                probabilities = F.interpolate(probabilities, size=cube.shape, mode="trilinear",
                                              align_corners=transforms.ALIGN_CORNERS)
        probability = probabilities[0, 0].float().cpu().numpy()
        info = {
            "folded_fraction": float((det <= 0).float().mean()),
            "min_jacobian": float(det.min()),
            "parameters": dict(zip(PARAMETER_NAMES, (round(v, 6) for v in deformation.parameters[0].tolist()))),
            "template": self.network.config.template_kind,
        }
        if agreement is not None:
            info["unet_dice"] = round(agreement, 4)
        return probability, info


def load_template_segmenter(entry_or_folder, device: torch.device | str = "auto", **precision) -> TemplateSegmenter:
    """entry_or_folder: a SegTuneCore.models.ModelEntry or a model folder; checksum, task and
    architecture are verified before any tensor is used."""
    from pathlib import Path

    from SegTuneCore.device import select_device
    from SegTuneCore.errors import SegTuneError
    from SegTuneCore.models import load_model

    from .inference import TASK

    if isinstance(device, str):
        device = select_device(device)
    folder = Path(getattr(entry_or_folder, "path", entry_or_folder))
    tensors, meta = load_model(folder, task=TASK, architecture=ARCHITECTURE)
    try:
        network = TemplateNet.from_architecture(meta["architecture"])
        network.load_state_dict(tensors, strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise SegTuneError(f"{folder}: weights do not match the architecture in model.json ({str(exc).splitlines()[0]})") from None
    return TemplateSegmenter(network, meta, device, **precision)
