"""Differentiable augmentation (gan_core.augment) and its use inside the training steps."""
import copy
import datetime
import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pydantic import ValidationError
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from gan_core.augment import (OPS, Augment, AugmentConfig, adjust_p, augment, cutout, mirror, overfit_signal,
                              resumed_p, translation)
from gan_core.config import LossConfig, ModelConfig, ResolvedOptim
from gan_core.losses import GanLoss
from gan_core.models import build_discriminator, build_generator
from gan_core.regularisers import r1_penalty
from gan_core.steps import build_optimizers, d_step, g_step, train_epoch

ADAM = ResolvedOptim("adam", 1e-3, 1e-3, (0.5, 0.999), 1)
ALL = Augment(OPS, 1.0)
pytestmark = pytest.mark.usefixtures("one_thread")


def pair(shape=(1, 8, 8)):
    torch.manual_seed(0)
    cfg = ModelConfig(arch="dcgan", z_dim=8, width=8)
    G, D = build_generator(cfg, shape), build_discriminator(cfg, shape)
    return G, D, *build_optimizers(G, D, ADAM)


def images(n=8, c=1, seed=0):
    return torch.rand(n, c, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def record_inputs(D: nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    D.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    return seen


def record_outputs(G: nn.Module) -> list[torch.Tensor]:
    made: list[torch.Tensor] = []
    G.register_forward_hook(lambda m, args, out: made.append(out.detach().clone()))
    return made


def rows_all_differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a != b).flatten(1).any(1).all())


# --- (a) gradients reach G through the ops ---------------------------------------------------------

def test_gradient_flows_through_augmentation_to_g():
    G, D, _, _ = pair()
    z = G.sample_z(16, generator=torch.Generator().manual_seed(1))
    loss = D(augment(G(z), OPS, 1.0, torch.Generator().manual_seed(2))).mean()
    loss.backward()
    grads = [p.grad for p in G.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) > 0 for g in grads) == len(grads)  # every G parameter gets a gradient


@pytest.mark.parametrize("op", OPS)
def test_each_op_is_differentiable_in_its_input(op):
    x = images(6, c=3).requires_grad_(True)
    augment(x, [op], 1.0, torch.Generator().manual_seed(0)).square().sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_translation_and_cutout_move_and_hide_pixels():
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(200, 1, 1, 1).requires_grad_(True)
    y = translation(x, 1.0, torch.Generator().manual_seed(0))
    found = set()
    for xi, yi in zip(x.detach(), y.detach()):  # each row is its input shifted by <= 1 px, zero-filled
        shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                  if torch.equal(torch.roll(xi, (-dy, -dx), (1, 2))[:, 1:-1, 1:-1], yi[:, 1:-1, 1:-1])]
        assert len(shifts) == 1
        dy, dx = shifts[0]
        found.add(shifts[0])
        border = torch.ones(8, 8, dtype=torch.bool)
        border[max(0, -dy):8 - max(0, dy), max(0, -dx):8 - max(0, dx)] = False
        assert (yi[0][border] == 0).all()
    assert len(found) == 9  # every shift in {-1, 0, 1}^2 occurs (x and y drawn independently)
    # The gradient of a gather: 1 at every kept pixel, 0 at the ones shifted out.
    y.sum().backward()
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0} and x.grad.sum() > 0
    holes = cutout(torch.ones(200, 1, 8, 8), 1.0, torch.Generator().manual_seed(0)) == 0
    sizes = holes.flatten(1).sum(1)
    assert sizes.max() == 16 and sizes.min() >= 4  # a 4x4 square, clipped at the border to >= 2x2


def test_p_gates_each_sample():
    x = images(2000)
    y = augment(x, ["color"], 0.5, torch.Generator().manual_seed(0))
    changed = (y != x).flatten(1).any(1).float().mean()
    # brightness and contrast each on with p = 0.5: a sample is untouched with (1 - 0.5)^2
    assert 0.70 < float(changed) < 0.80
    # Translation is one op: a sample is shifted (in x, y or both) with p, not 1 - (1 - p)^2.
    moved = (translation(x, 0.5, torch.Generator().manual_seed(1)) != x).flatten(1).any(1).float().mean()
    assert 0.5 * 8 / 9 - 0.04 < float(moved) < 0.5 * 8 / 9 + 0.04  # a drawn shift is (0, 0) 1 time in 9
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert augment(x, OPS, 0.0, gen) is x and torch.equal(gen.get_state(), state)  # p = 0 draws nothing


