"""params.yaml validation and --set overrides: one clear message naming the field."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flows import params
from flows.errors import UserError
from gan_core.recipes import LARGE, RECIPES, SMALL_IMAGES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_repository_params_are_valid(ws):
    p = params.load(ws)
    assert p.data.name == "digits" and p.model_name == "ganflow-digits"
    assert p.loss.name == "non-saturating"


@pytest.mark.parametrize("override, field", [
    ("train.epochs=0", "train.epochs"),
    ("optim.lr_g=-1", "optim.lr_g"),
    ("optim.optimizer=sgd", "optim.optimizer"),
    ("data.name=cifar", "data"),
    ("data.image_size=4", "data.image_size"),  # 8 to 256 px are accepted (12 is prepared at 16)
    ("data.image_size=300", "data.image_size"),
    ("loss=hinge-ish", "loss.name"),
    ("optim.betas=[0.5, 1.5]", "optim"),
    ("model.arch=transformer", "model.arch"),
    ("train.epochz=3", "train.epochz"),
    ("train.epochs=true", "train.epochs"),  # a YAML boolean is not a number (pydantic alone read it as 1)
    ("loss.r1_gamma=false", "loss.r1_gamma"),
    ("train.num_workers=true", "train.num_workers"),
])
def test_bad_values_name_the_field(ws, override, field):
    with pytest.raises(UserError) as err:
        params.load(ws, [override])
    assert field in str(err.value)
    assert "unknown field" in str(err.value) if "epochz" in override else True


def test_loss_shorthand_and_aliases(ws):
    assert params.load(ws, ["loss=wgan-gp"]).loss.name == "wgan-gp"
    assert params.load(ws, ["loss=ns"]).loss.name == "non-saturating"
    p = params.load(ws, ["loss=wgan-gp", "loss.gp_weight=5"])
    assert (p.loss.name, p.loss.gp_weight) == ("wgan-gp", 5.0)


def test_malformed_set_and_yaml(ws):
    with pytest.raises(UserError, match="KEY=VALUE"):
        params.load(ws, ["train.epochs"])
    (ws / "params.yaml").write_text("train: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        params.load(ws)
    (ws / "params.yaml").unlink()
    with pytest.raises(UserError, match="no params.yaml"):
        params.load(ws)


def test_write_overrides_keeps_comments_and_refuses_bad_values(ws):
    original = (ws / "params.yaml").read_text().splitlines()
    params.write_overrides(ws, ["train.epochs=7", "data.image_size=16"])
    text = (ws / "params.yaml").read_text()
    assert "epochs: 7" in text and "# global batch, split across workers" in text
    # Only the lines asked for change: the nulls stay `null`, every comment stays where it was.
    changed = [(a, b) for a, b in zip(original, text.splitlines(), strict=True) if a != b]
    assert [b.split("#")[0].strip() for _, b in changed] == ["image_size: 16", "epochs: 7"], changed
    params.write_overrides(ws, ["loss.gp_weight=3"])
    assert params.load(ws).loss.gp_weight == 3.0
    before = (ws / "params.yaml").read_text()
    with pytest.raises(UserError):
        params.write_overrides(ws, ["train.epochs=-3"])
    assert (ws / "params.yaml").read_text() == before


def test_training_hash_ignores_parallelism_but_not_hyperparameters(ws):
    base = params.load(ws).training_hash()
    assert params.load(ws, ["train.num_workers=1"]).training_hash() == base
    assert params.load(ws, ["optim.lr_g=0.001"]).training_hash() != base
    assert params.load(ws, ["loss=wgan-gp"]).training_hash() != base
    assert params.load(ws, ["eval.num_samples=50"]).training_hash() == base


def test_recipes_follow_the_loss_unless_set_explicitly(ws):
    r = params.load(ws, ["loss=wgan-gp"]).resolved_optim
    assert (r.optimizer, r.lr_g, r.betas, r.n_critic) == ("adam", 1e-4, (0.0, 0.9), 5)
    r = params.load(ws, ["loss=wgan"]).resolved_optim
    assert (r.optimizer, r.lr_d, r.n_critic) == ("rmsprop", 5e-5, 5)
    r = params.load(ws, ["loss=wgan", "optim.n_critic=2"]).resolved_optim
    assert r.n_critic == 2 and r.optimizer == "rmsprop"


def test_bundled_point_sets_need_no_source(ws):
    p = params.load(ws, ["data.name=ring8"])
    assert p.data.is_points and p.data.builtin == "ring8" and p.model_name == "ganflow-ring8"
    p = params.load(ws, ["data.name=faces", "data.source=data/raw/faces"])
    assert not p.data.is_points and p.data.builtin is None


def test_pbt_refuses_values_that_cannot_change_inside_a_running_trial(ws):
    ok = params.load(ws, ["tune.scheduler=pbt",
                          "tune.space={optim.lr_g: {loguniform: [0.0001, 0.001]}, optim.n_critic: {choice: [1, 2]}}"])
    assert ok.tune.scheduler == "pbt"
    with pytest.raises(UserError) as err:  # the repository's space searches the loss: not for PBT
        params.load(ws, ["tune.scheduler=pbt"])
    assert "loss cannot change" in str(err.value) and "asha" in str(err.value)
    with pytest.raises(UserError, match="model.width"):
        params.load(ws, ["tune.scheduler=pbt", "tune.space={model.width: {choice: [16, 32]}}"])
    # A grid under PBT is the population's starting values (and what mutations move between).
    assert params.load(ws, ["tune.scheduler=pbt", "tune.space={optim.lr_g: {grid: [0.001, 0.002]}}"]).tune.space
    # Tune's concurrency limit holds back trial creation: PBT would never compare the later trials.
    with pytest.raises(UserError, match="max_concurrent cannot be used with PBT"):
        params.load(ws, ["tune.scheduler=pbt", "tune.max_concurrent=1",
                         "tune.space={optim.lr_g: {grid: [0.001, 0.002]}}"])


def test_exponent_floats_without_a_dot_are_floats(ws):
    """YAML 1.1 (PyYAML) reads `1e-09` as a string; ruamel writes floats that way into params.yaml."""
    assert params.parse_overrides(["x=1e-5", "y=[1e-9, 2E+3, 7, 1.5]", "z=1e5x"]) == \
        {"x": 1e-5, "y": [1e-9, 2000.0, 7, 1.5], "z": "1e5x"}
    params.write_overrides(ws, ["tune.space={optim.lr_g: {grid: [0.001, 1.0e-9]}}"])
    assert params.load(ws).tune.space == {"optim.lr_g": {"grid": [0.001, 1e-9]}}


# --- recipes: `recipe: auto` fills what params.yaml leaves null; what the user sets wins ----------------

def test_default_digits_run_gets_the_measured_image_recipe(ws):
    p = params.load(ws)
    r = RECIPES["images-ns-r1"]
    assert p.recipe == r.name
    assert (p.model.arch, p.model.width, p.loss.r1_gamma) == ("dcgan", r.values["model.width"], 0.01)
    assert (p.optim.lr_g, p.optim.lr_d, tuple(p.optim.betas)) == (3e-4, 3e-4, (0.0, 0.99))
    assert (p.train.kimg, p.train.epochs, p.augment.policy) == (r.values["train.kimg"], 200, "off")  # 249.6k: 200 epochs of 39 batches of 32
    assert p.resolved_optim.lr_decay_start == 0.5


def test_explicit_values_win_over_the_recipe_field_by_field(ws):
    p = params.load(ws, ["train.epochs=7", "optim.lr_g=0.001", "loss.r1_gamma=0"])
    assert (p.train.epochs, p.optim.lr_g, p.loss.r1_gamma) == (7, 0.001, 0.0)
    assert (p.optim.lr_d, p.train.batch_size, p.recipe) == (3e-4, 32, "images-ns-r1")  # the rest: recipe


def test_another_loss_gets_its_paper_optimiser_not_the_tuned_values(ws):
    p = params.load(ws, ["loss=wgan-gp"])
    assert p.recipe == "images-paper"
    assert (p.optim.optimizer, p.optim.lr_g, tuple(p.optim.betas), p.optim.n_critic) == ("adam", 1e-4, (0.0, 0.9), 5)
    assert p.loss.r1_gamma == 0.0 and p.optim.lr_decay_start is None  # NS's R1 and schedule stay with NS
    with pytest.raises(UserError, match="tuned for the non-saturating loss"):
        params.load(ws, ["loss=hinge", "recipe=images-ns-r1"])


def test_a_loss_with_its_own_measured_recipe_gets_it(ws):
    """Hinge on images: spectral norm on D and no R1 (SNGAN's pairing), not NS's R1 nor a bare DCGAN D."""
    p = params.load(ws, ["loss=hinge"])
    assert p.recipe == "images-hinge-sn"
    assert (p.model.spectral_norm, p.loss.r1_gamma, p.optim.lr_d, p.resolved_optim.lr_decay_start) == (True, 0.0, 3e-4, 0.5)
    assert params.load(ws, ["loss=hinge", "data.name=ring8"]).recipe == "points-paper"  # measured on images only


def test_auto_picks_by_kind_and_size(ws):
    p = params.load(ws, ["data.name=ring8"])
    assert (p.recipe, p.model.arch, p.model.width, p.model.z_dim, p.train.batch_size) == \
        ("points-ns-r1-wide", "mlp", 400, 2, RECIPES["points-ns-r1-wide"].values["train.batch_size"])
    raw = params.read_raw(ws / "params.yaml")
    # Augmentation did not help on small digit sets (bench/RESULTS.md): auto leaves it off at any size,
    # and the augmented recipe is there by name.
    assert params.validate(raw, "test", n_train=100).recipe == "images-ns-r1"
    params.apply(raw, "recipe", "images-small-ns-r1-ada")
    small = params.validate(raw, "test", n_train=SMALL_IMAGES)
    assert (small.recipe, small.augment.policy, small.loss.r1_gamma) == ("images-small-ns-r1-ada", "adaptive", 0.01)
    params.apply(raw, "augment.policy", "diffaugment")  # the user's choice wins over the named recipe too
    assert params.validate(raw, "test", n_train=100).augment.policy == "diffaugment"
    with pytest.raises(UserError, match="are for images"):
        params.load(ws, ["data.name=ring8", "augment.policy=adaptive"])
    with pytest.raises(UserError, match="is for points"):
        params.load(ws, ["recipe=points-ns-r1-wide"])
    with pytest.raises(UserError, match="recipe"):
        params.load(ws, ["recipe=best-ever"])


def test_a_small_image_set_repeats_within_an_epoch_to_the_recipes_steps(ws):
    raw = params.read_raw(ws / "params.yaml")
    # Digits' 1,259 training images are the recipe's epoch; 300 repeat 4 times (~7,800 G steps in 200
    # epochs, not ~1,800); 90 (a 150-image folder's) at most 5, lest G memorise them; size unknown: once.
    sizes = (1259, 2000, 1000, 300, 90, 10, None)
    assert [params.validate(raw, "t", n_train=n).train.repeat for n in sizes] == [1, 1, 1, 4, 5, 5, 1]
    assert params.validate(raw, "t", n_train=90).train.epochs == 200  # 1,000 passes at most, not 249.6k images
    params.apply(raw, "data.mirror", True)  # the mirrored set is twice as large
    assert params.validate(raw, "t", n_train=400).train.repeat == 2  # 800 images; unmirrored: 3
    params.apply(raw, "train.repeat", 1)  # the user's value wins
    assert params.validate(raw, "t", n_train=90).train.repeat == 1
    assert params.load(ws, ["data.name=ring8"]).train.repeat == 1  # points: no repeat
    assert params.validate(raw, "t", n_train=90).training_hash() != \
        params.validate({**raw, "train": {**raw["train"], "repeat": 2}}, "t", n_train=90).training_hash()


def test_a_run_is_as_long_as_its_images_shown_not_its_passes(ws):
    """Recipes count images shown (kimg): a larger folder gets fewer epochs, not more G steps; from 28 px the
    large recipe (a narrower model, its own length); a size other than the models' counts as the size it is resized to."""
    raw = params.read_raw(ws / "params.yaml")
    r = RECIPES["images-ns-r1"]
    epochs = {n: params.validate(raw, "t", n_train=n).train.epochs for n in (1259, 2800, 5600)}
    assert epochs == {1259: 200, 2800: 90, 5600: 45}  # 249.6k images each (whole batches)
    assert params.validate(raw, "t", n_train=2800).model.width == 32  # below LARGE_SIDE: the digits model
    params.apply(raw, "data.image_size", 32)
    big = params.validate(raw, "t", n_train=2800)
    assert (big.train.kimg, big.train.epochs) == (r.kimg_for(32), round(r.kimg_for(32) * 1000 / 2784))  # 87 batches
    assert (big.train.kimg, big.model.width) == (LARGE["train.kimg"], LARGE["model.width"]) != (249.6, 32)
    params.apply(raw, "data.image_size", 25)  # resized to 28: the large recipe too
    assert params.validate(raw, "t", n_train=2800).train.kimg == r.kimg_for(28) == LARGE["train.kimg"]
    params.apply(raw, "model.width", 24)  # the user's width wins at any size
    assert params.validate(raw, "t", n_train=2800).model.width == 24
    params.apply(raw, "model.width", None)
    params.apply(raw, "train.epochs", 7)  # the user's epochs win, and the run is not said to show kimg
    assert (params.validate(raw, "t", n_train=2800).train.epochs, params.validate(raw, "t", n_train=2800).train.kimg) == (7, None)
    params.apply(raw, "train.epochs", None)
    params.apply(raw, "train.kimg", 28)  # ... or their kimg
    assert params.validate(raw, "t", n_train=2800).train.epochs == 10
    assert params.load(ws, ["data.name=ring8"]).train.kimg is None  # points count epochs
    with pytest.raises(UserError, match="train.kimg .images shown. is for images"):
        params.load(ws, ["data.name=ring8", "train.kimg=10"])


def test_the_resolved_recipe_is_part_of_the_run_identity(ws):
    base = params.load(ws)
    again = params.validate(base.model_dump(mode="json"), "resolved")  # resolving twice changes nothing
    assert again == base and again.training_hash() == base.training_hash()
    assert base.training_key()["recipe"] == "images-ns-r1"
    assert base.training_key()["optim"]["lr_g"] == 3e-4
    raw = params.read_raw(ws / "params.yaml")
    # Same params.yaml, another recipe: another run, not "unchanged since version N".
    params.apply(raw, "recipe", "images-small-ns-r1-ada")
    assert params.validate(raw, "t", n_train=100).training_hash() != base.training_hash()


def test_the_estimated_size_comes_from_the_source_until_prepared(ws, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(20):
        (folder / f"{i}.png").write_bytes(b"")
    raw = {"data": {"name": "mine", "source": str(folder)}}
    assert params.training_set_size(ws, raw) == int(20 * 0.7)
    assert params.training_set_size(ws, {"data": {"name": "ring8"}}) is None
