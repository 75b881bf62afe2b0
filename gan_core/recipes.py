"""Optimiser recipes: each loss's published defaults, filled into the None fields of OptimConfig.
Explicit values in params.yaml always win; a field left out takes the recipe of the chosen loss."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from gan_core.config import LOSS_NAMES, LossConfig, OptimConfig

OptimizerName = Literal["adam", "rmsprop"]


@dataclass(frozen=True)
class ResolvedOptim:
    optimizer: OptimizerName
    lr_g: float
    lr_d: float
    betas: tuple[float, float]  # Adam only; RMSprop ignores it
    n_critic: int
    lr_decay_start: float | None = None  # see OptimConfig; None = constant lr


# DCGAN (Radford et al. 2016): Adam 2e-4, beta1 0.5. Also the usual choice for LSGAN and f-GAN.
DCGAN = ResolvedOptim("adam", 2e-4, 2e-4, (0.5, 0.999), 1)
# WGAN (Arjovsky et al. 2017, Alg. 1): RMSprop 5e-5, 5 critic steps; momentum destabilised the
# critic there. The clip c = 0.01 lives in LossConfig. Betas only matter if adam is forced.
WGAN = ResolvedOptim("rmsprop", 5e-5, 5e-5, (0.5, 0.999), 5)
# WGAN-GP (Gulrajani et al. 2017, Alg. 1): Adam 1e-4, betas (0, 0.9), 5 critic steps.
WGAN_GP = ResolvedOptim("adam", 1e-4, 1e-4, (0.0, 0.9), 5)
# Hinge as in SAGAN (Zhang et al. 2019) / BigGAN: TTUR (Heusel et al. 2017) lr_d = 4 lr_g, one D step.
HINGE = ResolvedOptim("adam", 1e-4, 4e-4, (0.0, 0.9), 1)

RECIPES: dict[str, ResolvedOptim] = {
    name: {"wgan": WGAN, "wgan-gp": WGAN_GP, "hinge": HINGE}.get(name, DCGAN) for name in LOSS_NAMES
}


def resolve(loss: LossConfig, optim: OptimConfig) -> ResolvedOptim:
    """The recipe of `loss.name` with every explicitly set field of `optim` laid over it."""
    explicit = {k: v for k, v in optim.model_dump().items() if v is not None}
    if "betas" in explicit:
        explicit["betas"] = tuple(explicit["betas"])
    return replace(RECIPES[loss.name], **explicit)


def lr_scale(r: ResolvedOptim, progress: float) -> float:
    """The lr multiplier at `progress` (share of training done, 0..1): 1 until lr_decay_start, then
    linear down to 1% at the end (annealing the lr sharpens the modes: bench/RESULTS.md section 1)."""
    if r.lr_decay_start is None or progress <= r.lr_decay_start:
        return 1.0
    frac = (progress - r.lr_decay_start) / (1.0 - r.lr_decay_start)
    return max(1.0 - frac, 0.01)


def describe(r: ResolvedOptim) -> str:
    """One line for logs, e.g. 'adam lr_g=0.0001 lr_d=0.0004 betas=(0.0, 0.9) n_critic=1'."""
    betas = f" betas={r.betas}" if r.optimizer == "adam" else ""
    decay = f" lr decay after {r.lr_decay_start:.0%}" if r.lr_decay_start is not None else ""
    return f"{r.optimizer} lr_g={r.lr_g:g} lr_d={r.lr_d:g}{betas} n_critic={r.n_critic}{decay}"