# --- (b) D sees augmented reals AND fakes, inside the one forward ----------------------------------

def test_d_step_augments_real_and_fake():
    real = images(8)
    for aug, augmented in ((ALL, True), (Augment(OPS, 0.0), False), (None, False)):
        G, D, _, opt_d = pair()
        seen, made = record_inputs(D), record_outputs(G)
        m = d_step(G, D, real, opt_d, GanLoss(LossConfig()), torch.Generator().manual_seed(0), augment=aug)
        assert len(seen) == 1 and len(made) == 1  # still one D forward per step
        d_real, d_fake = seen[0][:8], seen[0][8:]
        if augmented:
            assert rows_all_differ(d_real, real) and rows_all_differ(d_fake, made[0])
        else:
            assert torch.equal(d_real, real) and torch.equal(d_fake, made[0])
        assert ("d_sign_real" in m) == (aug is not None)


def test_g_step_augments_the_fake_d_scores():
    for aug in (ALL, None):
        G, D, opt_g, _ = pair()
        seen, made = record_inputs(D), record_outputs(G)
        m = g_step(G, D, 8, opt_g, GanLoss(LossConfig()), "cpu", torch.Generator().manual_seed(0), augment=aug)
        assert m["grad_norm_g"] > 0
        assert rows_all_differ(seen[0], made[0]) if aug else torch.equal(seen[0], made[0])


def test_gp_interpolates_between_the_augmented_rows():
    G, D, _, opt_d = pair()
    seen = record_inputs(D)
    d_step(G, D, images(8), opt_d, GanLoss(LossConfig(name="wgan-gp")), torch.Generator().manual_seed(0),
           augment=ALL)
    r, f, x_hat = seen[0][:8], seen[0][8:16], seen[0][16:]
    # x_hat = eps * r + (1 - eps) * f for one eps per row: solve for eps, then check the residual
    d = (r - f).flatten(1)
    eps = ((x_hat - f).flatten(1) * d).sum(1) / d.square().sum(1)
    assert ((eps >= 0) & (eps <= 1)).all()
    torch.testing.assert_close(f + eps.view(-1, 1, 1, 1) * (r - f), x_hat, atol=1e-5, rtol=0)


def test_r1_is_taken_on_the_augmented_reals():
    G, D, _, opt_d = pair()
    D_before = copy.deepcopy(D)
    seen = record_inputs(D)
    m = d_step(G, D, images(8), opt_d, GanLoss(LossConfig(r1_gamma=1.0)), torch.Generator().manual_seed(0),
               augment=ALL)
    assert m["r1"] == pytest.approx(r1_penalty(D_before, seen[0][:8]).item(), rel=1e-4)
    assert m["r1"] != pytest.approx(r1_penalty(D_before, images(8)).item(), rel=1e-2)


# --- (c) the adaptive p ---------------------------------------------------------------------------

class ConstantD(nn.Module):
    """Scores every image +10: a classifier D that calls everything real."""

    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.tensor(10.0))

    def forward(self, x):
        return x.flatten(1).sum(1) * 0 + self.b


def test_signal_classifier_and_critic():
    s = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert float(overfit_signal(s.abs() + 0.1, -s.abs(), is_critic=False)) == 1.0
    assert float(overfit_signal(-s.abs() - 0.1, s, is_critic=False)) == -1.0
    # A critic's scores carry an arbitrary offset: reals and fakes scored alike (both around +100)
    # must read ~0, not the 1.0 that sign(D(x_real)) would give; reals all above the fakes read 1.
    same = overfit_signal(100 + s, 100 + s.flip(0), is_critic=True)
    assert abs(float(same)) < 0.1 and float(overfit_signal(100 + s, 100 + s, is_critic=False)) == 1.0
    assert float(overfit_signal(100 + s.abs() + 0.1, 100 - s.abs(), is_critic=True)) == 1.0


