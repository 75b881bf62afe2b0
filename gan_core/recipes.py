"""Training recipes: the measured best way to train each kind of data, as product, not benchmark code.

A recipe is a set of params values (model, loss extras, optimiser, schedule, EMA, batch, epochs,
augmentation). params.yaml's `recipe: auto` picks one by data kind, training-set size and loss; a field
left null (or out) in params.yaml takes the recipe's value, and a value the user sets wins, field by
field. Only recipes tuned *with* the chosen loss carry tuned values: any other loss gets the data kind's
model and budget with that loss's own paper optimiser (its row in gan_core.losses), never another loss's
tuned values.

The pipeline, `ganflow tune` and every benchmark read recipes from here; `ganflow recipes` lists them
with the result each was measured at and the command that measured it."""
from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Literal, Mapping

from gan_core.config import LossConfig, OptimConfig, ResolvedOptim
from gan_core.losses import LOSSES
from gan_core.training import images_per_epoch

DataKind = Literal["images", "points"]


def resolve(loss: LossConfig, optim: OptimConfig) -> ResolvedOptim:
    """The paper optimiser of `loss.name` with every explicitly set field of `optim` laid over it."""
    explicit = {k: v for k, v in optim.model_dump().items() if v is not None}
    if "betas" in explicit:
        explicit["betas"] = tuple(explicit["betas"])
    return replace(LOSSES[loss.name].optim, **explicit)


def describe(r: ResolvedOptim) -> str:
    """One line for logs, e.g. 'adam lr_g=0.0001 lr_d=0.0004 betas=(0.0, 0.9) n_critic=1'."""
    betas = f" betas={r.betas}" if r.optimizer == "adam" else ""
    decay = f" lr decay after {r.lr_decay_start:.0%}" if r.lr_decay_start is not None and r.lr_decay_start < 1 else ""
    return f"{r.optimizer} lr_g={r.lr_g:g} lr_d={r.lr_d:g}{betas} n_critic={r.n_critic}{decay}"


# --- named recipes -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    name: str
    kind: DataKind
    loss: str | None      # the loss its values were tuned with; None: any loss, with its paper optimiser
    summary: str
    values: Mapping[str, Any]  # dotted params keys (as --set spells them) -> value
    bar: Mapping[str, float]   # what a run of this recipe reaches (evaluate.meets_bar checks the run)
    measured: str              # the result it was measured at
    command: str               # the command that measured it
    max_train: int | None = None  # made for training sets up to this size (None: any size)
    auto: bool = True             # False: used only when named (`recipe: NAME`), never by `auto`
    # A training set smaller than this is repeated within each epoch (`train.repeat`, when left to the
    # recipe), so a small folder gets about the G steps, probes and checkpoints the recipe was measured at.
    epoch_images: int | None = None

    def values_for(self, side: int | None) -> Mapping[str, Any]:
        """The recipe's values for images of this side: from LARGE_SIDE px, LARGE laid over them."""
        if self.kind != "images" or side is None or side < LARGE_SIDE:
            return self.values
        return MappingProxyType({**self.values, **LARGE})

    def kimg_for(self, side: int | None) -> float | None:
        """Images shown in a run (thousands) for images of this side; None: the recipe counts epochs."""
        return self.values_for(side).get("train.kimg")

    def repeat_for(self, n_train: int | None) -> int:
        """Passes over `n_train` training items in one epoch: the nearest to `epoch_images`, from 1 to
        MAX_REPEAT."""
        if self.epoch_images is None or not n_train:
            return int(self.values["train.repeat"])
        return min(MAX_REPEAT, max(1, round(self.epoch_images / n_train)))


