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


def test_rpgan_d_step_r1_and_r2_match_the_standalone_forms_and_g_step_pairs_real_scores():
    # R3GAN's loss: softplus(D(fake) - D(real)) row by row + gamma/2 (R1 on reals + R2 on fakes), R2 from the
    # same fused forward as R1; with SGD lr=1 the D update is exactly minus the textbook sum's gradient.
    G, D, opt_g, _ = pair("mlp", (2,))
    loss = GanLoss(LossConfig(name="rpgan", r1_gamma=3.0))
    real = torch.randn(16, 2) * 0.5 + 1
    ref = copy.deepcopy(D)
    with torch.no_grad():
        fake = G(G.sample_z(16, generator=torch.Generator().manual_seed(3)))
    r1, r2 = r1_penalty(ref, real), r1_penalty(ref, fake)
    total = loss.d_loss(ref(real), ref(fake)) + 1.5 * (r1 + r2)
    total.backward()
    before = [p.detach().clone() for p in D.parameters()]
    m = d_step(G, D, real, torch.optim.SGD(D.parameters(), lr=1.0), loss, torch.Generator().manual_seed(3))
    assert r2.item() > 1e-3 and m["r2"] == pytest.approx(r2.item(), rel=1e-5)
    assert m["r1"] == pytest.approx(r1.item(), rel=1e-5) and m["loss_d"] == pytest.approx(total.item(), rel=1e-5)
    for b, p, r in zip(before, D.parameters(), ref.parameters()):
        assert torch.allclose(b - p.detach(), r.grad, rtol=1e-4, atol=1e-6)
    # G's step scores the real rows it is paired with, and refuses to run without them.
    with torch.no_grad():
        z = G.sample_z(16, generator=torch.Generator().manual_seed(5))
        expected = loss.g_loss(D(G(z)), D(real))
    m = g_step(G, D, 16, opt_g, loss, "cpu", torch.Generator().manual_seed(5), real=real)
    assert m["loss_g"] == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="pairs fakes with reals"):
        g_step(G, D, 16, opt_g, loss, "cpu")
    # Other losses take no R2 and log none.
    assert "r2" not in d_step(G, D, real, torch.optim.SGD(D.parameters(), lr=0.1), GanLoss(LossConfig(r1_gamma=3.0)))


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


# -- speed options: bf16 autocast, lazy R1, channels_last, compiled nets (issue 26) ----------------

def image_pair(shape=(3, 16, 16), loss_cfg=None):
    torch.manual_seed(0)
    cfg = ModelConfig(arch="dcgan", z_dim=8, width=8)
    G, D = build_generator(cfg, shape), build_discriminator(cfg, shape)
    return G, D, *build_optimizers(G, D, ADAM)


def image_batches(shape, n=3, batch=8, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, *shape, generator=gen) * 2 - 1 for _ in range(n)]


def watch_d(D):
    """Per D forward: (in a D step, i.e. D's parameters trainable; autocast on; input requires grad = R1's leaf)."""
    calls = []
    D.register_forward_pre_hook(lambda m, args: calls.append(
        (next(m.parameters()).requires_grad, torch.is_autocast_enabled("cpu"), args[0].requires_grad)))
    return calls


def state_format(*modules):
    return [(k, v.dtype, tuple(v.shape)) for m in modules for k, v in m.state_dict().items()]


def opt_format(opt):
    return [(k, v.dtype) for s in opt.state_dict()["state"].values() for k, v in s.items()]


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16)])
def test_bf16_epochs_are_finite_and_keep_the_fp32_checkpoint_format(shape):
    loss = GanLoss(LossConfig(r1_gamma=0.1))
    ref = image_pair(shape)
    train_epoch(*ref[:2], image_batches(shape), ref[2], ref[3], loss, gen=torch.Generator().manual_seed(0))
    G, D, opt_g, opt_d = image_pair(shape)
    calls = watch_d(D)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(3):  # R1 every 2nd D step: fp32 and bf16 D steps both happen
        m = train_epoch(G, D, image_batches(shape, seed=epoch), opt_g, opt_d, loss, gen=gen, amp=torch.bfloat16,
                        r1_every=2, step0=3 * epoch)
        assert finite(m) and m["nonfinite"] == 0.0 and m["r1"] > 0, m
    assert {ac for in_d, ac, _ in calls if not in_d} == {True}  # every G step's D forward under autocast
    assert {ac for in_d, ac, _ in calls if in_d} == {True, False}
    # Same checkpoint: keys, dtypes (fp32 parameters, BN statistics, Adam moments) and shapes.
    assert state_format(G, D) == state_format(*ref[:2])
    assert all(p.dtype == torch.float32 for p in [*G.parameters(), *D.parameters()])
    assert opt_format(opt_g) == opt_format(ref[2]) and opt_format(opt_d) == opt_format(ref[3])
    moments = {v.dtype for s in opt_d.state_dict()["state"].values() for k, v in s.items() if k != "step"}
    assert moments == {torch.float32}
    # bf16 really ran: the result is near, not equal to, the fp32 one's.
    assert not all(torch.equal(a, b) for a, b in zip(G.parameters(), ref[0].parameters()))


