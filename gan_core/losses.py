"""Adversarial objectives: one row per loss in LOSSES, holding everything that loss is.

A row (LossDef) has D's objective and G's objective (each term one line with its math, as in
stylegan2-ada's training/loss.py), whether D is a critic, the loss's own default gradient penalty
and weight clip, and its paper optimiser (the fallback where no recipe was tuned with the loss:
gan_core.recipes.resolve). GanLoss is one run's loss: its row, with the user's `loss.gp_weight`,
`loss.clip`, `loss.gp_one_sided` and `loss.r1_gamma` (gan_core.config.LossConfig) laid over the row's
defaults; R1 and a GP are options for any loss.

Scores are raw D outputs (logits / critic values); no sigmoid is ever applied by D itself. Each
objective is what its player minimises; penalties are added by GanLoss.add_penalties, from the input
gradients steps.d_step takes in its single D forward (DDP)."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from gan_core.config import LossConfig, ResolvedOptim
from gan_core.regularisers import penalty_from_grad, r1_penalty_from_grad

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


# --- the objectives; D(x) = sigmoid(s) for the classifier losses, s a raw score -------------------------
# BCE with logits in softplus form: -log sigmoid(s) = softplus(-s) and -log(1 - sigmoid(s)) = softplus(s);
# finite for any |s|, unlike log(sigmoid()).
def _bce_d(real: Tensor, fake: Tensor) -> Tensor:
    return (F.softplus(-real).mean()    # E[-log D(x)]
            + F.softplus(fake).mean())  # E[-log(1 - D(G(z)))]


def _saturating_g(fake: Tensor) -> Tensor:
    # The original minimax objective; its gradient vanishes when D wins.
    return -F.softplus(fake).mean()  # E[log(1 - D(G(z)))]


def _non_saturating_g(fake: Tensor) -> Tensor:
    # Same fixed point as minimax, strong gradient when D rejects fakes.
    return F.softplus(-fake).mean()  # E[-log D(G(z))]


def _wasserstein_d(real: Tensor, fake: Tensor) -> Tensor:
    return (fake.mean()     # E[f(G(z))]
            - real.mean())  # - E[f(x)]: the negated estimate of W(P_r, P_g)


def _minus_fake(fake: Tensor) -> Tensor:
    return -fake.mean()  # -E[f(G(z))] (WGAN and hinge G)


def _hinge_d(real: Tensor, fake: Tensor) -> Tensor:
    return (F.relu(1 - real).mean()     # E[max(0, 1 - D(x))]
            + F.relu(1 + fake).mean())  # E[max(0, 1 + D(G(z)))]


def _least_squares_d(real: Tensor, fake: Tensor) -> Tensor:
    return (0.5 * (real - 1).square().mean()  # 1/2 E[(D(x) - 1)^2]
            + 0.5 * fake.square().mean())     # 1/2 E[D(G(z))^2]


def _least_squares_g(fake: Tensor) -> Tensor:
    return 0.5 * (fake - 1).square().mean()  # 1/2 E[(D(G(z)) - 1)^2]


# Relativistic pairing (RpGAN; Jolicoeur-Martineau 2019, R3GAN: Huang et al. 2024): each real row is paired
# with a fake row and D scores their difference, so G's objective also sees D's real scores. Its landscape
# has no bad local minima where the unpaired loss has one per mode dropped (R3GAN, Sec. 2); with R1 and
# R2 it converges locally (Sec. 3).
def _rp_d(real: Tensor, fake: Tensor) -> Tensor:
    return F.softplus(fake - real).mean()  # E[-log sigmoid(D(x) - D(G(z)))], x and z paired row by row


def _rp_g(fake: Tensor, real: Tensor) -> Tensor:
    return F.softplus(real - fake).mean()  # E[-log sigmoid(D(G(z)) - D(x))]


def _f_gan_d(f: FDivergence) -> Callable[[Tensor, Tensor], Tensor]:
    def d(real: Tensor, fake: Tensor) -> Tensor:
        # D maximises the variational lower bound on D_f: E_P[g_f(V(x))] - E_Q[f*(g_f(V(G(z))))]
        return -(f.activation(real).mean() - f.conjugate_of_activation(fake).mean())
    return d


def _f_gan_g(f: FDivergence) -> Fn:
    def g(fake: Tensor) -> Tensor:
        # Nowozin et al. Sec. 3.2, the non-saturating G step: maximise E_Q[g_f(V(G(z)))]
        return -f.activation(fake).mean()
    return g


@dataclass(frozen=True)
class LossDef:
    """Everything one loss is. Each objective is minimised by its player."""

    name: str                              # a LossName (gan_core.config)
    d: Callable[[Tensor, Tensor], Tensor]  # D's loss on (real, fake) scores, without penalties
    g: Callable[..., Tensor]               # G's loss on the scores of its own samples (paired: and real ones)
    optim: ResolvedOptim                   # the paper optimiser (a recipe tuned with this loss overrides it)
    critic: bool = False                   # unbounded critic, no sigmoid: real - fake scores estimate W
    gp_weight: float = 0.0                 # default GP lambda (two-sided unless loss.gp_one_sided); 0 = off
    clip: float | None = None              # default weight clip c; None = off
    paired: bool = False                   # G's objective also takes D's scores of real rows (relativistic)
    r2: bool = False                       # R1's gamma also weighs R2, the same penalty on fakes (R3GAN)


# DCGAN (Radford et al. 2016): Adam 2e-4, beta1 0.5. Also the usual choice for LSGAN and f-GAN.
DCGAN_ADAM = ResolvedOptim("adam", 2e-4, 2e-4, (0.5, 0.999), 1)

LOSS_ROWS: tuple[LossDef, ...] = (
    # Goodfellow et al. 2014: minimax.
    LossDef("saturating", _bce_d, _saturating_g, DCGAN_ADAM),
    # Goodfellow et al. 2014, Sec. 3: the non-saturating G.
    LossDef("non-saturating", _bce_d, _non_saturating_g, DCGAN_ADAM),
    # WGAN (Arjovsky et al. 2017, Alg. 1): Lipschitz by clipping c = 0.01; RMSprop 5e-5 (momentum
    # destabilised the critic there), 5 critic steps. Betas only matter if adam is forced.
    LossDef("wgan", _wasserstein_d, _minus_fake, ResolvedOptim("rmsprop", 5e-5, 5e-5, (0.5, 0.999), 5),
            critic=True, clip=0.01),
    # WGAN-GP (Gulrajani et al. 2017, Alg. 1): lambda 10 E[(||grad f(x_hat)|| - 1)^2]; Adam 1e-4,
    # betas (0, 0.9), 5 critic steps.
    LossDef("wgan-gp", _wasserstein_d, _minus_fake, ResolvedOptim("adam", 1e-4, 1e-4, (0.0, 0.9), 5),
            critic=True, gp_weight=10.0),
    # Hinge as in SAGAN (Zhang et al. 2019) / BigGAN: TTUR (Heusel et al. 2017) lr_d = 4 lr_g, one D step.
    LossDef("hinge", _hinge_d, _minus_fake, ResolvedOptim("adam", 1e-4, 4e-4, (0.0, 0.9), 1)),
    # LSGAN (Mao et al. 2017), targets real 1, fake 0, G aims at 1.
    LossDef("least-squares", _least_squares_d, _least_squares_g, DCGAN_ADAM),
    # R3GAN's loss (Huang et al. 2024): relativistic pairing with R1 and R2 at one gamma (loss.r1_gamma; 0
    # leaves RpGAN unregularised, which the paper shows diverging). Adam betas (0, 0.99), as its configs.
    LossDef("rpgan", _rp_d, _rp_g, ResolvedOptim("adam", 2e-4, 2e-4, (0.0, 0.99), 1), paired=True, r2=True),
    # f-GAN (Nowozin et al. 2016): one row per divergence of F_DIVERGENCES above.
    *(LossDef(name, _f_gan_d(f), _f_gan_g(f), DCGAN_ADAM) for name, f in F_DIVERGENCES.items()),
)
LOSSES: dict[str, LossDef] = {row.name: row for row in LOSS_ROWS}


class Penalised(NamedTuple):
    """D's loss with its penalties, and each penalty unweighted (0 when off or not taken), to log."""

    total: Tensor
    gp: Tensor
    r1: Tensor
    r2: Tensor


