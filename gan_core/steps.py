"""Alternating D / G training steps that are safe under DistributedDataParallel.

DDP all-reduces gradients from hooks armed by each forward of the wrapped module, and errors
("Expected to have finished reduction in the prior iteration") when a forward is not followed
by a backward reaching every parameter. So: the wrapped D runs exactly once per D step (real,
fake and GP interpolates in one batch), the wrapped G runs exactly once per G step, and every
other forward goes through the unwrapped module, outside DDP's bookkeeping.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.optim import Adam, Optimizer

from gan_core.losses import GanLoss
from gan_core.regularisers import interpolate, penalty_from_grad

SATURATION_LOGIT = 10.0  # |logit| > 10 means sigmoid within 5e-5 of 0/1: gradients have died.


def unwrap(m: nn.Module) -> nn.Module:
    """The bare module inside a DDP (or DataParallel) wrapper; the module itself otherwise."""
    return getattr(m, "module", m)


def grad_norm(module: nn.Module) -> float:
    """Total L2 norm of all parameter gradients (a vanishing/exploding-gradient signal)."""
    norms = [p.grad.detach().norm(2) for p in module.parameters() if p.grad is not None]
    if not norms:
        return 0.0
    return float(torch.stack(norms).norm(2))


def _device_of(m: nn.Module) -> torch.device:
    return next(unwrap(m).parameters()).device


def d_step(
    G: nn.Module,
    D: nn.Module,
    real: Tensor,
    opt_d: Optimizer,
    loss: GanLoss,
    gen: torch.Generator | None = None,
) -> dict[str, float]:
    n = real.shape[0]
    g = unwrap(G)
    with torch.no_grad():  # G is not being trained here; no graph, no DDP hooks on G
        fake = g(g.sample_z(n, device=real.device, generator=gen))

    parts = [real, fake]
    x_hat: Tensor | None = None
    if loss.uses_gp:
        x_hat = interpolate(real, fake, gen).requires_grad_(True)
        parts.append(x_hat)
    scores = D(torch.cat(parts))  # the one DDP forward of this step; cat keeps x_hat in the graph
    real_s, fake_s = scores[:n], scores[n : 2 * n]

    adv = loss.d_loss(real_s, fake_s)
    gp = torch.zeros((), device=scores.device)
    if x_hat is not None:
        # Gradient of the interpolates' own scores wrt x_hat. Scores are per sample (no BN in D),
        # so the real/fake rows of the batch contribute nothing to this gradient.
        (grad,) = torch.autograd.grad(scores[2 * n :].sum(), x_hat, create_graph=True)
        gp = penalty_from_grad(grad, loss.gp_one_sided)
    total = adv + loss.gp_weight * gp if x_hat is not None else adv

    opt_d.zero_grad(set_to_none=True)
    total.backward()
    gn = grad_norm(unwrap(D))
    opt_d.step()

    with torch.no_grad():
        rs, fs = real_s.detach(), fake_s.detach()
        both = torch.cat([rs, fs])
        saturated = 0.0 if loss.is_critic else float((both.abs() > SATURATION_LOGIT).float().mean())
        return {
            "loss_d": float(total.detach()),
            "d_acc_real": float((rs > 0).float().mean()),
            "d_acc_fake": float((fs < 0).float().mean()),
            "d_real_score": float(rs.mean()),
            "d_fake_score": float(fs.mean()),
            "wasserstein": float(rs.mean() - fs.mean()),
            "grad_norm_d": gn,
            "gp": float(gp.detach()),
            "d_saturated": saturated,
        }


def g_step(
    G: nn.Module,
    D: nn.Module,
    batch_size: int,
    opt_g: Optimizer,
    loss: GanLoss,
    device: torch.device | str,
    gen: torch.Generator | None = None,
) -> dict[str, float]:
    d = unwrap(D)
    # Freeze D so G's backward neither computes nor accumulates D grads, and score through the
    # unwrapped D so DDP(D) arms no reduction that would never complete.
    saved = [p.requires_grad for p in d.parameters()]
    d.requires_grad_(False)
    try:
        z = unwrap(G).sample_z(batch_size, device=device, generator=gen)
        fake = G(z)  # the one DDP forward of G
        loss_g = loss.g_loss(d(fake))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        gn = grad_norm(unwrap(G))
        opt_g.step()
    finally:
        for p, flag in zip(d.parameters(), saved):
            p.requires_grad_(flag)
    return {"loss_g": float(loss_g.detach()), "grad_norm_g": gn}


def train_epoch(
    G: nn.Module,
    D: nn.Module,
    batches: Iterable[Tensor | Sequence[Tensor]],
    opt_g: Optimizer,
    opt_d: Optimizer,
    loss: GanLoss,
    n_critic: int = 1,
    gen: torch.Generator | None = None,
) -> dict[str, float]:
    """One pass over `batches`: a D step per batch, a G step after every `n_critic` D steps.
    Returns each metric's mean over the steps that produced it, plus step counts."""
    if n_critic < 1:
        raise ValueError(f"n_critic must be >= 1, got {n_critic}")
    G.train()
    D.train()
    device = _device_of(D)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    steps_d = steps_g = 0

    def add(metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1

    for batch in batches:
        real = batch[0] if isinstance(batch, (tuple, list)) else batch
        real = real.to(device, non_blocking=True)
        add(d_step(G, D, real, opt_d, loss, gen))
        steps_d += 1
        if steps_d % n_critic == 0:
            add(g_step(G, D, real.shape[0], opt_g, loss, device, gen))
            steps_g += 1

    out = {k: sums[k] / counts[k] for k in sums}
    out["steps_d"] = float(steps_d)
    out["steps_g"] = float(steps_g)
    return out


def build_optimizers(
    G: nn.Module, D: nn.Module, lr_g: float, lr_d: float, betas: tuple[float, float]
) -> tuple[Adam, Adam]:
    """Adam for both (DCGAN: betas (0.5, 0.999); WGAN-GP: (0.0, 0.9))."""
    return Adam(G.parameters(), lr=lr_g, betas=betas), Adam(D.parameters(), lr=lr_d, betas=betas)
