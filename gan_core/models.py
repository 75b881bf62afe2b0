"""Generator / discriminator pairs: DCGAN and ResNet (SNGAN-style) for images, MLP for points.

Every pair can be class-conditional (conditional batch norm / embedding in G, projection D) and
D can be spectrally normalised; `build_generator` / `build_discriminator` are the entry points.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from gan_core.config import ModelConfig
from gan_core.sizes import NATIVE_SIZES, base_side

IMAGE_CHANNELS = (1, 3)
ARCHS = ("dcgan", "resnet", "mlp")


def _check_labels(y: Tensor | None, num_classes: int | None, n: int) -> None:
    """Labels must be given exactly when the model is conditional: silently ignoring them (or
    inventing them) would train a different model than the config says."""
    if num_classes is None:
        if y is not None:
            raise ValueError("this model is unconditional but got labels y; set model.conditional: true "
                             "(and model.num_classes) to use them, or call it without y")
        return
    if y is None:
        raise ValueError(f"this model is conditional (num_classes={num_classes}) and needs labels y")
    if y.shape != (n,) or y.is_floating_point():
        raise ValueError(f"labels y must be integer class ids of shape ({n},), got {tuple(y.shape)} {y.dtype}")


class GeneratorBase(nn.Module):
    """Common surface of every generator, so callers never need to know the architecture."""

    z_dim: int
    out_shape: tuple[int, ...]
    num_classes: int | None

    def __init__(self, z_dim: int, out_shape: tuple[int, ...], num_classes: int | None = None) -> None:
        super().__init__()
        self.z_dim = int(z_dim)
        self.out_shape = tuple(int(s) for s in out_shape)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.class_names: list[str] | None = None  # set from the registered bundle (checkpoint.generator_from_state)
        self.class_shares: list[float] | None = None  # the data's class mix (ModelConfig.class_shares); None: equal

    def _draw_on(
        self, device: torch.device | str | None, generator: torch.Generator | None
    ) -> tuple[torch.device | str, torch.device | str]:
        if device is None:
            device = next(self.parameters()).device
        return (generator.device if generator is not None else device), device

    def sample_z(
        self, n: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Standard-normal latents. Drawn on the RNG's own device, then moved, so a CPU
        torch.Generator can seed CUDA runs reproducibly."""
        draw_on, device = self._draw_on(device, generator)
        return torch.randn(n, self.z_dim, device=draw_on, generator=generator).to(device)

    def sample_labels(
        self, n: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> Tensor | None:
        """Class ids drawn from the data's class shares (uniform when unknown; drawn like sample_z), or
        None for an unconditional generator, so callers can always write G(G.sample_z(n), G.sample_labels(n))."""
        if self.num_classes is None:
            return None
        draw_on, device = self._draw_on(device, generator)
        if self.class_shares is None:
            return torch.randint(self.num_classes, (n,), device=draw_on, generator=generator).to(device)
        shares = torch.tensor(self.class_shares, dtype=torch.float64, device=draw_on)
        return torch.multinomial(shares, n, replacement=True, generator=generator).to(device)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose affine gamma/beta are looked up per class (de Vries et al. 2017; SNGAN/BigGAN G).
    Starts as the identity affine (gamma 1, beta 0), i.e. exactly an unconditional BN."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gamma = nn.Embedding(num_classes, num_features)
        self.beta = nn.Embedding(num_classes, num_features)
        self.reset_affine()

    def reset_affine(self) -> None:
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.gamma(y)[:, :, None, None] * self.bn(x) + self.beta(y)[:, :, None, None]


def _bn(ch: int, num_classes: int | None) -> nn.Module:
    return nn.BatchNorm2d(ch) if num_classes is None else ConditionalBatchNorm2d(ch, num_classes)


def _norm(bn: nn.Module, x: Tensor, y: Tensor | None) -> Tensor:
    return bn(x, y) if isinstance(bn, ConditionalBatchNorm2d) else bn(x)


class _LabelledSequential(nn.Sequential):
    """nn.Sequential that hands y to its conditional BNs: same layout (and state_dict keys) as a
    plain Sequential when unconditional, so old DCGAN checkpoints still load."""

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:  # type: ignore[override]
        for m in self:
            x = _norm(m, x, y)
        return x


class _Projection(nn.Module):
    """Projection head (Miyato & Koyama 2018): linear(h) + <embed(y), h>. The inner product
    makes the class evidence explicit instead of making D learn it from a concatenated one-hot."""

    def __init__(self, features: int, num_classes: int | None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed = None if num_classes is None else nn.Embedding(num_classes, features)

    def init_embed(self) -> None:
        if self.embed is not None:
            nn.init.xavier_uniform_(self.embed.weight)  # as SNGAN; N(0, 1) would swamp linear(h)

    def forward(self, h: Tensor, score: Tensor, y: Tensor | None) -> Tensor:
        _check_labels(y, self.num_classes, h.shape[0])
        if self.embed is None:
            return score
        return score + (self.embed(y) * h).sum(1)  # type: ignore[arg-type]


def _check_shape(arch: str, data_shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in data_shape)
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    if arch == "mlp":
        if len(shape) != 1 or shape[0] < 1:
            raise ValueError(f"arch 'mlp' needs data_shape (d,) with d >= 1, got {shape}")
        return shape
    if len(shape) != 3:
        raise ValueError(f"arch {arch!r} needs data_shape (C, H, W), got {shape}")
    c, h, w = shape
    if c not in IMAGE_CHANNELS:
        raise ValueError(f"arch {arch!r} needs C in {IMAGE_CHANNELS}, got C={c}")
    if h != w or h not in NATIVE_SIZES:
        raise ValueError(f"arch {arch!r} needs square images with H == W in {NATIVE_SIZES}, got {h}x{w}")
    return shape


def _num_classes(cfg: ModelConfig) -> int | None:
    if cfg.conditional == "auto":  # a truthy string: unrefused, it would build a conditional pair silently
        raise ValueError("model.conditional is 'auto': resolve it against the data's classes before building")
    if not cfg.conditional:
        return None
    if cfg.num_classes is None:
        raise ValueError("model.conditional is true but model.num_classes is not set")
    return cfg.num_classes


def init_weights(module: nn.Module) -> None:
    """DCGAN init (Radford et al.): N(0, 0.02) weights, zero bias, BN gamma ~ N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def init_resnet(module: nn.Module) -> None:
    """SNGAN init: Xavier-uniform, gain sqrt(2) on the residual 3x3 convs (they feed ReLUs),
    gain 1 on shortcuts / linear layers; zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            gain = math.sqrt(2.0) if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) else 1.0
            nn.init.xavier_uniform_(m.weight, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# --- DCGAN -------------------------------------------------------------------------------------

class DCGANGenerator(GeneratorBase):
    def __init__(self, z_dim: int, width: int, data_shape: tuple[int, int, int],
                 num_classes: int | None = None) -> None:
        super().__init__(z_dim, data_shape, num_classes)
        c, h, _ = data_shape
        b, k = base_side(h)
        ch = width * 2**k
        self.base_channels = ch
        # BN + ReLU on the projection too, as in DCGAN: keeps the first feature map well scaled.
        self.project = _LabelledSequential(
            nn.Linear(z_dim, ch * b * b), nn.Unflatten(1, (ch, b, b)), _bn(ch, num_classes), nn.ReLU())
        blocks: list[nn.Module] = []
        for _ in range(k):
            blocks += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), _bn(ch // 2, num_classes), nn.ReLU()]
            ch //= 2
        self.blocks = _LabelledSequential(*blocks)
        # A stride-1 3x3 conv to pixels: no checkerboard from a last transposed conv.
        self.to_pixels = nn.Sequential(nn.Conv2d(ch, c, 3, 1, 1), nn.Tanh())

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        _check_labels(y, self.num_classes, z.shape[0])
        return self.to_pixels(self.blocks(self.project(z, y), y))


class DCGANDiscriminator(nn.Module):
    def __init__(self, width: int, data_shape: tuple[int, int, int], num_classes: int | None = None) -> None:
        super().__init__()
        c, h, _ = data_shape
        b, k = base_side(h)
        ch = width
        # No BatchNorm anywhere: real and fake share one forward (batch stats would leak
        # between them) and WGAN-GP's per-sample gradient penalty is invalid with BN.
        layers: list[nn.Module] = [nn.Conv2d(c, ch, 3, 1, 1), nn.LeakyReLU(0.2)]
        for _ in range(k):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.LeakyReLU(0.2)]
            ch *= 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(ch * b * b, 1)
        self.proj = _Projection(ch * b * b, num_classes)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.features(x)
        return self.proj(h, self.head(h).squeeze(1), y)


# --- ResNet (SNGAN / WGAN-GP style) -------------------------------------------------------------
# Constant `width` channels in every block, as in SNGAN's CIFAR nets (which use 128-256): a doubling
# of resolution adds one block instead of doubling channels, so width 32 stays CPU-sized (~80k
# params at 32 px) and width 128 is paper-sized (~1M).

def _up2(x: Tensor) -> Tensor:
    # nearest, not transposed conv: no checkerboard artefacts (Odena et al. 2016)
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class _UpBlock(nn.Module):
    """BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3, plus an upsample-conv1x1 shortcut."""

    def __init__(self, ch: int, num_classes: int | None) -> None:
        super().__init__()
        self.bn1, self.conv1 = _bn(ch, num_classes), nn.Conv2d(ch, ch, 3, 1, 1)
        self.bn2, self.conv2 = _bn(ch, num_classes), nn.Conv2d(ch, ch, 3, 1, 1)
        self.shortcut = nn.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        h = _up2(F.relu(_norm(self.bn1, x, y)))
        h = self.conv2(F.relu(_norm(self.bn2, self.conv1(h), y)))
        return h + self.shortcut(_up2(x))


class _DownBlock(nn.Module):
    """(ReLU)-conv3x3-ReLU-conv3x3-avgpool, plus a conv1x1-avgpool shortcut. The first block has no
    leading ReLU: applied to the raw image it would just discard the negative pixel values."""

    def __init__(self, c_in: int, ch: int, first: bool) -> None:
        super().__init__()
        self.first = first
        self.conv1, self.conv2 = nn.Conv2d(c_in, ch, 3, 1, 1), nn.Conv2d(ch, ch, 3, 1, 1)
        self.shortcut = nn.Conv2d(c_in, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(x if self.first else F.relu(x))
        h = F.avg_pool2d(self.conv2(F.relu(h)), 2)
        return h + F.avg_pool2d(self.shortcut(x), 2)


class ResNetGenerator(GeneratorBase):
    def __init__(self, z_dim: int, width: int, data_shape: tuple[int, int, int],
                 num_classes: int | None = None) -> None:
        super().__init__(z_dim, data_shape, num_classes)
        c, h, _ = data_shape
        b, k = base_side(h)
        self.project = nn.Sequential(nn.Linear(z_dim, width * b * b), nn.Unflatten(1, (width, b, b)))
        self.blocks = nn.ModuleList(_UpBlock(width, num_classes) for _ in range(k))
        self.bn_out = _bn(width, num_classes)
        self.to_pixels = nn.Sequential(nn.ReLU(), nn.Conv2d(width, c, 3, 1, 1), nn.Tanh())

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        _check_labels(y, self.num_classes, z.shape[0])
        h = self.project(z)
        for block in self.blocks:
            h = block(h, y)
        return self.to_pixels(_norm(self.bn_out, h, y))


class ResNetDiscriminator(nn.Module):
    def __init__(self, width: int, data_shape: tuple[int, int, int], num_classes: int | None = None) -> None:
        super().__init__()
        c, h, _ = data_shape
        # No BatchNorm, for the same reasons as the DCGAN D.
        self.blocks = nn.Sequential(
            *(_DownBlock(c if i == 0 else width, width, first=i == 0) for i in range(base_side(h)[1])))
        self.head = nn.Linear(width, 1)
        self.proj = _Projection(width, num_classes)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        # Global *sum* pooling, as SNGAN: under spectral norm, mean pooling would also shrink
        # the score range by 1/(H*W) and starve D of dynamic range.
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        return self.proj(h, self.head(h).squeeze(1), y)


# --- MLP ---------------------------------------------------------------------------------------

def _mlp(d_in: int, width: int, depth: int, d_out: int, act: Callable[[], nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d_in if i == 0 else width, width), act()]
    layers.append(nn.Linear(width, d_out))
    return nn.Sequential(*layers)


class MLPGenerator(GeneratorBase):
    def __init__(self, z_dim: int, width: int, depth: int, data_shape: tuple[int],
                 num_classes: int | None = None) -> None:
        super().__init__(z_dim, data_shape, num_classes)
        # No BN to condition here, so the label enters as a learned z_dim-sized embedding next to z.
        self.embed = None if num_classes is None else nn.Embedding(num_classes, z_dim)
        # Linear output: point data is not bounded, so no tanh.
        self.net = _mlp(z_dim * (1 if num_classes is None else 2), width, depth, data_shape[0], nn.ReLU)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        _check_labels(y, self.num_classes, z.shape[0])
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], dim=1)  # type: ignore[arg-type]
        return self.net(z)


