import math

import pytest
import torch

from gan_core.config import LossConfig
from gan_core.losses import GanLoss

NS = GanLoss(LossConfig(name="non-saturating"))
WGAN = GanLoss(LossConfig.model_validate("wgan-gp"))


def test_is_critic_and_aliases():
    assert not NS.is_critic and not NS.uses_gp
    assert WGAN.is_critic and WGAN.uses_gp
    assert GanLoss(LossConfig.model_validate("ns")).name == "non-saturating"
    assert not GanLoss(LossConfig(name="wgan-gp", gp_weight=0.0)).uses_gp


def test_ns_d_loss_values():
    big = torch.full((4,), 50.0)
    # A perfect, confident D has ~zero loss, and stays finite (softplus form, no log(0)).
    assert NS.d_loss(big, -big).item() == pytest.approx(0.0, abs=1e-12)
    # The reverse is confidently wrong: 50 + 50.
    assert NS.d_loss(-big, big).item() == pytest.approx(100.0, rel=1e-6)
    # At zero logits both terms are log 2.
    zeros = torch.zeros(3)
    assert NS.d_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2), rel=1e-6)
    huge = torch.full((2,), 1e4)
    assert torch.isfinite(NS.d_loss(-huge, huge))


def test_ns_matches_bce():
    real, fake = torch.randn(16), torch.randn(16)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = bce(real, torch.ones(16)) + bce(fake, torch.zeros(16))
    assert NS.d_loss(real, fake).item() == pytest.approx(expected.item(), rel=1e-6)
    assert NS.g_loss(fake).item() == pytest.approx(bce(fake, torch.ones(16)).item(), rel=1e-6)


def test_ns_g_gradient_sign_and_non_saturation():
    s = torch.tensor([-20.0, 0.0, 3.0], requires_grad=True)
    NS.g_loss(s).backward()
    assert (s.grad < 0).all()  # G always wants a higher fake score
    # Non-saturating: even when D rejects the fake hard (s = -20) the gradient is not vanishing.
    assert s.grad[0].item() == pytest.approx(-1 / 3, rel=1e-4)


def test_ns_d_gradient_signs():
    real = torch.zeros(2, requires_grad=True)
    fake = torch.zeros(2, requires_grad=True)
    NS.d_loss(real, fake).backward()
    assert (real.grad < 0).all() and (fake.grad > 0).all()


def test_wgan_values_and_grads():
    real = torch.tensor([1.0, 2.0, 3.0])
    fake = torch.tensor([-1.0, 0.5], requires_grad=True)
    assert WGAN.d_loss(real, fake).item() == pytest.approx(-0.25 - 2.0)
    g = WGAN.g_loss(fake)
    assert g.item() == pytest.approx(0.25)
    g.backward()
    assert torch.allclose(fake.grad, torch.tensor([-0.5, -0.5]))