def test_d_step_reports_the_loss_kind_of_signal():
    G, _, _, _ = pair()
    for name, expected in (("non-saturating", 1.0), ("wgan-gp", 0.0)):
        D = ConstantD()
        opt_d = torch.optim.SGD(D.parameters(), lr=0.0)
        m = d_step(G, D, images(8), opt_d, GanLoss(LossConfig(name=name)), torch.Generator().manual_seed(0),
                   augment=ALL)
        assert m["d_sign_real"] == expected, name


def test_adaptive_p_rises_falls_and_clamps():
    cfg = AugmentConfig(policy="adaptive", speed_images=1000, p_max=0.8)
    assert adjust_p(0.0, 1.0, 100, cfg) == pytest.approx(0.1)  # D separates perfectly: more augmentation
    assert adjust_p(0.5, -1.0, 100, cfg) == pytest.approx(0.4)  # D cannot: less
    assert adjust_p(0.5, 0.0, 100, cfg) == pytest.approx(0.4)  # 0 is below the 0.6 target: less
    assert adjust_p(0.5, 0.6, 100, cfg) == 0.5  # on target: no move
    assert adjust_p(0.5, math.nan, 100, cfg) == 0.5
    p = 0.0
    for _ in range(20):
        p = adjust_p(p, 1.0, 100, cfg)
    assert p == 0.8  # clamped at p_max
    for _ in range(20):
        p = adjust_p(p, -1.0, 100, cfg)
    assert p == 0.0  # and at 0


def test_adaptive_p_follows_d_step_signal():
    # The worker's loop in miniature: an epoch of d/g steps at p, then p stepped from the epoch's signal.
    cfg = AugmentConfig(policy="adaptive", speed_images=64, p_max=0.5)
    G, _, opt_g, _ = pair()
    D = ConstantD()
    opt_d = torch.optim.SGD(D.parameters(), lr=0.0)
    p, gen = cfg.start_p, torch.Generator().manual_seed(0)
    ps = []
    for _ in range(4):
        m = train_epoch(G, D, [images(8, seed=i) for i in range(2)], opt_g, opt_d, GanLoss(LossConfig()),
                        gen=gen, augment=cfg.pipeline(p))
        p = adjust_p(p, m["d_sign_real"], m["steps_d"] * 8, cfg)
        ps.append(p)
    assert ps == pytest.approx([0.25, 0.5, 0.5, 0.5])


def test_resume_continues_at_the_saved_p():
    cfg = AugmentConfig(policy="adaptive", p_init=0.1)
    assert resumed_p(cfg, []) == 0.1
    assert resumed_p(cfg, [{"loss_d": 1.0}]) == 0.1  # a state saved before augmentation existed
    assert resumed_p(cfg, [{"augment_p": 0.2}, {"augment_p": 0.35}]) == 0.35
    assert resumed_p(AugmentConfig(policy="diffaugment", p=0.7), [{"augment_p": 0.35}]) == 0.7
    assert AugmentConfig().pipeline(1.0) is None


def test_config_validation():
    assert AugmentConfig(policy="diffaugment", ops=" color, translation ").op_names == ("color", "translation")
    for bad in ({"ops": "flip"}, {"ops": "color,color"}, {"policy": "diffaugment", "ops": ""}, {"p": 1.5},
                {"policy": "adaptive", "p_init": 0.9, "p_max": 0.5}, {"speed": 1}):
        with pytest.raises(ValidationError):
            AugmentConfig(**bad)


# --- (d) reproducible ------------------------------------------------------------------------------

