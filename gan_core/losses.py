"""Adversarial objectives. One object per run; the D and G phases are separate, explicit methods
(as in stylegan2-ada's training/loss.py) so the step code never branches on the loss name."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from gan_core.config import LossConfig


class GanLoss:
    def __init__(self, cfg: LossConfig) -> None:
        self.cfg = cfg

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def is_critic(self) -> bool:
        """True when D is an unbounded critic (WGAN): no sigmoid, scores estimate a distance."""
        return self.cfg.is_critic

    @property
    def gp_weight(self) -> float:
        return self.cfg.gp_weight

    @property
    def gp_one_sided(self) -> bool:
        return self.cfg.gp_one_sided

    @property
    def uses_gp(self) -> bool:
        """Gradient penalty belongs to WGAN-GP only; a zero weight switches it off entirely."""
        return self.is_critic and self.cfg.gp_weight > 0

    def d_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        """Adversarial part of the D loss (no penalty)."""
        if self.is_critic:
            return fake_scores.mean() - real_scores.mean()
        # BCE with logits written as softplus: -log sigmoid(s) = softplus(-s),
        # -log(1 - sigmoid(s)) = softplus(s). Stable for |s| large, unlike log(sigmoid()).
        return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()

    def g_loss(self, fake_scores: Tensor) -> Tensor:
        if self.is_critic:
            return -fake_scores.mean()
        # Non-saturating: maximise log D(G(z)) rather than minimise log(1 - D(G(z))),
        # which keeps gradients alive early on when D rejects every fake.
        return F.softplus(-fake_scores).mean()

    def __repr__(self) -> str:
        return f"GanLoss({self.cfg!r})"