class MLPDiscriminator(nn.Module):
    def __init__(self, width: int, depth: int, data_shape: tuple[int], num_classes: int | None = None) -> None:
        super().__init__()
        self.net = _mlp(data_shape[0], width, depth, 1, lambda: nn.LeakyReLU(0.2))
        self.proj = _Projection(width, num_classes)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.net[:-1](x)  # last hidden activations: the features the projection looks at
        return self.proj(h, self.net[-1](h).squeeze(1), y)


# --- entry points ------------------------------------------------------------------------------

def _init_for(cfg: ModelConfig, module: nn.Module) -> None:
    # DCGAN init is tuned for conv stacks with BN; for narrow MLPs std 0.02 shrinks activations
    # ~10x per layer, so they keep PyTorch's fan-in scaled default.
    if cfg.arch == "dcgan":
        init_weights(module)
    elif cfg.arch == "resnet":
        init_resnet(module)
    for m in module.modules():  # after the generic inits, which must not clobber these
        if isinstance(m, ConditionalBatchNorm2d):
            m.reset_affine()
        elif isinstance(m, _Projection):
            m.init_embed()


def _spectral_normalise(module: nn.Module) -> None:
    """Every Conv2d / Linear / Embedding (the projection) divided by its largest singular value,
    estimated by one power iteration per training forward (Miyato et al. 2018)."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            spectral_norm(m)


def build_generator(cfg: ModelConfig, data_shape: tuple[int, ...]) -> GeneratorBase:
    shape = _check_shape(cfg.arch, data_shape)
    k = _num_classes(cfg)
    g: GeneratorBase
    if cfg.arch == "dcgan":
        g = DCGANGenerator(cfg.z_dim, cfg.width, shape, k)  # type: ignore[arg-type]
    elif cfg.arch == "resnet":
        g = ResNetGenerator(cfg.z_dim, cfg.width, shape, k)  # type: ignore[arg-type]
    else:
        g = MLPGenerator(cfg.z_dim, cfg.width, cfg.depth, shape, k)  # type: ignore[arg-type]
    _init_for(cfg, g)
    g.class_shares = cfg.class_shares if k else None
    return g


def build_discriminator(cfg: ModelConfig, data_shape: tuple[int, ...]) -> nn.Module:
    """D(x, y=None) -> raw scores of shape (N,)."""
    shape = _check_shape(cfg.arch, data_shape)
    k = _num_classes(cfg)
    d: nn.Module
    if cfg.arch == "dcgan":
        d = DCGANDiscriminator(cfg.width, shape, k)  # type: ignore[arg-type]
    elif cfg.arch == "resnet":
        d = ResNetDiscriminator(cfg.width, shape, k)  # type: ignore[arg-type]
    else:
        d = MLPDiscriminator(cfg.width, cfg.depth, shape, k)  # type: ignore[arg-type]
    _init_for(cfg, d)
    if cfg.spectral_norm:
        _spectral_normalise(d)  # after init: SN's power iteration starts from the final weights
    return d
