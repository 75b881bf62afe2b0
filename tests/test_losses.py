import math

import pytest
import torch

from gan_core.config import LOSS_NAMES, LossConfig
from gan_core.losses import F_DIVERGENCES, LOSS_ROWS, LOSSES, GanLoss


def L(name: str, **kw) -> GanLoss:
    return GanLoss(LossConfig(name=name, **kw))


NS = L("non-saturating")
T = torch.tensor


def test_row_defaults_user_overrides_and_aliases():
    assert not NS.row.critic and not NS.uses_gp and not NS.uses_r1 and NS.clip is None
    wgp = GanLoss(LossConfig.model_validate("wgan-gp"))
    assert wgp.row.critic and wgp.uses_gp and wgp.gp_weight == 10.0 and wgp.clip is None
    assert not L("wgan-gp", gp_weight=0.0).uses_gp  # the user's 0 turns the row's GP off
    assert L("wgan-gp", gp_weight=2.5).gp_weight == 2.5
    w = GanLoss(LossConfig.model_validate("wgan-clip"))
    assert w.row.name == "wgan" and w.row.critic and w.clip == 0.01 and not w.uses_gp
    assert L("wgan", clip=0.05).clip == 0.05
    assert GanLoss(LossConfig.model_validate("ns")).row is LOSSES["non-saturating"]
    # GP and R1 are not tied to a loss family.
    hinge_gp = L("hinge", gp_weight=1.0, clip=0.1, r1_gamma=0.5)
    assert hinge_gp.uses_gp and hinge_gp.uses_r1 and hinge_gp.clip == 0.1
    assert not hinge_gp.row.critic


def test_every_loss_name_has_exactly_one_row():
    names = [row.name for row in LOSS_ROWS]
    assert sorted(names) == sorted(LOSS_NAMES) and len(set(names)) == len(names)
    assert {n for n in LOSS_NAMES if LOSSES[n].critic} == {"wgan", "wgan-gp"}
    assert {n: (r.gp_weight, r.clip) for n, r in LOSSES.items() if r.gp_weight or r.clip} == \
        {"wgan": (0.0, 0.01), "wgan-gp": (10.0, None)}


def test_add_penalties_weights_each_penalty_and_reports_them_unweighted():
    gp_grad, r1_grad = T([[3.0, 4.0], [0.6, 0.8]]), T([[1.0, 2.0], [0.0, 2.0]])  # norms 5, 1; sq 5, 4
    adv = T(1.0)
    total, gp, r1, r2 = L("hinge", gp_weight=2.0, r1_gamma=3.0).add_penalties(adv, gp_grad, r1_grad)
    assert gp.item() == pytest.approx(8.0) and r1.item() == pytest.approx(4.5)  # (16+0)/2, (5+4)/2
    assert r2.item() == 0.0
    assert total.item() == pytest.approx(1.0 + 2.0 * 8.0 + 0.5 * 3.0 * 4.5)
    one_sided = L("hinge", gp_weight=1.0, gp_one_sided=True).add_penalties(adv, T([[0.3, 0.4]]), None)
    assert one_sided[1].item() == 0.0 and one_sided[2].item() == 0.0  # norm 0.5 < 1; no R1 asked for
    assert L("hinge", gp_weight=1.0).add_penalties(adv, T([[0.3, 0.4]]), None)[1].item() == pytest.approx(0.25)
    # The row's lambda when the user leaves gp_weight unset.
    assert L("wgan-gp").add_penalties(adv, gp_grad, None)[0].item() == pytest.approx(1.0 + 10 * 8.0)
    total, gp, r1, r2 = NS.add_penalties(adv, None, None)
    assert total is adv and gp.item() == 0.0 and r1.item() == 0.0 and r2.item() == 0.0
    # R2 (rpgan): the R1 form on fake rows, at R1's gamma, lazy as R1.
    total, gp, r1, r2 = L("rpgan", r1_gamma=2.0).add_penalties(adv, None, r1_grad, r1_every=4, r2_grad=gp_grad)
    assert r1.item() == pytest.approx(4.5) and r2.item() == pytest.approx(13.0)  # (25+1)/2
    assert total.item() == pytest.approx(1.0 + 0.5 * 2.0 * 4 * (4.5 + 13.0))


