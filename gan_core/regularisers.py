"""Gradient penalty (Gulrajani et al. 2017, WGAN-GP). Returned unweighted; the caller applies lambda."""
from __future__ import annotations

import torch
from torch import Tensor, nn


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


def gradient_penalty(
    D: nn.Module, real: Tensor, fake: Tensor, one_sided: bool = False, generator: torch.Generator | None = None
) -> Tensor:
    """Penalty with its own forward of D. steps.d_step inlines the same maths into its single
    D forward instead (DDP); this standalone form is for tests and non-DDP callers."""
    x_hat = interpolate(real, fake, generator).requires_grad_(True)
    scores = D(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return penalty_from_grad(grad, one_sided)