class GanLoss:
    """One run's loss: the row of `cfg.name`, with the user's GP weight and clip (where set) in place
    of the row's defaults. The D and G phases are separate methods, so step code never branches on
    the loss name."""

    def __init__(self, cfg: LossConfig) -> None:
        self.cfg = cfg
        self.row = LOSSES[cfg.name]
        self.gp_weight = self.row.gp_weight if cfg.gp_weight is None else cfg.gp_weight
        self.clip = self.row.clip if cfg.clip is None else cfg.clip
        # Any loss may carry a GP (e.g. NS + GP, Kodali et al. / Mescheder et al.) or R1; 0 = off.
        self.uses_gp = self.gp_weight > 0
        self.uses_r1 = cfg.r1_gamma > 0
        self.uses_r2 = self.uses_r1 and self.row.r2

    def d_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        """Adversarial part of the D loss (no penalty); D minimises it."""
        return self.row.d(real_scores, fake_scores)

    def g_loss(self, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor:
        """G's loss on the scores of its own samples (a paired loss: and of as many real rows); G minimises it."""
        if not self.row.paired:
            return self.row.g(fake_scores)
        if real_scores is None:
            raise ValueError(f"the {self.row.name} loss pairs fakes with reals: G's step needs D's real scores")
        return self.row.g(fake_scores, real_scores)

    def add_penalties(self, d_loss: Tensor, gp_grad: Tensor | None, r1_grad: Tensor | None,
                      r1_every: int = 1, r2_grad: Tensor | None = None) -> Penalised:
        """`d_loss` plus the penalties, from D's input gradients at the GP interpolates, at the reals and
        at the fakes (None where that penalty is off, or skipped on a lazy step); also each penalty
        unweighted (0 when off), to log. `r1_every`: R1 (and R2) are taken once every that many D steps (lazy
        regularisation, Karras et al. 2020), so they weigh that many times as much when they are."""
        gp = r1 = r2 = torch.zeros((), device=d_loss.device)
        total = d_loss
        if gp_grad is not None:
            gp = penalty_from_grad(gp_grad, self.cfg.gp_one_sided)   # E[(||grad D(x_hat)|| - 1)^2]
            total = total + self.gp_weight * gp                      # + lambda GP
        if r1_grad is not None:
            r1 = r1_penalty_from_grad(r1_grad)                       # E[||grad D(x)||^2]
            total = total + 0.5 * self.cfg.r1_gamma * r1_every * r1  # + gamma/2 R1, x r1_every when lazy
        if r2_grad is not None:
            r2 = r1_penalty_from_grad(r2_grad)                       # E[||grad D(G(z))||^2]
            total = total + 0.5 * self.cfg.r1_gamma * r1_every * r2  # + gamma/2 R2, lazy as R1
        return Penalised(total, gp, r1, r2)

    def __repr__(self) -> str:
        return f"GanLoss({self.cfg!r})"