# Small image sets: the augmented recipes are made for up to this many training images. `auto` does not
# pick them: on 8x8 digits (bench/RESULTS.md, small data) no size from 100 to 1,438 images trained better
# with augmentation (fixed DiffAugment was 2-5x worse, adaptive within seed noise), so it stays off until
# a measurement on the user's kind of images says otherwise.
SMALL_IMAGES = 1000
# An image recipe's epoch shows at least the digits recipe's: 39 batches of 32 (its 1,259 training
# images). Counted in passes, a 150-image folder (90 training images) got 2 G steps an epoch, 400 in all,
# and a Frechet ratio of ~29 where 2,000-8,000 steps gave ~5 (bench/RESULTS.md section 6, budget).
EPOCH_IMAGES = 39 * 32
# ...but at most 5 passes an epoch (1,000 in 200 epochs): G memorises a tiny set in proportion to the
# passes (digits subsets of 90-300 images: memorised 0.06 at ~430 passes, 0.14 at ~850, 0.23 at 1,400,
# 0.57 at 2,800; the bar is 0.2). A 90-image folder: 5 passes gave FD ratio 9.7 and memorised 0.12,
# 14 gave 8.5 and 0.57 (bench/RESULTS.md section 6).
MAX_REPEAT = 5
# A run's length is images shown (kimg, StyleGAN's unit), not passes: counted in passes, a 2,800-image folder
# got 2.2x the digits recipe's G steps. A small set is still held to MAX_PASSES passes (the memorisation
# measurement above: 1,000 passes kept it at 0.12, under the bar's 0.2).
MAX_PASSES = 1000
# From this image side an image recipe trains a narrower DCGAN (width 16: G 128 -> 16 channels at 32 px; width
# 32's G costs ~4x its D) for a length that fits a 32 px pipeline into ~15 minutes on 2 CPU cores with a margin.
# On 4,000 digits at 32 px (issue 27, bench/RESULTS.md section 11): width 32 ran ~28 s an epoch and reached
# FD ratio ~5 at 64k images, 3.7 at 125k; width 16 runs ~11 s and, at 144k through the pipeline, 2.25 / 2.37
# / 2.68 on train seeds 1-3 in 10-13 minutes. Close to the image bar's 2, not at it.
LARGE_SIDE = 28
LARGE = MappingProxyType({"model.width": 16, "train.kimg": 144})

# Images with class labels train a class-conditional pair (conditional BN in G, projection D; Miyato &
# Koyama 2018): on digits it cut the Frechet ratio by a third (bench/RESULTS.md section 7). `auto`: only
# when the data has >= 2 classes. 2-D points stay unconditional: their labels are the mode ids, and a G
# told which mode to draw would make the mode-collapse measure meaningless.
_IMAGE_MODEL = {"model.arch": "dcgan", "model.z_dim": 32, "model.width": 32, "model.depth": 3,
                "model.spectral_norm": False, "model.conditional": "auto"}
_POINT_MODEL = {"model.arch": "mlp", "model.z_dim": 2, "model.width": 400, "model.depth": 3,
                "model.spectral_norm": False, "model.conditional": False}
_NO_AUGMENT = {"augment.policy": "off"}
_ADAPTIVE = {"augment.policy": "adaptive"}

# Non-saturating + R1 with equal Adam lrs and beta1 0, found by a 25-run search through the pipeline
# (bench/RESULTS.md section 4); 200 epochs with the lr annealed over the second half beat 60 on every
# seed tried (section 7). Width 64, more R1, batch 64 and an earlier decay did not carry across seeds.
_DIGITS_NS = {**_IMAGE_MODEL, "loss.r1_gamma": 0.01, "optim.optimizer": "adam", "optim.lr_g": 3e-4,
              "optim.lr_d": 3e-4, "optim.betas": [0.0, 0.99], "optim.n_critic": 1, "optim.lr_decay_start": 0.5,
              "train.batch_size": 32, "train.kimg": 249.6, "train.repeat": 1, "train.ema_decay": 0.999}
