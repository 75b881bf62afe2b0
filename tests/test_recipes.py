import pytest
import torch
from torch import nn

from gan_core.config import LOSS_NAMES, LossConfig, OptimConfig, ResolvedOptim
from gan_core.losses import LOSSES
from gan_core.recipes import RECIPES, describe, fill, resolve
from gan_core.steps import build_optimizers


def R(loss: str, **optim) -> ResolvedOptim:
    return resolve(LossConfig.model_validate(loss), OptimConfig(**optim))


@pytest.mark.parametrize("loss,expected", [
    ("non-saturating", ResolvedOptim("adam", 2e-4, 2e-4, (0.5, 0.999), 1)),
    ("saturating", ResolvedOptim("adam", 2e-4, 2e-4, (0.5, 0.999), 1)),
    ("least-squares", ResolvedOptim("adam", 2e-4, 2e-4, (0.5, 0.999), 1)),
    ("f-js", ResolvedOptim("adam", 2e-4, 2e-4, (0.5, 0.999), 1)),
    ("wgan", ResolvedOptim("rmsprop", 5e-5, 5e-5, (0.5, 0.999), 5)),
    ("wgan-clip", ResolvedOptim("rmsprop", 5e-5, 5e-5, (0.5, 0.999), 5)),  # alias
    ("wgan-gp", ResolvedOptim("adam", 1e-4, 1e-4, (0.0, 0.9), 5)),
    ("hinge", ResolvedOptim("adam", 1e-4, 4e-4, (0.0, 0.9), 1)),
])
def test_defaults_per_loss(loss, expected):
    assert R(loss) == expected


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_resolve_falls_back_to_the_loss_rows_paper_optimiser(loss):
    assert R(loss) == LOSSES[loss].optim
    assert fill({}, RECIPES["points-paper"], loss)["optim.lr_d"] == LOSSES[loss].optim.lr_d


def test_only_wgan_uses_rmsprop():
    assert {n for n in LOSS_NAMES if LOSSES[n].optim.optimizer == "rmsprop"} == {"wgan"}


def test_explicit_values_win_field_by_field():
    r = R("wgan-gp", lr_d=3e-4, n_critic=2)
    assert r == ResolvedOptim("adam", 1e-4, 3e-4, (0.0, 0.9), 2)
    r = R("wgan", optimizer="adam", betas=[0.5, 0.9])  # yaml lists become tuples
    assert r == ResolvedOptim("adam", 5e-5, 5e-5, (0.5, 0.9), 5)
    assert R("hinge", lr_g=1e-3, lr_d=1e-3, betas=(0.5, 0.99), n_critic=3, optimizer="rmsprop") == \
        ResolvedOptim("rmsprop", 1e-3, 1e-3, (0.5, 0.99), 3)


def test_describe():
    assert describe(R("hinge")) == "adam lr_g=0.0001 lr_d=0.0004 betas=(0.0, 0.9) n_critic=1"
    assert describe(R("wgan")) == "rmsprop lr_g=5e-05 lr_d=5e-05 n_critic=5"


def test_build_optimizers_follows_the_recipe():
    G, D = nn.Linear(2, 2), nn.Linear(2, 1)
    opt_g, opt_d = build_optimizers(G, D, R("hinge"))
    assert isinstance(opt_g, torch.optim.Adam) and isinstance(opt_d, torch.optim.Adam)
    assert opt_g.param_groups[0]["lr"] == 1e-4 and opt_d.param_groups[0]["lr"] == 4e-4
    assert opt_d.param_groups[0]["betas"] == (0.0, 0.9)
    assert opt_g.param_groups[0]["params"][0] is G.weight and opt_d.param_groups[0]["params"][0] is D.weight
    opt_g, opt_d = build_optimizers(G, D, R("wgan"))
    assert isinstance(opt_g, torch.optim.RMSprop) and isinstance(opt_d, torch.optim.RMSprop)
    assert opt_d.param_groups[0]["lr"] == 5e-5 and opt_d.param_groups[0]["momentum"] == 0


def test_image_recipes_change_model_and_length_from_the_large_side_only():
    """From LARGE_SIDE px every image recipe (tuned or paper) trains LARGE's width and length; below it, and
    for points at any size, the recipe's own values; a user's value still wins over both."""
    from gan_core.recipes import LARGE, LARGE_SIDE
    for r in RECIPES.values():
        small, large = fill({}, r, r.loss or "wgan-gp", 2800, 16), fill({}, r, r.loss or "wgan-gp", 2800, LARGE_SIDE)
        if r.kind == "points":
            assert r.values_for(64) is r.values and small == large
            continue
        assert {k: small[k] for k in LARGE} == {"model.width": 32, "train.kimg": 249.6}
        assert {k: large[k] for k in LARGE} == dict(LARGE) and large["train.epochs"] < small["train.epochs"]
        assert fill({"model.width": 24}, r, r.loss or "wgan-gp", 2800, 32)["model.width"] == 24
    with pytest.raises(TypeError):
        RECIPES["images-ns-r1"].values_for(32)["model.width"] = 8  # read-only, as every recipe's values
