import pytest
import torch
from torch import nn

from gan_core.regularisers import (
    clip_weights_,
    gradient_penalty,
    interpolate,
    penalty_from_grad,
    r1_penalty,
    r1_penalty_from_grad,
)


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


def test_penalties_from_hand_made_gradients():
    grad = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.6, 0.8]])  # norms 5, 0, 1
    assert r1_penalty_from_grad(grad).item() == pytest.approx((25 + 0 + 1) / 3)
    assert penalty_from_grad(grad).item() == pytest.approx((16 + 1 + 0) / 3)
    assert penalty_from_grad(grad, one_sided=True).item() == pytest.approx(16 / 3)
    # per-sample norm over all trailing dims
    assert r1_penalty_from_grad(grad.reshape(3, 1, 2, 1)).item() == pytest.approx(26 / 3)


@pytest.mark.parametrize("shape", [(2,), (1, 4, 4)])
def test_r1_linear_and_constant_critic(shape):
    torch.manual_seed(0)
    dim = int(torch.tensor(shape).prod())
    real = torch.randn(16, *shape)
    # grad of x -> w.x + b is w: R1 = ||w||^2; a constant D (w = 0) is not penalised at all.
    assert r1_penalty(linear_critic(dim, 3.0), real).item() == pytest.approx(9.0, rel=1e-5)
    assert r1_penalty(linear_critic(dim, 0.0), real).item() == 0.0


def test_r1_is_differentiable_wrt_critic_and_leaves_input_alone():
    torch.manual_seed(0)
    D = linear_critic(2, 3.0)
    real = torch.randn(8, 2)
    r1_penalty(D, real).backward()
    w = D[1].weight
    assert torch.allclose(w.grad, 2 * w.detach())  # d/dw ||w||^2
    assert not real.requires_grad and real.grad is None


def test_penalties_pass_labels_to_a_conditional_critic():
    class CondLinear(nn.Module):  # score = w.x + e[y]; only w shapes the input gradient
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([2.0, 0.0]))
            self.e = nn.Embedding(3, 1)

        def forward(self, x, y):
            return x @ self.w + self.e(y).squeeze(1)

    D, x, y = CondLinear(), torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
    assert r1_penalty(D, x, labels=y).item() == pytest.approx(4.0)
    assert gradient_penalty(D, x, torch.randn(4, 2), labels=y).item() == pytest.approx(1.0)
    with pytest.raises(TypeError):  # and it really needs them: y is required
        r1_penalty(D, x)


def test_clip_weights():
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -0.5, 0.001], [-0.02, 0.0, 0.003]]))
        lin.bias.copy_(torch.tensor([2.0, -0.004]))
    clip_weights_(lin, 0.01)
    assert torch.equal(lin.weight, torch.tensor([[0.01, -0.01, 0.001], [-0.01, 0.0, 0.003]]))
    assert torch.equal(lin.bias, torch.tensor([0.01, -0.004]))
    assert lin.weight.requires_grad  # in place on the parameters, not replacing them
    with pytest.raises(ValueError):
        clip_weights_(lin, 0.0)
