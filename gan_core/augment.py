"""Differentiable augmentation of D's inputs for small datasets: DiffAugment (Zhao et al. 2020) and
ADA's adaptive probability (Karras et al. 2020).

D sees aug(real) and aug(G(z)), never the raw images, so it cannot memorise the few real ones;
the ops are differentiable, so G learns through them. Because both sides are augmented, G is
pushed to match the real distribution itself, not its augmented copy (the ops do not "leak" into
G's samples as long as they are applied with p < 1 or are invertible in distribution; ADA Sec. 2).

Ops act on NCHW images in [-1, 1], as DiffAugment's reference code (0 = mid-grey fill):
  translation  shift by up to 1/8 of the side in x and y, zero-padded
  cutout       zero a square of half the side at a random centre
  color        brightness (+U(-0.5, 0.5)), saturation (x U(0, 2), RGB only), contrast (x U(0.5, 1.5))
Each elementary op (brightness, saturation, contrast, translation, cutout) is applied to each
sample independently with probability p (ADA's per-sample gating); p = 1 is DiffAugment exactly.
All randomness comes from an explicit torch.Generator, so a run (and a resumed run) is reproducible.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import Tensor

from gan_core.config import Strict

OPS = ("translation", "cutout", "color")
ORDER = ("color", "translation", "cutout")  # DiffAugment's order, whatever order `ops` lists them in
TRANSLATION_RATIO = 0.125  # DiffAugment: shift up to 1/8 of the image side
CUTOUT_RATIO = 0.5         # DiffAugment: a square of half the image side


class AugmentConfig(Strict):
    """Augmentation of D's inputs. `off` trains exactly as without this module."""

    policy: Literal["off", "diffaugment", "adaptive"] = Field(
        "off", description="diffaugment: fixed p; adaptive: ADA's p, steered by D's overfitting")
    ops: str = Field("translation,cutout,color", description=f"comma list of {', '.join(OPS)}")
    p: float = Field(1.0, ge=0.0, le=1.0, description="diffaugment: per-sample probability of each op")
    p_init: float = Field(0.0, ge=0.0, le=1.0, description="adaptive: p at the start of training")
    target: float = Field(0.6, gt=-1.0, lt=1.0, description="adaptive: ADA's r_t target")
    # ADA moves p 0 -> 1 over 500k images, 2% of its 25M-image runs on 2k-70k-image sets. Runs on
    # 100-1,500 images see ~50k-500k images in all and overfit within a few thousand: 20k lets p
    # cross 0 -> 1 within the first ~5-40% of such a run, at <= 0.07 per epoch at 1,438 images.
    speed_images: int = Field(20_000, ge=1, description="adaptive: images over which p can move by 1")
    # ADA (Fig. 3): its ops stop leaking into G's samples only below p ~ 0.8.
    p_max: float = Field(0.8, ge=0.0, le=1.0, description="adaptive: upper clamp of p")

    @field_validator("ops")
    @classmethod
    def _known_ops(cls, value: str) -> str:
        names = [s.strip() for s in value.split(",") if s.strip()]
        unknown = [s for s in names if s not in OPS]
        if unknown:
            raise ValueError(f"unknown augmentation op(s) {', '.join(map(repr, unknown))}; known: {', '.join(OPS)}")
        if len(set(names)) != len(names):
            raise ValueError(f"augmentation ops listed twice in {value!r}")
        return ",".join(names)

    @model_validator(mode="after")
    def _usable(self):
        if self.policy != "off" and not self.ops:
            raise ValueError(f"augment.policy {self.policy!r} needs at least one op in augment.ops")
        if self.policy == "adaptive" and self.p_init > self.p_max:
            raise ValueError(f"augment.p_init ({self.p_init}) is above augment.p_max ({self.p_max})")
        return self

    @property
    def op_names(self) -> tuple[str, ...]:
        return tuple(s for s in self.ops.split(",") if s)

    @property
    def start_p(self) -> float:
        """p of the first epoch: the fixed p, adaptive's p_init, or 0 when off."""
        return {"off": 0.0, "diffaugment": self.p, "adaptive": self.p_init}[self.policy]

    def pipeline(self, p: float) -> Augment | None:
        """What the training steps take: None when off (today's code path, bit for bit)."""
        return None if self.policy == "off" else Augment(self.op_names, float(p))


