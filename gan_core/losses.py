"""Adversarial objectives. One object per run; the D and G phases are separate, explicit methods
(as in stylegan2-ada's training/loss.py) so the step code never branches on the loss name.

Scores are raw D outputs (logits / critic values); no sigmoid is ever applied by D itself."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from gan_core.config import LossConfig

LOG2 = math.log(2.0)
Fn = Callable[[Tensor], Tensor]


class FDivergence(NamedTuple):
    """One row of Nowozin et al. 2016, Table 2: output activation g_f and Fenchel conjugate f*.
    `conjugate_of_activation` is f*(g_f(v)) simplified by hand, finite wherever g_f(v) is."""

    activation: Fn
    conjugate: Fn
    conjugate_of_activation: Fn


F_DIVERGENCES: dict[str, FDivergence] = {
    "f-kl": FDivergence(lambda v: v, lambda t: torch.exp(t - 1), lambda v: torch.exp(v - 1)),
    # -1 - log(exp(-v)) = v - 1
    "f-reverse-kl": FDivergence(lambda v: -torch.exp(-v), lambda t: -1 - torch.log(-t), lambda v: v - 1),
    "f-pearson": FDivergence(lambda v: v, lambda t: t.square() / 4 + t, lambda v: v.square() / 4 + v),
    # (1 - e^-v) / e^-v = e^v - 1
    "f-hellinger": FDivergence(lambda v: 1 - torch.exp(-v), lambda t: t / (1 - t), torch.expm1),
    # exp(log 2 - softplus(-v)) = 2 sigmoid(v), so -log(2 - 2 sigmoid(v)) = softplus(v) - log 2
    "f-js": FDivergence(lambda v: LOG2 - F.softplus(-v), lambda t: -torch.log(2 - torch.exp(t)),
                        lambda v: F.softplus(v) - LOG2),
}


class GanLoss:
    def __init__(self, cfg: LossConfig) -> None:
        self.cfg = cfg
        self._f = F_DIVERGENCES.get(cfg.name)

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def is_critic(self) -> bool:
        """True when D is an unbounded critic (WGAN): scores estimate a distance, not a logit."""
        return self.cfg.is_critic

    @property
    def gp_weight(self) -> float:
        return self.cfg.effective_gp_weight

    @property
    def gp_one_sided(self) -> bool:
        return self.cfg.gp_one_sided

    @property
    def clip(self) -> float | None:
        return self.cfg.effective_clip

    @property
    def r1_gamma(self) -> float:
        return self.cfg.r1_gamma

    @property
    def uses_gp(self) -> bool:
        # Any loss may carry a GP (e.g. NS + GP, Kodali et al. / Mescheder et al.); weight 0 = off.
        return self.gp_weight > 0

    @property
    def uses_r1(self) -> bool:
        return self.r1_gamma > 0

    def d_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        """Adversarial part of the D loss (no penalty); D minimises it."""
        name = self.name
        if name in ("saturating", "non-saturating"):
            # BCE with logits in softplus form: -log sigmoid(s) = softplus(-s) and
            # -log(1 - sigmoid(s)) = softplus(s); finite for any |s|, unlike log(sigmoid()).
            return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()
        if name in ("wgan", "wgan-gp"):
            return fake_scores.mean() - real_scores.mean()
        if name == "hinge":
            return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()
        if name == "least-squares":
            return 0.5 * (real_scores - 1).square().mean() + 0.5 * fake_scores.square().mean()
        f = self._require_f()
        # D maximises E_P[g(V)] - E_Q[f*(g(V))] (the variational lower bound on D_f).
        return -(f.activation(real_scores).mean() - f.conjugate_of_activation(fake_scores).mean())

    def g_loss(self, fake_scores: Tensor) -> Tensor:
        """G's loss on the scores of its own samples; G minimises it."""
        name = self.name
        if name == "saturating":
            # The original minimax objective E[log(1 - D(G(z)))]; its gradient vanishes when D wins.
            return -F.softplus(fake_scores).mean()
        if name == "non-saturating":
            # Maximise log D(G(z)) instead: same fixed point, strong gradient when D rejects fakes.
            return F.softplus(-fake_scores).mean()
        if name in ("wgan", "wgan-gp", "hinge"):
            return -fake_scores.mean()
        if name == "least-squares":
            return 0.5 * (fake_scores - 1).square().mean()
        # Nowozin et al. Sec. 3.2: the non-saturating G step, maximise E_Q[g(V(G(z)))].
        return -self._require_f().activation(fake_scores).mean()

    def _require_f(self) -> FDivergence:
        if self._f is None:  # only reachable if LossName grows without a branch here
            raise ValueError(f"no objective implemented for loss {self.name!r}")
        return self._f

    def __repr__(self) -> str:
        return f"GanLoss({self.cfg!r})"

