"""Hyper-parameter schedules over a run: the lr multiplier at a point of training, and writing the
resulting lrs (and Adam's betas) into the optimisers every epoch."""
from __future__ import annotations

from torch.optim import Optimizer

from gan_core.config import ResolvedOptim


def lr_scale(r: ResolvedOptim, progress: float) -> float:
    """The lr multiplier at `progress` (share of training done, 0..1): 1 until lr_decay_start, then
    linear down to 1% at the end (annealing the lr sharpens the modes: bench/RESULTS.md section 1)."""
    if r.lr_decay_start is None or progress <= r.lr_decay_start:
        return 1.0
    frac = (progress - r.lr_decay_start) / (1.0 - r.lr_decay_start)
    return max(1.0 - frac, 0.01)


def progress(epoch: int, horizon: int) -> float:
    """Share of a schedule laid over `horizon` epochs done at 0-based `epoch`. Epochs past the horizon
    hold its last value: a run extended beyond its schedule keeps the lr it ended with, never jumps back."""
    return min(epoch, horizon - 1) / horizon


def set_hyperparams(opt_g: Optimizer, opt_d: Optimizer, optim: ResolvedOptim, scale: float = 1.0) -> None:
    """Write the lrs (times `scale`, an lr schedule's factor) and Adam's betas into the optimisers.
    Needed after loading an optimiser state: it carries the lr it was saved with, which PBT's mutated
    values or a schedule must override."""
    for opt, lr in ((opt_g, optim.lr_g), (opt_d, optim.lr_d)):
        for group in opt.param_groups:
            group["lr"] = lr * scale
            if "betas" in group:
                group["betas"] = tuple(optim.betas)
