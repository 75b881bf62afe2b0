"""D regularisers: gradient penalty (Gulrajani et al. 2017), R1 (Mescheder et al. 2018) and
weight clipping (Arjovsky et al. 2017). Penalties are returned unweighted; the caller applies
lambda / gamma.

Training uses `interpolate`, the `*_from_grad` forms and `clip_weights_`: steps.d_step takes the input
gradients from its single D forward (DDP) and losses.GanLoss.add_penalties turns them into penalties.
`gradient_penalty` and `r1_penalty` are reference implementations for the tests, kept here on purpose:
the textbook forms, each with its own D forward, that the fused in-step penalty must match in value and
gradient (tests/test_steps.py, test_augment.py); tests/test_regularisers.py checks them against closed
forms. Nothing in training calls them."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def _call_d(D: nn.Module, x: Tensor, labels: Tensor | None) -> Tensor:
    # Unconditional Ds take no `y` at all, so it is only passed when there are labels.
    return D(x) if labels is None else D(x, y=labels)


def interpolate(real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """x_hat = eps*real + (1-eps)*fake with one eps ~ U[0,1) per sample, broadcast over the rest."""
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must have the same shape")
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    # Drawn on the RNG's device, then moved: a CPU generator can seed GPU runs.
    draw_on = generator.device if generator is not None else real.device
    eps = torch.rand(eps_shape, device=draw_on, generator=generator, dtype=real.dtype).to(real.device)
    return eps * real.detach() + (1 - eps) * fake.detach()


def penalty_from_grad(grad: Tensor, one_sided: bool = False) -> Tensor:
    """mean((||g|| - 1)^2), or mean(relu(||g|| - 1)^2) when only norms above 1 are penalised."""
    norm = grad.flatten(1).norm(2, dim=1)
    excess = norm - 1
    if one_sided:
        excess = excess.clamp_min(0)
    return excess.square().mean()


def r1_penalty_from_grad(grad: Tensor) -> Tensor:
    """mean over samples of ||g||^2 (squared norm: no sqrt, so smooth at g = 0)."""
    return grad.flatten(1).square().sum(1).mean()


def gradient_penalty(
    D: nn.Module,
    real: Tensor,
    fake: Tensor,
    one_sided: bool = False,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
) -> Tensor:
    """Reference (tests): GP at random interpolates, in its own D forward; `labels` (the real ones)
    condition a class-conditional D."""
    x_hat = interpolate(real, fake, generator).requires_grad_(True)
    scores = _call_d(D, x_hat, labels)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return penalty_from_grad(grad, one_sided)


def r1_penalty(D: nn.Module, real: Tensor, labels: Tensor | None = None) -> Tensor:
    """Reference (tests): E||grad_x D(x)||^2 on real data, in its own D forward (unweighted; the loss
    uses gamma/2 times this)."""
    x = real.detach().requires_grad_(True)
    scores = _call_d(D, x, labels)
    (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    return r1_penalty_from_grad(grad)


@torch.no_grad()
def clip_weights_(module: nn.Module, c: float) -> None:
    """Clamp every parameter to [-c, c] in place (WGAN's crude Lipschitz constraint)."""
    if c <= 0:
        raise ValueError(f"clip must be > 0, got {c}")
    for p in module.parameters():
        p.clamp_(-c, c)
