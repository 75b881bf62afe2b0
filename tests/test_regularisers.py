import pytest
import torch
from torch import nn

from gan_core.regularisers import gradient_penalty, interpolate


def linear_critic(dim: int, norm: float) -> nn.Module:
    lin = nn.Linear(dim, 1)
    with torch.no_grad():
        w = torch.randn(1, dim)
        lin.weight.copy_(w / w.norm() * norm)
    return nn.Sequential(nn.Flatten(), lin)


@pytest.mark.parametrize("shape", [(2,), (1, 8, 8), (3, 4, 4)])
def test_linear_critic_penalty(shape):
    torch.manual_seed(0)
    dim = int(torch.tensor(shape).prod())
    real, fake = torch.randn(32, *shape), torch.randn(32, *shape)
    # grad of x -> w.x is w everywhere, so the penalty is (||w|| - 1)^2 exactly.
    assert gradient_penalty(linear_critic(dim, 1.0), real, fake).item() == pytest.approx(0.0, abs=1e-10)
    assert gradient_penalty(linear_critic(dim, 5.0), real, fake).item() == pytest.approx(16.0, rel=1e-5)
    small = linear_critic(dim, 0.5)
    assert gradient_penalty(small, real, fake, one_sided=True).item() == 0.0
    assert gradient_penalty(small, real, fake).item() == pytest.approx(0.25, rel=1e-5)


def test_penalty_is_differentiable_wrt_critic():
    torch.manual_seed(0)
    D = linear_critic(2, 5.0)
    gp = gradient_penalty(D, torch.randn(8, 2), torch.randn(8, 2))
    gp.backward()
    w = D[1].weight
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||: points along w, magnitude 8.
    assert w.grad.norm().item() == pytest.approx(8.0, rel=1e-4)


def test_interpolates_lie_between_and_are_seeded():
    real, fake = torch.zeros(64, 3), torch.ones(64, 3)
    a = interpolate(real, fake, torch.Generator().manual_seed(1))
    b = interpolate(real, fake, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert ((a >= 0) & (a <= 1)).all()
    # one eps per sample, shared across features
    assert torch.equal(a[:, 0], a[:, 2])
    assert a[:, 0].std() > 0.1
