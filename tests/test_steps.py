"""Single-process behaviour of the training steps (the DDP path is in test_ddp_steps.py)."""
import copy
import math

import pytest
import torch
from torch import nn

from gan_core.config import LOSS_NAMES, LossConfig, ModelConfig, OptimConfig, ResolvedOptim
from gan_core.ema import EMA
from gan_core.losses import GanLoss
from gan_core.models import build_discriminator, build_generator
from gan_core.recipes import resolve
from gan_core.regularisers import gradient_penalty, r1_penalty
from gan_core.steps import build_optimizers, d_step, g_step, train_epoch

KEYS_D = {"loss_d", "d_acc_real", "d_acc_fake", "d_real_score", "d_fake_score", "wasserstein",
          "grad_norm_d", "gp", "r1", "d_saturated"}
ADAM = ResolvedOptim("adam", 1e-3, 1e-3, (0.5, 0.999), 1)
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: extra threads only contend


def pair(arch="dcgan", shape=(1, 8, 8), optim=ADAM):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, z_dim=8, width=8, depth=2)
    G, D = build_generator(cfg, shape), build_discriminator(cfg, shape)
    return G, D, *build_optimizers(G, D, optim)


def finite(metrics: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_d_step_every_loss(name):
    G, D, _, opt_d = pair("mlp", (2,))
    loss = GanLoss(LossConfig(name=name))
    g_before = [p.clone() for p in G.parameters()]
    d_before = [p.clone() for p in D.parameters()]
    m = d_step(G, D, torch.randn(16, 2), opt_d, loss, torch.Generator().manual_seed(0))
    assert set(m) == KEYS_D and finite(m), m
    assert 0 <= m["d_acc_real"] <= 1 and 0 <= m["d_acc_fake"] <= 1
    assert m["wasserstein"] == pytest.approx(m["d_real_score"] - m["d_fake_score"])
    assert m["grad_norm_d"] > 0 and m["r1"] == 0.0
    assert (m["gp"] > 0) == (name == "wgan-gp")
    if name == "wgan-gp":  # loss = W-loss + 10 * gp
        assert m["loss_d"] == pytest.approx(-m["wasserstein"] + 10 * m["gp"], rel=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(g_before, G.parameters()))  # G untouched
    assert any(not torch.equal(a, b) for a, b in zip(d_before, D.parameters()))


def test_d_step_dcgan_with_gp():
    G, D, _, opt_d = pair()
    m = d_step(G, D, torch.rand(16, 1, 8, 8) * 2 - 1, opt_d, GanLoss(LossConfig(name="wgan-gp")))
    assert finite(m) and m["gp"] > 0


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


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_train_epoch_every_loss_with_its_recipe(name):
    loss_cfg = LossConfig(name=name)
    optim = resolve(loss_cfg, OptimConfig())
    G, D, opt_g, opt_d = pair("mlp", (2,), optim)
    batches = [(torch.randn(8, 2), torch.zeros(8)) for _ in range(5)]  # (x, y) tuples, y ignored
    m = train_epoch(G, D, batches, opt_g, opt_d, GanLoss(loss_cfg), n_critic=optim.n_critic)
    assert m["steps_d"] == 5 and m["steps_g"] == 5 // optim.n_critic
    assert KEYS_D | {"loss_g", "grad_norm_g", "nonfinite"} <= set(m)
    assert finite(m) and m["nonfinite"] == 0.0, m


def test_train_epoch_counts_and_plain_tensor_batches():
    G, D, opt_g, opt_d = pair("mlp", (2,))
    m = train_epoch(G, D, [torch.randn(8, 2) for _ in range(5)], opt_g, opt_d,
                    GanLoss(LossConfig(name="wgan-gp")), n_critic=2)
    assert m["steps_d"] == 5 and m["steps_g"] == 2
    with pytest.raises(ValueError):
        train_epoch(G, D, [torch.randn(8, 2)], opt_g, opt_d, GanLoss(LossConfig()), n_critic=0)


def test_train_epoch_updates_ema_after_each_g_step():
    G, D, opt_g, opt_d = pair("mlp", (2,))
    ema = EMA(G, decay=0.0)
    m = train_epoch(G, D, [torch.randn(8, 2) for _ in range(6)], opt_g, opt_d, GanLoss(LossConfig()),
                    n_critic=2, ema=ema)
    assert ema.n_updates == m["steps_g"] == 3
    assert all(torch.equal(a, b) for a, b in zip(ema.module.parameters(), G.parameters()))


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


def test_d_step_gp_and_r1_match_the_standalone_forms_in_value_and_gradient():
    # NS + GP + R1 at once: the fused single-forward version must produce the same loss AND the
    # same D update as the textbook sum (with SGD lr=1 the update is exactly -grad).
    G, D, _, _ = pair("mlp", (2,))
    loss = GanLoss(LossConfig(name="non-saturating", gp_weight=2.0, r1_gamma=3.0))
    real = torch.randn(16, 2) * 0.5 + 1
    ref = copy.deepcopy(D)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        fake = G(G.sample_z(16, generator=gen))
    gp = gradient_penalty(ref, real, fake, generator=gen)
    r1 = r1_penalty(ref, real)
    total = loss.d_loss(ref(real), ref(fake)) + 2.0 * gp + 1.5 * r1
    total.backward()

    before = [p.detach().clone() for p in D.parameters()]
    m = d_step(G, D, real, torch.optim.SGD(D.parameters(), lr=1.0), loss, torch.Generator().manual_seed(3))
    assert gp.item() > 1e-3 and r1.item() > 1e-3
    assert m["gp"] == pytest.approx(gp.item(), rel=1e-5) and m["r1"] == pytest.approx(r1.item(), rel=1e-5)
    assert m["loss_d"] == pytest.approx(total.item(), rel=1e-5)
    for b, p, r in zip(before, D.parameters(), ref.parameters()):
        assert torch.allclose(b - p.detach(), r.grad, rtol=1e-4, atol=1e-6)


def test_wgan_clips_every_d_weight():
    optim = resolve(LossConfig(name="wgan"), OptimConfig(lr_d=0.1))
    G, D, _, opt_d = pair("mlp", (2,), optim)
    assert any(p.abs().max() > 0.01 for p in D.parameters())  # PyTorch's init is well outside c
    d_step(G, D, torch.randn(8, 2), opt_d, GanLoss(LossConfig(name="wgan")))
    assert all(p.abs().max() <= 0.01 for p in D.parameters())
    assert any((p.abs() == 0.01).any() for p in D.parameters())  # the clamp bit, not a tiny init
    # other losses leave the weights alone
    G, D, _, opt_d = pair("mlp", (2,), optim)
    d_step(G, D, torch.randn(8, 2), opt_d, GanLoss(LossConfig(name="wgan-gp")))
    assert any(p.abs().max() > 0.01 for p in D.parameters())


# -- non-finite guard ---------------------------------------------------------------------------

class NaND(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) * float("nan")


def test_nonfinite_guard_stops_on_a_nan_discriminator():
    G, D, opt_g, _ = pair("mlp", (2,))
    D = NaND(D)
    opt_d = torch.optim.Adam(D.parameters())
    m = train_epoch(G, D, [torch.randn(8, 2) for _ in range(5)], opt_g, opt_d, GanLoss(LossConfig()))
    # Stops at the end of the first batch (its G step included: ranks agree once per batch).
    assert m["nonfinite"] == 1.0 and m["steps_d"] == 1 and m["steps_g"] == 1
    assert math.isnan(m["loss_d"])


def test_nonfinite_guard_stops_a_diverging_run():
    G, D, opt_g, opt_d = pair("mlp", (2,), ResolvedOptim("adam", 1e30, 1e30, (0.5, 0.999), 1))
    m = train_epoch(G, D, [torch.randn(8, 2) for _ in range(10)], opt_g, opt_d,
                    GanLoss(LossConfig(name="wgan-gp")))
    assert m["nonfinite"] == 1.0 and m["steps_d"] < 10, m


# -- class conditioning, with stub models (the real conditional models live in models.py) ----------

class CondG(nn.Module):
    """MLP generator with a class embedding added to its hidden features; records its labels."""

    def __init__(self, z_dim=4, classes=3, dim=2):
        super().__init__()
        self.z_dim, self.classes = z_dim, classes
        self.inp, self.emb, self.out = nn.Linear(z_dim, 16), nn.Embedding(classes, 16), nn.Linear(16, dim)
        self.seen: list[torch.Tensor] = []

    def sample_z(self, n, device=None, generator=None):
        return torch.randn(n, self.z_dim, generator=generator).to(device or "cpu")

    def sample_labels(self, n, device=None, generator=None):
        return torch.randint(self.classes, (n,), generator=generator).to(device or "cpu")

    def forward(self, z, y):
        self.seen.append(y)
        return self.out(torch.relu(self.inp(z) + self.emb(y)))


class CondD(nn.Module):
    def __init__(self, classes=3, dim=2):
        super().__init__()
        self.inp, self.emb, self.out = nn.Linear(dim, 16), nn.Embedding(classes, 16), nn.Linear(16, 1)
        self.seen: list[torch.Tensor] = []

    def forward(self, x, y):
        self.seen.append(y)
        return self.out(nn.functional.leaky_relu(self.inp(x) + self.emb(y), 0.2)).squeeze(1)


def cond_pair():
    torch.manual_seed(0)
    G, D = CondG(), CondD()
    return G, D, *build_optimizers(G, D, ADAM)


def test_conditional_d_step_routes_labels():
    G, D, _, opt_d = cond_pair()
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    loss = GanLoss(LossConfig(name="wgan-gp", r1_gamma=1.0))
    m = d_step(G, D, torch.randn(6, 2), opt_d, loss, torch.Generator().manual_seed(0), labels=y)
    assert finite(m) and m["gp"] > 0 and m["r1"] > 0
    (fake_y,) = G.seen
    (d_y,) = D.seen  # still exactly one D forward
    # real rows: data labels, fake rows: G's labels, GP interpolates: the real labels
    assert torch.equal(d_y, torch.cat([y, fake_y, y]))
    # fake labels are drawn from the step's RNG, after z: reproducible
    gen = torch.Generator().manual_seed(0)
    G.sample_z(6, generator=gen)
    assert torch.equal(fake_y, G.sample_labels(6, generator=gen))


def test_conditional_g_step_uses_the_same_labels_for_g_and_d():
    G, D, opt_g, _ = cond_pair()
    y = torch.tensor([2, 0, 1, 1])
    g_step(G, D, 4, opt_g, GanLoss(LossConfig()), "cpu", labels=y)
    assert torch.equal(G.seen[0], y) and torch.equal(D.seen[0], y)


def test_conditional_train_epoch():
    G, D, opt_g, opt_d = cond_pair()
    batches = [(torch.randn(8, 2), torch.randint(3, (8,))) for _ in range(4)]
    m = train_epoch(G, D, batches, opt_g, opt_d, GanLoss(LossConfig(name="hinge")), conditional=True,
                    gen=torch.Generator().manual_seed(0))
    assert finite(m) and m["steps_d"] == 4 and m["steps_g"] == 4 and m["nonfinite"] == 0.0
    assert all(torch.equal(D.seen[2 * i][:8], batches[i][1]) for i in range(4))  # real labels reached D
    fake_labels = torch.cat([G.seen[2 * i + 1] for i in range(4)])  # the g_step draws
    assert set(fake_labels.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="conditional"):
        train_epoch(G, D, [torch.randn(8, 2)], opt_g, opt_d, GanLoss(LossConfig()), conditional=True)
    G.sample_labels = lambda *a, **k: None  # what models.py's unconditional generators answer
    with pytest.raises(ValueError, match="not class-conditional"):
        train_epoch(G, D, batches, opt_g, opt_d, GanLoss(LossConfig()), conditional=True)


def test_ns_gan_learns_a_shifted_gaussian(one_thread):
    # End-to-end smoke: on 2-D data centred at (2, 2) the generator's mean must move there.
    torch.manual_seed(0)
    cfg = ModelConfig(arch="mlp", z_dim=8, width=32, depth=2)
    G, D = build_generator(cfg, (2,)), build_discriminator(cfg, (2,))
    opt_g, opt_d = build_optimizers(G, D, ADAM)
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