def test_lazy_r1_is_taken_on_exactly_the_steps_i_mod_k_and_in_fp32():
    G, D, opt_g, opt_d = image_pair((3, 8, 8))
    calls = watch_d(D)
    # Global D steps 2..10 (step0=2): R1 at 4 and 8 only.
    m = train_epoch(G, D, image_batches((3, 8, 8), n=9), opt_g, opt_d, GanLoss(LossConfig(r1_gamma=1.0)),
                    gen=torch.Generator().manual_seed(0), amp=torch.bfloat16, r1_every=4, step0=2)
    d_calls = [(ac, leaf) for in_d, ac, leaf in calls if in_d]
    assert len(d_calls) == 9 and m["steps_d"] == 9  # still one D forward per D step
    assert [leaf for _, leaf in d_calls] == [i % 4 == 0 for i in range(2, 11)]
    assert [ac for ac, _ in d_calls] == [i % 4 != 0 for i in range(2, 11)]  # R1 steps: fp32; others bf16
    assert m["r1"] > 0
    # Eager r1_every=1 takes it every step.
    G, D, opt_g, opt_d = image_pair((3, 8, 8))
    calls = watch_d(D)
    train_epoch(G, D, image_batches((3, 8, 8), n=5), opt_g, opt_d, GanLoss(LossConfig(r1_gamma=1.0)), step0=3)
    assert [(ac, leaf) for in_d, ac, leaf in calls if in_d] == [(False, True)] * 5


def test_gp_d_steps_stay_fp32_under_amp():
    G, D, opt_g, opt_d = image_pair((3, 8, 8))
    calls = watch_d(D)
    m = train_epoch(G, D, image_batches((3, 8, 8), n=4), opt_g, opt_d, GanLoss(LossConfig(name="wgan-gp")),
                    n_critic=2, gen=torch.Generator().manual_seed(0), amp=torch.bfloat16, r1_every=3)
    assert finite(m) and m["gp"] > 0 and "r1" in m and m["r1"] == 0.0  # R1 off: reported 0 as before
    assert [ac for in_d, ac, _ in calls if in_d] == [False] * 4
    assert [ac for in_d, ac, _ in calls if not in_d] == [True] * 2


def test_lazy_r1_step_weights_r1_by_k_and_other_steps_skip_it():
    # SGD lr=1: the update is -grad. The step taking R1 equals eager R1 with gamma x k; a skipped step
    # equals a loss without R1, and reports no "r1".
    G, D, _, _ = pair("mlp", (2,))  # PyTorch's init: R1 ~1e-3 (DCGAN's N(0, 0.02) makes it ~1e-6)
    real = torch.randn(16, 2) + 1

    def update(loss_cfg, **kw):
        d = copy.deepcopy(D)
        before = [p.detach().clone() for p in d.parameters()]
        m = d_step(G, d, real, torch.optim.SGD(d.parameters(), lr=1.0), GanLoss(loss_cfg),
                   torch.Generator().manual_seed(0), **kw)
        return m, [b - p.detach() for b, p in zip(before, d.parameters())]

    m4, lazy = update(LossConfig(r1_gamma=0.5), r1_every=4, step=8)
    m1, eager = update(LossConfig(r1_gamma=2.0))
    assert m4["r1"] == pytest.approx(m1["r1"], rel=1e-6) and m4["r1"] > 1e-4
    assert m4["loss_d"] == pytest.approx(m1["loss_d"], rel=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in zip(lazy, eager))
    m_skip, skipped = update(LossConfig(r1_gamma=0.5), r1_every=4, step=9)
    m_off, off = update(LossConfig(r1_gamma=0.0))
    assert "r1" not in m_skip and m_skip["loss_d"] == m_off["loss_d"]
    assert all(torch.equal(a, b) for a, b in zip(skipped, off))
    assert not all(torch.allclose(a, b) for a, b in zip(lazy, off))  # R1 did matter on the step taking it
    with pytest.raises(ValueError, match="r1_every"):
        update(LossConfig(r1_gamma=0.5), r1_every=0)


