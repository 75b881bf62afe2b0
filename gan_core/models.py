"""Generator / discriminator pairs: DCGAN for images, MLP for low-dimensional points."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from gan_core.config import ModelConfig

IMAGE_SIZES = (8, 16, 32, 64)
IMAGE_CHANNELS = (1, 3)


class GeneratorBase(nn.Module):
    """Common surface of every generator, so callers never need to know the architecture."""

    z_dim: int
    out_shape: tuple[int, ...]

    def __init__(self, z_dim: int, out_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.z_dim = int(z_dim)
        self.out_shape = tuple(int(s) for s in out_shape)

    def sample_z(
        self, n: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Standard-normal latents. Drawn on the RNG's own device, then moved, so a CPU
        torch.Generator can seed CUDA runs reproducibly."""
        if device is None:
            device = next(self.parameters()).device
        draw_on = generator.device if generator is not None else device
        return torch.randn(n, self.z_dim, device=draw_on, generator=generator).to(device)


def _check_shape(arch: str, data_shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in data_shape)
    if arch == "mlp":
        if len(shape) != 1 or shape[0] < 1:
            raise ValueError(f"arch 'mlp' needs data_shape (d,) with d >= 1, got {shape}")
        return shape
    if arch == "dcgan":
        if len(shape) != 3:
            raise ValueError(f"arch 'dcgan' needs data_shape (C, H, W), got {shape}")
        c, h, w = shape
        if c not in IMAGE_CHANNELS:
            raise ValueError(f"arch 'dcgan' needs C in {IMAGE_CHANNELS}, got C={c}")
        if h != w or h not in IMAGE_SIZES:
            raise ValueError(f"arch 'dcgan' needs square images with H == W in {IMAGE_SIZES}, got {h}x{w}")
        return shape
    raise ValueError(f"unknown arch {arch!r}; expected 'dcgan' or 'mlp'")


def _n_resamples(size: int) -> int:
    # Both nets work on a 4x4 base; each stride-2 block doubles / halves the side.
    return int(math.log2(size // 4))


def init_weights(module: nn.Module) -> None:
    """DCGAN init (Radford et al.): N(0, 0.02) weights, zero bias, BN gamma ~ N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(GeneratorBase):
    def __init__(self, z_dim: int, width: int, data_shape: tuple[int, int, int]) -> None:
        super().__init__(z_dim, data_shape)
        c, h, _ = data_shape
        k = _n_resamples(h)
        ch = width * 2**k
        self.base_channels = ch
        # BN + ReLU on the projection too, as in DCGAN: keeps the first feature map well scaled.
        self.project = nn.Sequential(nn.Linear(z_dim, ch * 16), nn.Unflatten(1, (ch, 4, 4)), nn.BatchNorm2d(ch), nn.ReLU())
        blocks: list[nn.Module] = []
        for _ in range(k):
            blocks += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU()]
            ch //= 2
        self.blocks = nn.Sequential(*blocks)
        # A stride-1 3x3 conv to pixels: no checkerboard from a last transposed conv.
        self.to_pixels = nn.Sequential(nn.Conv2d(ch, c, 3, 1, 1), nn.Tanh())

    def forward(self, z: Tensor) -> Tensor:
        return self.to_pixels(self.blocks(self.project(z)))


class DCGANDiscriminator(nn.Module):
    def __init__(self, width: int, data_shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, _ = data_shape
        k = _n_resamples(h)
        ch = width
        # No BatchNorm anywhere: real and fake share one forward (batch stats would leak
        # between them) and WGAN-GP's per-sample gradient penalty is invalid with BN.
        layers: list[nn.Module] = [nn.Conv2d(c, ch, 3, 1, 1), nn.LeakyReLU(0.2)]
        for _ in range(k):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.LeakyReLU(0.2)]
            ch *= 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(ch * 16, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).squeeze(1)


def _mlp(d_in: int, width: int, depth: int, d_out: int, act: Callable[[], nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d_in if i == 0 else width, width), act()]
    layers.append(nn.Linear(width, d_out))
    return nn.Sequential(*layers)


class MLPGenerator(GeneratorBase):
    def __init__(self, z_dim: int, width: int, depth: int, data_shape: tuple[int]) -> None:
        super().__init__(z_dim, data_shape)
        # Linear output: point data is not bounded, so no tanh.
        self.net = _mlp(z_dim, width, depth, data_shape[0], nn.ReLU)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class MLPDiscriminator(nn.Module):
    def __init__(self, width: int, depth: int, data_shape: tuple[int]) -> None:
        super().__init__()
        self.net = _mlp(data_shape[0], width, depth, 1, lambda: nn.LeakyReLU(0.2))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


def _init_for(cfg: ModelConfig, module: nn.Module) -> None:
    # DCGAN init is tuned for conv stacks with BN; for narrow MLPs std 0.02 shrinks activations
    # ~10x per layer, so they keep PyTorch's fan-in scaled default.
    if cfg.arch == "dcgan":
        init_weights(module)


def build_generator(cfg: ModelConfig, data_shape: tuple[int, ...]) -> GeneratorBase:
    shape = _check_shape(cfg.arch, data_shape)
    g: GeneratorBase
    if cfg.arch == "dcgan":
        g = DCGANGenerator(cfg.z_dim, cfg.width, shape)  # type: ignore[arg-type]
    else:
        g = MLPGenerator(cfg.z_dim, cfg.width, cfg.depth, shape)  # type: ignore[arg-type]
    _init_for(cfg, g)
    return g


def build_discriminator(cfg: ModelConfig, data_shape: tuple[int, ...]) -> nn.Module:
    shape = _check_shape(cfg.arch, data_shape)
    d: nn.Module
    if cfg.arch == "dcgan":
        d = DCGANDiscriminator(cfg.width, shape)  # type: ignore[arg-type]
    else:
        d = MLPDiscriminator(cfg.width, cfg.depth, shape)  # type: ignore[arg-type]
    _init_for(cfg, d)
    return d