def test_rpgan_pairs_rows_and_needs_real_scores_for_g():
    rp = L("rpgan", r1_gamma=0.1)
    assert rp.row.paired and rp.uses_r1 and rp.uses_r2 and not L("rpgan").uses_r2
    assert GanLoss(LossConfig.model_validate("r3gan")).row is LOSSES["rpgan"]
    assert not NS.uses_r2 and not L("non-saturating", r1_gamma=0.1).uses_r2  # R2 comes with rpgan only
    real, fake = T([2.0, 0.0]), T([0.0, 1.0])
    # Row by row: softplus(f - r) = log(1 + e^(f - r)), not the unpaired BCE's sum of two means.
    assert rp.d_loss(real, fake).item() == pytest.approx((math.log1p(math.exp(-2)) + math.log1p(math.e)) / 2)
    assert rp.g_loss(fake, real).item() == pytest.approx((math.log1p(math.exp(2)) + math.log1p(math.exp(-1))) / 2)
    # Equal scores: D cannot tell the pair apart, log 2 each way.
    assert rp.d_loss(fake, fake).item() == pytest.approx(math.log(2)) == rp.g_loss(fake, fake).item()
    with pytest.raises(ValueError, match="pairs fakes with reals"):
        rp.g_loss(fake)


def test_bce_d_loss_values():
    big = torch.full((4,), 50.0)
    for loss in (NS, L("saturating")):
        # A perfect, confident D has ~zero loss, and stays finite (softplus form, no log(0)).
        assert loss.d_loss(big, -big).item() == pytest.approx(0.0, abs=1e-12)
        assert loss.d_loss(-big, big).item() == pytest.approx(100.0, rel=1e-6)
        assert loss.d_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(2 * math.log(2), rel=1e-6)
        huge = torch.full((2,), 1e4)
        assert torch.isfinite(loss.d_loss(-huge, huge))


def test_ns_matches_bce():
    real, fake = torch.randn(16), torch.randn(16)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = bce(real, torch.ones(16)) + bce(fake, torch.zeros(16))
    assert NS.d_loss(real, fake).item() == pytest.approx(expected.item(), rel=1e-6)
    assert NS.g_loss(fake).item() == pytest.approx(bce(fake, torch.ones(16)).item(), rel=1e-6)


def test_g_loss_values():
    s = T([0.0, 1.0])
    # saturating: mean log(1 - sigmoid(s))
    assert L("saturating").g_loss(s).item() == pytest.approx(
        (math.log(1 - 0.5) + math.log(1 - 1 / (1 + math.exp(-1)))) / 2, rel=1e-6)
    assert NS.g_loss(T([0.0])).item() == pytest.approx(math.log(2), rel=1e-6)
    fake = T([0.0, 2.0])
    assert L("least-squares").g_loss(fake).item() == pytest.approx(0.5)  # 0.5 * mean(1, 1)
    assert L("hinge").g_loss(fake).item() == pytest.approx(-1.0)
    assert L("wgan").g_loss(fake).item() == pytest.approx(-1.0)


def test_wgan_values_and_grads():
    real = T([1.0, 2.0, 3.0])
    fake = T([-1.0, 0.5], requires_grad=True)
    for name in ("wgan", "wgan-gp"):
        loss = L(name)
        assert loss.d_loss(real, fake).item() == pytest.approx(-0.25 - 2.0)
        fake.grad = None
        g = loss.g_loss(fake)
        assert g.item() == pytest.approx(0.25)
        g.backward()
        assert torch.allclose(fake.grad, T([-0.5, -0.5]))


def test_hinge_d_loss():
    hinge = L("hinge")
    assert hinge.d_loss(T([2.0, 0.5]), T([-2.0, 0.0])).item() == pytest.approx(0.25 + 0.5)
    # Margins met (real > 1, fake < -1): zero loss and zero gradient, unlike BCE.
    real = T([1.5, 3.0], requires_grad=True)
    fake = T([-1.2, -4.0], requires_grad=True)
    d = hinge.d_loss(real, fake)
    d.backward()
    assert d.item() == 0.0 and not real.grad.any() and not fake.grad.any()


def test_least_squares_d_loss():
    # 0.5 * mean((1-1)^2, (3-1)^2) + 0.5 * mean(0^2, 2^2) = 1 + 1
    assert L("least-squares").d_loss(T([1.0, 3.0]), T([0.0, 2.0])).item() == pytest.approx(2.0)
    assert L("least-squares").d_loss(T([1.0]), T([0.0])).item() == 0.0