# The hinge loss's own: spectral norm on every D layer (SNGAN's pairing; SN bounds D, so no R1), otherwise
# the NS recipe's Adam, schedule, batch and EMA. Through the pipeline on digits, seeds 0-4, it scored as the
# NS recipe does (5-draw means 1.75 against 1.78), ~17% faster without R1's double backward; the hinge
# paper optimiser on the plain DCGAN pair (what hinge got before) did worse (bench/RESULTS.md section 7).
_DIGITS_HINGE = {**_DIGITS_NS, "model.spectral_norm": True, "loss.r1_gamma": 0.0}
# R3GAN's loss (relativistic pairing, R1 and R2 at one gamma) on the NS recipe's model, optimiser, schedule,
# batch and EMA: the loss and its gamma alone changed, so the two compare as losses. Gamma 0.05 (R3GAN's
# CIFAR-10 value): on 4,000 digits at 32 px (train seed 0, 160k images) NS's 0.01 left RpGAN at FD ratio
# 4.03 where 0.05 reached 2.37, NS + R1 0.01 2.42 (bench/RESULTS.md section 11).
_DIGITS_RPGAN = {**_DIGITS_NS, "loss.r1_gamma": 0.05}
# What both image recipes share, as `ganflow recipes` says it (the values are _DIGITS_NS's).
_IMAGE_TRAINING = ("Adam 3e-4 (0, 0.99) both nets, lr decay after 50%, EMA 0.999; by image side: width 32 for "
                   "249.6k images shown below 28 px (200 epochs of digits' 39 batches of 32), "
                   f"width {LARGE['model.width']} for {LARGE['train.kimg']:g}k from {LARGE_SIDE} px; "
                   f"at most {MAX_PASSES:,} passes over a small set")
# PacGAN's 400-unit MLP with NS + R1, fast TTUR Adam, big batch, EMA and lr decay (bench/RESULTS.md
# section 1: 5 seeds on 100k points met both mode-collapse goals at batch 256). On the pipeline's 9k
# training points (section 7): batch 256 let grid25's mode balance drift apart during the lr decay;
# R1 0.01 lost 2 of 25 modes on seed 0, R1 0.1 kept all 25; 300 epochs left the modes wide (high
# quality ~94%), 450 sharpened them past 95%.
_POINTS_NS = {**_POINT_MODEL, "loss.r1_gamma": 0.1, "optim.optimizer": "adam", "optim.lr_g": 1e-3,
              "optim.lr_d": 2e-3, "optim.betas": [0.5, 0.9], "optim.n_critic": 1, "optim.lr_decay_start": 0.5,
              "train.batch_size": 512, "train.epochs": 450, "train.repeat": 1, "train.ema_decay": 0.999}
# Any other loss: the kind's model and budget, the loss's own paper optimiser, no tuned extras.
_IMAGES_PAPER = {**_IMAGE_MODEL, "train.batch_size": 32, "train.kimg": 249.6, "train.repeat": 1,
                 "train.ema_decay": 0.999}
_POINTS_PAPER = {**_POINT_MODEL, "train.batch_size": 512, "train.epochs": 450, "train.repeat": 1,
                 "train.ema_decay": 0.999}

# What a good generator of each kind reaches (the run's headline says whether it does; flows/evaluate
# meets_bar reads these). Images: within 2x the real-vs-real distance, every class drawn, and not mostly
# replaying training images. Points: every mode, as sharp and evenly spread as PacGAN's best.
IMAGE_BAR = MappingProxyType({"fd_ratio": 2.0, "class_coverage": 1.0, "memorisation": 0.2})
POINT_BAR = MappingProxyType({"modes": 1.0, "high_quality": 0.97, "reverse_kl": 0.05})
_UNMEASURED = "not measured: the loss's paper optimiser with this kind's model and budget"

RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("images-ns-r1", "images", "non-saturating",
           f"DCGAN G/D (class-conditional when the data has classes), non-saturating + R1 0.01, {_IMAGE_TRAINING}",
           MappingProxyType({**_DIGITS_NS, **_NO_AUGMENT}), IMAGE_BAR,
           "digits through the pipeline, class-conditional, seeds 0-4: 10/10 classes, FD ratio 1.95 / 1.74 / 1.76 / "
           "1.81 / 1.62, each the mean of 5 evaluation draws (a perfect replay of the training set scores 1.54; "
           "unconditional, one draw each: 2.63 / 1.72 / 2.44 / 1.98 / 2.24; bench/RESULTS.md section 7); 4,000 digits "
           "at 32 px (width 16, 144k images), seeds 1-3: 10/10, FD ratio 2.37 / 2.25 / 2.68 (5 draws: 2.04 / 2.66 / "
           "2.77), the bar missed, in pipelines of 10-13 minutes (section 11); a 4:1 "
           "imbalanced labelled digits folder: 1.53, meets the bar; a 150-image labelled folder (90 training images, repeated 5x an "
           "epoch): full-digits FD ratio 9.7 (102 without the repeat), memorisation 0.12 (section 6)",
           ".venv/bin/python -m bench.default_quality --only digits --seeds 0,1,2,3,4", epoch_images=EPOCH_IMAGES),
    Recipe("images-hinge-sn", "images", "hinge",
           "DCGAN G/D (class-conditional when the data has classes) with spectral norm on D, hinge loss, "
           f"{_IMAGE_TRAINING}",
           MappingProxyType({**_DIGITS_HINGE, **_NO_AUGMENT}), IMAGE_BAR,
           "digits through the pipeline, class-conditional, seeds 0-4: 10/10 classes, FD ratio 1.99 / 1.79 / 1.65 / 1.64 / 1.66, each "
           "the mean of 5 evaluation draws (images-ns-r1: 1.95 / 1.74 / 1.76 / 1.81 / 1.62; the hinge paper optimiser "
           "without spectral norm, seeds 0-2: 3.48 / 2.66 / 3.27; bench/RESULTS.md section 7)",
           ".venv/bin/python -m bench.default_quality --only digits --seeds 0,1,2,3,4 --set loss.name=hinge",
           epoch_images=EPOCH_IMAGES),
    Recipe("images-rpgan", "images", "rpgan",
           "DCGAN G/D (class-conditional when the data has classes), relativistic pairing + R1 and R2 0.05 (R3GAN's "
           f"loss, on the DCGAN pair), {_IMAGE_TRAINING}",
           MappingProxyType({**_DIGITS_RPGAN, **_NO_AUGMENT}), IMAGE_BAR,
           "4,000 digits at 32 px (width 16, 160k images, train seed 0, bench/recipe_probe.py): FD ratio 2.37 (gamma "
           "0.01: 4.03), images-ns-r1 2.42 on the same run; not yet through the pipeline (bench/RESULTS.md section 11)",
           ".venv/bin/python -m bench.recipe_probe WS --set loss.name=rpgan --set train.kimg=160 --threads 1 (WS: a "
           "workspace bench.default_quality --only digits32 prepared)",
           epoch_images=EPOCH_IMAGES),
    Recipe("images-small-ns-r1-ada", "images", "non-saturating",
           "images-ns-r1 with adaptive DiffAugment (translation, cutout, colour) of real and fake before D",
           MappingProxyType({**_DIGITS_NS, **_ADAPTIVE}), IMAGE_BAR,
           "not better than images-ns-r1 on digits subsets of 100-1,438 images (bench/RESULTS.md, small data)",
           ".venv/bin/python -m bench.small_data", max_train=SMALL_IMAGES, auto=False, epoch_images=EPOCH_IMAGES),
    Recipe("images-paper", "images", None,
           "DCGAN G/D with the chosen loss's paper optimiser, EMA 0.999", MappingProxyType(
               {**_IMAGES_PAPER, **_NO_AUGMENT}), IMAGE_BAR, _UNMEASURED, "-", epoch_images=EPOCH_IMAGES),
    Recipe("images-small-paper", "images", None,
           "images-paper with adaptive DiffAugment of real and fake before D", MappingProxyType(
               {**_IMAGES_PAPER, **_ADAPTIVE}), IMAGE_BAR, _UNMEASURED, "-",
           max_train=SMALL_IMAGES, auto=False, epoch_images=EPOCH_IMAGES),
    Recipe("points-ns-r1-wide", "points", "non-saturating",
           "MLP 400x3, z 2, non-saturating + R1 0.1, TTUR Adam 1e-3/2e-3 (0.5, 0.9), batch 512, 450 epochs, "
           "EMA 0.999, lr decay after 50%", MappingProxyType({**_POINTS_NS, **_NO_AUGMENT}), POINT_BAR,
           "with R1 0.01 at batch 256 on 100k points: ring8 8/8, HQ >= 97.0%; grid25 25/25, HQ 95.2% mean, "
           "rev-KL 0.029 mean over 5 seeds (bench/RESULTS.md section 1); through the pipeline (9k training points): grid25 25/25, "
           "HQ 95.2-96.3%, rev-KL <= 0.009 on seeds 0-4; ring8 8/8, HQ 97.7-98.2%, rev-KL <= 0.004 on seeds 0-4 "
           "(section 7)",
           ".venv/bin/python -m bench.default_quality --only grid25 --seeds 0,1,2,3,4 (and --only ring8)"),
    Recipe("points-paper", "points", None,
           "MLP 400x3, z 2, the chosen loss's paper optimiser, batch 512, EMA 0.999",
           MappingProxyType({**_POINTS_PAPER, **_NO_AUGMENT}), POINT_BAR, _UNMEASURED, "-"),
]}
# Every key some recipe decides (a null in params.yaml means "the recipe decides"); the rest of the
# optimiser falls back to the loss's paper values (resolve above), so it is recipe-owned too.
RECIPE_KEYS: frozenset[str] = frozenset(
    {k for r in RECIPES.values() for k in r.values} | {f"optim.{f}" for f in OptimConfig.model_fields})