# train_epoch's metrics on _seeded_epoch(), from steps.py before amp / r1_every existed (equal on 1 and 2
# threads). Doubling r1_gamma moves loss_d by 1e-3 relative, so rel=1e-4 catches a changed R1 weight or
# autocast on by default, and leaves room for another CPU's kernels.
EXPECTED_DEFAULT = {"loss_d": 1.426793098449707, "loss_g": 0.7636682689189911, "r1": 0.0030743020470254123}


def _seeded_epoch(**kw):
    G, D, opt_g, opt_d = pair("mlp", (2,))
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(16, 2, generator=gen) + 1 for _ in range(4)]
    m = train_epoch(G, D, batches, opt_g, opt_d, GanLoss(LossConfig(r1_gamma=1.0)),
                    gen=torch.Generator().manual_seed(0), ema=EMA(G, decay=0.5), **kw)
    return m, [t.clone() for t in [*G.state_dict().values(), *D.state_dict().values()]]


def test_defaults_unchanged():
    m, state = _seeded_epoch()
    assert m["loss_d"] == pytest.approx(EXPECTED_DEFAULT["loss_d"], rel=1e-4)
    assert m["loss_g"] == pytest.approx(EXPECTED_DEFAULT["loss_g"], rel=1e-4)
    assert m["r1"] == pytest.approx(EXPECTED_DEFAULT["r1"], rel=1e-4)
    # Bit for bit: the explicit defaults, and r1_every=1 from any step0 (resumed runs), are the same step.
    for kw in (dict(amp=None, r1_every=1, step0=0, channels_last=False), dict(r1_every=1, step0=7)):
        m2, state2 = _seeded_epoch(**kw)
        assert m2 == m and all(torch.equal(a, b) for a, b in zip(state, state2)), kw


def test_channels_last_modules_train_like_contiguous_ones():
    shape = (3, 16, 16)
    loss = GanLoss(LossConfig(r1_gamma=0.1))
    ref = image_pair(shape)
    m_ref = train_epoch(*ref[:2], image_batches(shape), ref[2], ref[3], loss, gen=torch.Generator().manual_seed(0))
    G, D, opt_g, opt_d = image_pair(shape)
    G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    seen = []
    D.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    m = train_epoch(G, D, image_batches(shape), opt_g, opt_d, loss, gen=torch.Generator().manual_seed(0),
                    channels_last=True)
    assert seen and all(seen)  # real rows arrive channels_last, so D's input is
    assert finite(m) and m["loss_d"] == pytest.approx(m_ref["loss_d"], rel=1e-4)
    assert state_format(G, D) == state_format(*ref[:2])
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(G.parameters(), ref[0].parameters()))
    from gan_core.steps import to_device
    x = torch.rand(2, 3, 4, 4)
    assert to_device(x, "cpu") is x and to_device(x, "cpu", channels_last=True).is_contiguous(
        memory_format=torch.channels_last)
    assert to_device(torch.rand(4, 2), "cpu", channels_last=True).shape == (4, 2)  # points: left alone


def test_compiled_modules_train_with_r1_and_keep_state_dict_keys():
    # aot_eager: the autograd path of torch.compile (which has no double backward) without compiling C++.
    shape = (1, 8, 8)
    G, D, opt_g, opt_d = image_pair(shape)
    keys = list(G.state_dict()), list(D.state_dict())
    D.compile(backend="aot_eager")  # D: the one whose penalty takes a double backward
    m = train_epoch(G, D, image_batches(shape, n=3), opt_g, opt_d, GanLoss(LossConfig(r1_gamma=1.0)),
                    gen=torch.Generator().manual_seed(0), r1_every=2, amp=torch.bfloat16)
    assert finite(m) and m["r1"] > 0 and m["steps_d"] == 3
    assert (list(G.state_dict()), list(D.state_dict())) == keys