@pytest.mark.parametrize("name,real_term,fake_term", [
    ("f-kl", lambda v: v, lambda v: math.exp(v - 1)),
    ("f-reverse-kl", lambda v: -math.exp(-v), lambda v: v - 1),
    ("f-pearson", lambda v: v, lambda v: v * v / 4 + v),
    ("f-hellinger", lambda v: 1 - math.exp(-v), lambda v: math.exp(v) - 1),
    ("f-js", lambda v: math.log(2) - math.log1p(math.exp(-v)), lambda v: math.log1p(math.exp(v)) - math.log(2)),
])
def test_f_gan_values(name, real_term, fake_term):
    real, fake = [0.5, -0.3], [0.2, 1.1]
    loss = L(name)
    expected_d = -(sum(map(real_term, real)) / 2 - sum(map(fake_term, fake)) / 2)
    assert loss.d_loss(T(real), T(fake)).item() == pytest.approx(expected_d, rel=1e-5)
    assert loss.g_loss(T(fake)).item() == pytest.approx(-sum(map(real_term, fake)) / 2, rel=1e-5)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_gradient_signs(name):
    # Off the flat parts and short of LSGAN's targets (real 1, fake 0): D pushes real scores up
    # and fake scores down; G pushes fake scores up.
    loss = L(name)
    real = T([-0.5, 0.0, 0.5], requires_grad=True)
    fake = T([0.25, 0.5, 0.75], requires_grad=True)
    d = loss.d_loss(real, fake)
    d.backward()
    assert torch.isfinite(d) and (real.grad < 0).all() and (fake.grad > 0).all(), (real.grad, fake.grad)
    fake.grad = None
    loss.g_loss(fake, real.detach() if loss.row.paired else None).backward()
    assert (fake.grad < 0).all(), fake.grad


def test_saturating_g_gradient_vanishes_non_saturating_does_not():
    # Goodfellow et al. 2014, Sec. 3: when D confidently rejects fakes (D(G(z)) ~ 0, s = -10),
    # log(1 - D) is flat, so the minimax G learns nothing; -log D keeps a unit-size gradient.
    grads = {}
    for name in ("saturating", "non-saturating"):
        s = T([-10.0], requires_grad=True)
        L(name).g_loss(s).backward()
        grads[name] = s.grad.item()
    assert abs(grads["saturating"]) < 1e-3
    assert grads["non-saturating"] == pytest.approx(-1.0, abs=1e-3)


# Generator functions f of each divergence (Nowozin et al. 2016, Table 1), for Fenchel-Young.
GENERATORS = {
    "f-kl": lambda u: u * torch.log(u),
    "f-reverse-kl": lambda u: -torch.log(u),
    "f-pearson": lambda u: (u - 1).square(),
    "f-hellinger": lambda u: (u.sqrt() - 1).square(),
    "f-js": lambda u: -(u + 1) * torch.log((1 + u) / 2) + u * torch.log(u),
}


def test_f_table_covers_every_f_loss():
    assert set(F_DIVERGENCES) == {n for n in LOSS_NAMES if n.startswith("f-")} == set(GENERATORS)


@pytest.mark.parametrize("name,t,expected", [
    ("f-kl", 1.0, 1.0), ("f-kl", 0.0, math.exp(-1)),
    ("f-reverse-kl", -1.0, -1.0), ("f-reverse-kl", -0.5, -1 + math.log(2)),
    ("f-pearson", 2.0, 3.0), ("f-pearson", -2.0, -1.0),
    ("f-hellinger", 0.5, 1.0), ("f-hellinger", -1.0, -0.5),
    ("f-js", 0.0, 0.0), ("f-js", math.log(1.5), math.log(2)),
])
def test_conjugate_formulas(name, t, expected):
    assert F_DIVERGENCES[name].conjugate(T(t, dtype=torch.float64)).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", sorted(F_DIVERGENCES))
def test_conjugate_of_activation_is_the_stable_composition(name):
    f = F_DIVERGENCES[name]
    v = torch.linspace(-3, 3, 61, dtype=torch.float64)
    assert torch.allclose(f.conjugate_of_activation(v), f.conjugate(f.activation(v)), rtol=1e-10, atol=1e-12)


def test_stable_forms_stay_finite_where_the_naive_ones_overflow():
    v = T([40.0])  # float32: 1 - exp(-40) == 1 and 2 sigmoid(40) == 2, so the naive forms are inf
    js, hel = F_DIVERGENCES["f-js"], F_DIVERGENCES["f-hellinger"]
    assert torch.isinf(js.conjugate(js.activation(v))).all()
    assert js.conjugate_of_activation(v).item() == pytest.approx(40 - math.log(2), rel=1e-6)
    assert torch.isinf(hel.conjugate(hel.activation(v))).all()
    assert torch.isfinite(hel.conjugate_of_activation(v)).all()


@pytest.mark.parametrize("name", sorted(F_DIVERGENCES))
def test_fenchel_young_and_tightness(name):
    # f*(t) = sup_u t*u - f(u): every u gives a lower bound, and the sup over a fine grid reaches it.
    f, fd = GENERATORS[name], F_DIVERGENCES[name]
    u = torch.logspace(-3, 1.5, 20001, dtype=torch.float64)[:, None]
    t = fd.activation(torch.linspace(-1, 1, 21, dtype=torch.float64))[None, :]  # inside dom f*
    conj = fd.conjugate(t)[0]
    bound = t * u - f(u)
    assert (conj >= bound - 1e-12).all()
    assert torch.allclose(bound.max(0).values, conj, atol=1e-6)
