import torch
from torch import nn

from gan_core.config import LossConfig, OptimConfig, ResolvedOptim
from gan_core.recipes import describe, resolve
from gan_core.schedules import lr_scale, set_hyperparams
from gan_core.steps import build_optimizers


def test_lr_schedule_is_constant_then_linear_to_one_percent():
    r = resolve(LossConfig(), OptimConfig(lr_decay_start=0.5))
    assert [lr_scale(r, p) for p in (0.0, 0.5, 0.75)] == [1.0, 1.0, 0.5]
    assert lr_scale(r, 1.0) == 0.01  # never 0: the last epochs still train
    assert lr_scale(resolve(LossConfig(), OptimConfig()), 0.99) == 1.0  # no schedule set
    assert "lr decay after 50%" in describe(r)


def test_set_hyperparams_overrides_a_restored_optimiser_but_keeps_its_moments():
    """PBT hands a trial the donor's optimiser state, saved with the donor's lr and betas: the trial's
    own (mutated) values must win, while Adam's moment estimates carry over."""
    G, D = nn.Linear(2, 2), nn.Linear(2, 1)
    donor = ResolvedOptim("adam", 1e-3, 2e-3, (0.5, 0.9), 1)
    opt_g, opt_d = build_optimizers(G, D, donor)
    G(torch.ones(1, 2)).sum().backward()
    D(torch.ones(1, 2)).sum().backward()
    opt_g.step()
    opt_d.step()
    mutated = ResolvedOptim("adam", 4e-4, 8e-4, (0.0, 0.99), 1)
    new_g, new_d = build_optimizers(G, D, mutated)
    new_g.load_state_dict(opt_g.state_dict())
    new_d.load_state_dict(opt_d.state_dict())
    assert new_g.param_groups[0]["lr"] == 1e-3  # what loading alone does: the donor's values
    set_hyperparams(new_g, new_d, mutated, scale=0.5)
    assert new_g.param_groups[0]["lr"] == 2e-4 and new_d.param_groups[0]["lr"] == 4e-4
    assert new_g.param_groups[0]["betas"] == (0.0, 0.99)
    assert torch.equal(new_g.state[G.weight]["exp_avg"], opt_g.state[G.weight]["exp_avg"])


def test_epochs_past_the_schedule_hold_its_last_value():
    from gan_core.schedules import progress

    assert [progress(e, 4) for e in range(4)] == [0.0, 0.25, 0.5, 0.75]  # a run within its own schedule
    assert progress(4, 4) == progress(9, 4) == 0.75  # a continued run: the lr never jumps back up