def choose(kind: DataKind, n_train: int | None, loss: str) -> Recipe:
    """`recipe: auto`: the recipe tuned for this kind, size and loss, else the kind's paper recipe; of
    those that fit, the one made for the smallest sets (the most specific)."""
    fits = [r for r in RECIPES.values()
            if r.auto and r.kind == kind and (r.max_train is None or (n_train or 0) <= r.max_train)]
    pool = [r for r in fits if r.loss == loss] or [r for r in fits if r.loss is None]
    return min(pool, key=lambda r: r.max_train if r.max_train is not None else float("inf"))


def epochs_for(kimg: float, n_train: int | None, repeat: int, batch_size: int) -> int:
    """Epochs that show `kimg` thousand images of an `n_train`-item set passed `repeat` times an epoch (as the
    loop batches it: gan_core.training.images_per_epoch; an unknown size: EPOCH_IMAGES an epoch), held to
    MAX_PASSES passes over the set."""
    per_epoch = images_per_epoch(n_train * repeat, batch_size) if n_train else EPOCH_IMAGES
    return max(1, min(round(kimg * 1000 / per_epoch), MAX_PASSES // repeat))


def fill(explicit: Mapping[str, Any], recipe: Recipe, loss: str, n_train: int | None = None,
         side: int | None = None) -> dict[str, Any]:
    """The recipe-owned values of a run: the user's explicit (non-null) ones, then the recipe's (its
    train.repeat sized to `n_train` training items, its length to the image `side`), then, for the optimiser,
    the loss's paper values. train.epochs follows from train.kimg unless set (then it wins). Returns dotted key -> value for
    every recipe key."""
    out = dict(recipe.values_for(side))
    out["train.repeat"] = recipe.repeat_for(n_train)
    if recipe.loss is not None and recipe.loss != loss:
        raise ValueError(f"recipe {recipe.name!r} was tuned for the {recipe.loss} loss, not {loss}: use "
                         f"recipe: auto (or a recipe without a loss, e.g. {recipe.kind}-paper)")
    paper = LOSSES[loss].optim
    for f in OptimConfig.model_fields:
        out.setdefault(f"optim.{f}", list(v) if isinstance(v := getattr(paper, f), tuple) else v)
    out.update({k: v for k, v in explicit.items() if v is not None})
    if explicit.get("train.epochs") is None and out.get("train.kimg") is not None:
        out["train.epochs"] = epochs_for(out["train.kimg"], n_train, out["train.repeat"], out["train.batch_size"])
    elif explicit.get("train.kimg") is None:
        out["train.kimg"] = None  # the user counts in epochs (set both, as resolved params are: epochs win)
    return out