def test_same_seed_same_augmentation():
    x = images(16, c=3)
    a = augment(x, OPS, 0.5, torch.Generator().manual_seed(7))
    b = augment(x, OPS, 0.5, torch.Generator().manual_seed(7))
    c = augment(x, OPS, 0.5, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)

    def run(seed, aug=Augment(OPS, 0.5)):
        G, D, opt_g, opt_d = pair()
        train_epoch(G, D, [images(8, seed=i) for i in range(3)], opt_g, opt_d, GanLoss(LossConfig(r1_gamma=0.1)),
                    gen=torch.Generator().manual_seed(seed), augment=aug)
        return torch.cat([p.detach().flatten() for p in [*G.parameters(), *D.parameters()]])

    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))
    # An adaptive run at p = 0 trains bit for bit as an unaugmented one.
    assert torch.equal(run(0, Augment(OPS, 0.0)), run(0, None))


def test_mirror_doubles_with_flips():
    x, y = images(3), torch.tensor([0, 1, 2])
    xm, ym = mirror(x, y)
    assert torch.equal(xm[:3], x) and torch.equal(xm[3:], x.flip(-1)) and ym.tolist() == [0, 1, 2, 0, 1, 2]


# --- the small-data benchmark's plumbing (bench/small_data.py) --------------------------------------

def test_small_data_bench_smoke(capsys, tmp_path):
    from bench import small_data

    out_json = tmp_path / "runs.json"
    assert small_data.main(["--sizes", "40", "--steps", "3", "--seeds", "1", "--procs", "1",
                            "--classifier-epochs", "1", "--px", "16", "--conditional", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "16x16 px, class-conditional" in out  # upsampled digits, labels to G and D
    rows = [line for line in out.splitlines() if line.startswith("| 40 ")]
    assert [r.split("|")[2].strip() for r in rows] == ["off", "diffaugment", "adaptive"]
    assert "goal at n=40" in out
    runs = json.loads(out_json.read_text())["runs"]
    assert {r["policy"] for r in runs} == {"off", "diffaugment", "adaptive"}
    assert all(r["steps_g"] == 3 and r["n"] == 40 and 0 <= r["classes"] <= 10 and r["fd_ratio"] > 0 for r in runs)
    labels = torch.arange(10).repeat(20)
    idx = small_data.subset(labels, 40, 0)
    assert (labels[idx].bincount() == 4).all()  # class-balanced
    assert set(idx.tolist()) < set(small_data.subset(labels, 60, 0).tolist())  # nested across sizes


# --- DDP: augmented steps keep ranks in lockstep ----------------------------------------------------

def _ddp_worker(rank: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    try:
        _ddp_epochs(rank)
    finally:
        dist.destroy_process_group()


def _ddp_epochs(rank: int) -> None:
    cfg = AugmentConfig(policy="adaptive", p_init=0.5, speed_images=100)
    for loss_cfg in (LossConfig(r1_gamma=1.0), LossConfig(name="wgan-gp")):
        torch.manual_seed(100 + rank)  # different init per rank: DDP's broadcast must equalise it
        cfg_m = ModelConfig(arch="dcgan", z_dim=8, width=8)
        G, D = DDP(build_generator(cfg_m, (1, 8, 8))), DDP(build_discriminator(cfg_m, (1, 8, 8)))
        opt_g, opt_d = build_optimizers(G, D, ADAM)
        gen = torch.Generator().manual_seed(rank)  # and different augmentation draws per rank
        p = cfg.start_p
        for epoch in range(2):
            m = train_epoch(G, D, [images(6, seed=10 * rank + i) for i in range(3)], opt_g, opt_d,
                            GanLoss(loss_cfg), gen=gen, augment=cfg.pipeline(p))
            signal = torch.tensor(m["d_sign_real"])
            dist.all_reduce(signal)  # the worker's _mean_across_ranks
            p = adjust_p(p, float(signal) / 2, m["steps_d"] * 6 * 2, cfg)
            flat = torch.cat([q.detach().flatten() for q in [*G.parameters(), *D.parameters()]]
                             + [torch.tensor([p])])
            gathered = [torch.empty_like(flat) for _ in range(2)]
            dist.all_gather(gathered, flat)
            assert torch.equal(gathered[0], gathered[1]), (loss_cfg, epoch)
            assert m["nonfinite"] == 0.0


def test_ddp_augmented_epochs_two_ranks():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_ddp_worker, args=(str(Path(tmp) / "ddp_init"),), nprocs=2, join=True)