@dataclass(frozen=True)
class Augment:
    """The augmentation of one epoch: which ops, at which per-sample probability."""

    ops: tuple[str, ...]
    p: float

    def __call__(self, x: Tensor, gen: torch.Generator | None = None) -> Tensor:
        return augment(x, self.ops, self.p, gen)


def _uniform(n: int, x: Tensor, gen: torch.Generator | None) -> Tensor:
    # Drawn on the RNG's device, then moved (as regularisers.interpolate): a CPU generator seeds GPU runs.
    draw_on = gen.device if gen is not None else x.device
    return torch.rand(n, device=draw_on, generator=gen).to(device=x.device, dtype=x.dtype)


def _randint(low: int, high: int, n: int, x: Tensor, gen: torch.Generator | None) -> Tensor:
    draw_on = gen.device if gen is not None else x.device
    return torch.randint(low, high, (n,), device=draw_on, generator=gen).to(x.device)


def _gate(n: int, p: float, x: Tensor, gen: torch.Generator | None) -> Tensor:
    """1 for the samples an op applies to (probability p each), else 0; shape (n,)."""
    return (_uniform(n, x, gen) < p).to(x.dtype)


def _col(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


def color(x: Tensor, p: float, gen: torch.Generator | None = None) -> Tensor:
    """Brightness, saturation (3 channels only) and contrast, each gated per sample."""
    n = x.shape[0]
    # x + b, b ~ U(-0.5, 0.5)
    x = x + _col((_uniform(n, x, gen) - 0.5) * _gate(n, p, x, gen))
    # Scalings are written as x + (x - mean) * (s - 1): a gated-off sample (s = 1) stays bit-identical.
    if x.shape[1] == 3:
        # (x - mean_c) * s + mean_c, s ~ U(0, 2)
        s1 = (2 * _uniform(n, x, gen) - 1) * _gate(n, p, x, gen)
        x = x + (x - x.mean(dim=1, keepdim=True)) * _col(s1)
    # (x - mean) * c + mean, c ~ U(0.5, 1.5)
    c1 = (_uniform(n, x, gen) - 0.5) * _gate(n, p, x, gen)
    return x + (x - x.mean(dim=(1, 2, 3), keepdim=True)) * _col(c1)


def translation(x: Tensor, p: float, gen: torch.Generator | None = None, ratio: float = TRANSLATION_RATIO) -> Tensor:
    """out[i, j] = x[i + dy, j + dx], 0 outside the image; |dy|, |dx| <= ratio * side (rounded)."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    on = _gate(n, p, x, gen).long()  # one op: shifted in both axes, or not at all
    dy = _randint(-sh, sh + 1, n, x, gen) * on
    dx = _randint(-sw, sw + 1, n, x, gen) * on
    padded = F.pad(x, [sw, sw, sh, sh])
    rows = torch.arange(h, device=x.device) + dy[:, None] + sh  # (n, h) into the padded image
    cols = torch.arange(w, device=x.device) + dx[:, None] + sw  # (n, w)
    b = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices around the channel slice put their dims first: (n, h, w, c). A gather, so
    # the gradient flows back to the pixels that were kept. Contiguous again: the permuted view is
    # channels-last, a layout the other ops and D need not handle.
    return padded[b, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def cutout(x: Tensor, p: float, gen: torch.Generator | None = None, ratio: float = CUTOUT_RATIO) -> Tensor:
    """Zero a (ratio * side)-square centred anywhere in the image (clipped at the borders)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # DiffAugment's centre range; an odd size's box can reach one pixel less far out.
    top = _randint(0, h + (1 - ch % 2), n, x, gen) - ch // 2
    left = _randint(0, w + (1 - cw % 2), n, x, gen) - cw // 2
    on = _gate(n, p, x, gen).bool()
    r = torch.arange(h, device=x.device)[None, :]
    c = torch.arange(w, device=x.device)[None, :]
    in_rows = (r >= top[:, None]) & (r < top[:, None] + ch)  # (n, h)
    in_cols = (c >= left[:, None]) & (c < left[:, None] + cw)  # (n, w)
    hole = in_rows[:, :, None] & in_cols[:, None, :] & on[:, None, None]
    return x * (~hole).to(x.dtype)[:, None]


_FNS = {"color": color, "translation": translation, "cutout": cutout}


def augment(x: Tensor, ops: Sequence[str], p: float, gen: torch.Generator | None = None) -> Tensor:
    """The ops (applied in DiffAugment's order: color, translation, cutout) to NCHW `x`, each per
    sample with probability p. p = 0 returns `x` itself and draws nothing, so an adaptive run at
    p = 0 draws exactly the noise of an unaugmented one."""
    if x.dim() != 4:
        raise ValueError(f"augmentation needs NCHW images, got shape {tuple(x.shape)}")
    unknown = set(ops) - set(OPS)
    if unknown:
        raise ValueError(f"unknown augmentation op(s) {sorted(unknown)}; known: {', '.join(OPS)}")
    if p <= 0 or not ops:
        return x
    for name in ORDER:
        if name in ops:
            x = _FNS[name](x, p, gen)
    return x


def overfit_signal(real_scores: Tensor, fake_scores: Tensor, is_critic: bool) -> Tensor:
    """The overfitting heuristic the adaptive p follows, in [-1, 1] (a 0-d tensor).

    Classifier D (logits centred at 0): ADA's r_t = E[sign(D(x_real))], 1 when every real is called
    real. Critics (WGAN) have unbounded scores with an arbitrary offset, so sign(D) means nothing;
    their centred signal is E[sign(D(x_real) - mean D(G(z)))], the share of reals scored above the
    fakes' mean mapped to [-1, 1]: 1 when the critic puts every real above the fakes, ~0 when it
    cannot tell them apart. Both are taken on D's (augmented) inputs, as ADA's."""
    real_scores = real_scores.detach().flatten()
    if is_critic:
        return torch.sign(real_scores - fake_scores.detach().mean()).mean()
    return torch.sign(real_scores).mean()


def adjust_p(p: float, signal: float, n_images: float, cfg: AugmentConfig) -> float:
    """ADA's controller step, given the signal over the last `n_images` real images D saw.

    DDP: call it with values identical on every rank (the epoch's rank-averaged signal and the
    global image count), and every rank applies the same p."""
    if not math.isfinite(signal):
        return p
    # p <- clamp(p + sign(r_t - target) * n_images / speed_images, 0, p_max)
    step = (signal > cfg.target) - (signal < cfg.target)
    return min(max(p + step * n_images / cfg.speed_images, 0.0), cfg.p_max)


def resumed_p(cfg: AugmentConfig, history: Sequence[dict]) -> float:
    """The p to continue a run with. The adaptive p is the last epoch's `augment_p` in the history
    (part of every checkpointed training state); a fresh run, or a state saved before augmentation
    existed, starts at `start_p`. Fixed policies ignore the history."""
    last = history[-1].get("augment_p") if cfg.policy == "adaptive" and history else None
    if last is None or not math.isfinite(last):
        return cfg.start_p
    return min(max(float(last), 0.0), cfg.p_max)


def mirror(*tensors: Tensor) -> list[Tensor]:
    """stylegan2-ada's --mirror: the image set doubled with its horizontal flips (labels repeated)."""
    x, *rest = tensors
    if x.dim() != 4:
        raise ValueError(f"mirror needs NCHW images, got shape {tuple(x.shape)}")
    return [torch.cat([x, x.flip(-1)]), *(torch.cat([t, t]) for t in rest)]
