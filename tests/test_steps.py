"""Single-process behaviour of the training steps (the DDP path is in test_ddp_steps.py)."""
import pytest
import torch

from gan_core.config import LossConfig, ModelConfig
from gan_core.losses import GanLoss
from gan_core.models import build_discriminator, build_generator
from gan_core.regularisers import gradient_penalty
from gan_core.steps import build_optimizers, d_step, g_step, train_epoch

KEYS_D = {"loss_d", "d_acc_real", "d_acc_fake", "d_real_score", "d_fake_score", "wasserstein",
          "grad_norm_d", "gp", "d_saturated"}


def pair(arch="dcgan", shape=(1, 8, 8)):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, z_dim=8, width=8, depth=2)
    G, D = build_generator(cfg, shape), build_discriminator(cfg, shape)
    return G, D, *build_optimizers(G, D, 1e-3, 1e-3, (0.5, 0.999))


@pytest.mark.parametrize("name", ["non-saturating", "wgan-gp"])
def test_d_step_metrics_and_update(name):
    G, D, _, opt_d = pair()
    loss = GanLoss(LossConfig(name=name))
    g_before = [p.clone() for p in G.parameters()]
    d_before = [p.clone() for p in D.parameters()]
    m = d_step(G, D, torch.rand(16, 1, 8, 8) * 2 - 1, opt_d, loss, torch.Generator().manual_seed(0))
    assert set(m) == KEYS_D
    assert 0 <= m["d_acc_real"] <= 1 and 0 <= m["d_acc_fake"] <= 1
    assert m["wasserstein"] == pytest.approx(m["d_real_score"] - m["d_fake_score"])
    assert m["grad_norm_d"] > 0
    assert (m["gp"] > 0) == loss.is_critic
    if loss.is_critic:  # loss = W-loss + 10 * gp
        assert m["loss_d"] == pytest.approx(-m["wasserstein"] + 10 * m["gp"], rel=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(g_before, G.parameters()))  # G untouched
    assert any(not torch.equal(a, b) for a, b in zip(d_before, D.parameters()))


def test_saturation_metric():
    G, D, _, opt_d = pair("mlp", (2,))
    with torch.no_grad():
        D.net[-1].bias.fill_(100.0)  # every score ~ +100: saturated, all "real"
    m = d_step(G, D, torch.randn(8, 2), opt_d, GanLoss(LossConfig()))
    assert m["d_saturated"] == 1.0 and m["d_acc_real"] == 1.0 and m["d_acc_fake"] == 0.0
    m = d_step(G, D, torch.randn(8, 2), opt_d, GanLoss(LossConfig(name="wgan-gp")))
    assert m["d_saturated"] == 0.0


def test_g_step_freezes_d_and_restores_flags():
    G, D, opt_g, _ = pair()
    frozen = next(D.parameters())
    frozen.requires_grad_(False)  # a deliberately frozen param must stay frozen
    d_before = [p.clone() for p in D.parameters()]
    m = g_step(G, D, 8, opt_g, GanLoss(LossConfig()), "cpu")
    assert set(m) == {"loss_g", "grad_norm_g"} and m["grad_norm_g"] > 0
    assert all(p.grad is None for p in D.parameters())
    assert all(torch.equal(a, b) for a, b in zip(d_before, D.parameters()))
    assert not frozen.requires_grad
    assert all(p.requires_grad for p in list(D.parameters())[1:])


def test_train_epoch_counts_and_means():
    G, D, opt_g, opt_d = pair("mlp", (2,))
    batches = [(torch.randn(8, 2), torch.zeros(8)) for _ in range(5)]  # (x, y) tuples
    m = train_epoch(G, D, batches, opt_g, opt_d, GanLoss(LossConfig(name="wgan-gp")), n_critic=2)
    assert m["steps_d"] == 5 and m["steps_g"] == 2
    assert KEYS_D | {"loss_g", "grad_norm_g"} <= set(m)
    with pytest.raises(ValueError):
        train_epoch(G, D, batches, opt_g, opt_d, GanLoss(LossConfig()), n_critic=0)


def test_d_step_penalty_matches_standalone_gradient_penalty():
    # d_step folds the interpolates into its single D forward; it must equal the textbook form.
    G, D, _, opt_d = pair()
    real = torch.rand(16, 1, 8, 8) * 2 - 1
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        fake = G(G.sample_z(16, generator=gen))  # same draws, in the same order, as d_step
    expected = gradient_penalty(D, real, fake, generator=gen).item()
    m = d_step(G, D, real, opt_d, GanLoss(LossConfig(name="wgan-gp")), torch.Generator().manual_seed(5))
    assert expected > 0.01
    assert m["gp"] == pytest.approx(expected, rel=1e-5)


def test_ns_gan_learns_a_shifted_gaussian(one_thread):
    # End-to-end smoke: on 2-D data centred at (2, 2) the generator's mean must move there.
    torch.manual_seed(0)
    cfg = ModelConfig(arch="mlp", z_dim=8, width=32, depth=2)
    G, D = build_generator(cfg, (2,)), build_discriminator(cfg, (2,))
    opt_g, opt_d = build_optimizers(G, D, 1e-3, 1e-3, (0.5, 0.999))
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(4096, 2, generator=gen) * 0.3 + 2.0
    loss = GanLoss(LossConfig())
    dist = []
    for _ in range(12):
        train_epoch(G, D, data[torch.randperm(4096, generator=gen)].split(128), opt_g, opt_d, loss, gen=gen)
        with torch.no_grad():
            dist.append((G(G.sample_z(2048, generator=gen)).mean(0) - 2.0).norm().item())
    assert dist[0] > 0.8  # started far away (G's output starts near the origin)
    assert sum(dist[-4:]) / 4 < 0.5, dist  # GANs oscillate: judge the last few epochs together
