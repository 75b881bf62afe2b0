"""A benchmark's way into the product's training: gan_core.recipes' recipes as the RunSpec of
gan_core.training.fit (the one loop every benchmark trains through) plus a benchmark's explicit overrides,
and the hooks and device moves timing benchmarks need. Imported where a benchmark trains (bench.common
stays free of torch)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from gan_core.augment import AugmentConfig
from gan_core.config import LossConfig, ModelConfig, OptimConfig
from gan_core.losses import GanLoss
from gan_core.recipes import RECIPES, describe, fill, resolve
from gan_core.training import Hooks, Parts, Progress, RunSpec


def recipe_spec(recipe: str, loss: str | None = None, *, seed: int = 0, n_train: int | None = None,
                side: int | None = None, model: dict | None = None, loss_extras: dict | None = None,
                optim: dict | None = None, **fields: Any) -> RunSpec:
    """The RunSpec the product trains for gan_core.recipes' `recipe` (filled as params.yaml's null fields
    are: recipes.fill, its repeat sized to `n_train` items, its values to the image `side`) with `loss` (default:
    the recipe's own), then a
    benchmark's explicit overrides: `model` (ModelConfig fields; conditioning is off unless given, as
    `auto` needs the data), `loss_extras` (LossConfig fields), `optim` (OptimConfig fields, laid over the
    filled optimiser through recipes.resolve) and any RunSpec field (`fields`, via dataclasses.replace)."""
    r = RECIPES[recipe]
    values = fill({}, r, loss or r.loss, n_train, side)

    def section(name: str) -> dict[str, Any]:
        return {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(f"{name}.")}

    loss_cfg = LossConfig(**{"name": loss or r.loss, **section("loss"), **(loss_extras or {})})
    train = section("train")
    spec = RunSpec(model=ModelConfig(**{**section("model"), "conditional": False, **(model or {})}),
                   loss=loss_cfg, optim=resolve(loss_cfg, OptimConfig(**{**section("optim"), **(optim or {})})),
                   augment=AugmentConfig(**section("augment")), epochs=train["epochs"],
                   batch_size=train["batch_size"], seed=seed, ema_decay=train["ema_decay"], repeat=train["repeat"])
    return replace(spec, **fields)


def spec_line(spec: RunSpec) -> str:
    """A RunSpec in one line: model, loss and extras, optimiser, batch, EMA, augmentation, speed options."""
    m, loss = spec.model, GanLoss(spec.loss)  # the loss's own GP weight and clip when not overridden
    extras = [f"{k} {v:g}" for k, v in (("R1", spec.loss.r1_gamma), ("GP", loss.gp_weight), ("clip", loss.clip))
              if v]
    depth = f"x{m.depth}" if m.arch == "mlp" else ""
    out = (f"{m.arch} {m.width}{depth} z{m.z_dim}{' +SN' if m.spectral_norm else ''}"
           f"{' conditional' if m.conditional else ''}, {spec.loss.name}{' + ' + ', '.join(extras) if extras else ''}, "
           f"{describe(spec.optim)}, batch {spec.batch_size}, "
           f"{f'EMA {spec.ema_decay:g}' if spec.ema_decay else 'no EMA'}")
    if spec.augment.policy != "off":
        out += f", {spec.augment.policy} augmentation"
    fast = [o for o, on in ((spec.precision, spec.precision != "fp32"), ("channels_last", spec.channels_last),
                            ("compiled", spec.compile), (f"R1 every {spec.r1_every}", spec.r1_every > 1)) if on]
    return out + (f", {', '.join(fast)}" if fast else "")


@dataclass(frozen=True)
class Variant:
    """One compared setting of a benchmark: a product recipe (gan_core.recipes) with a loss and the explicit
    overrides it names, made a RunSpec by recipe_spec."""

    name: str
    base: str                                        # the product recipe it starts from
    loss: str | None = None                          # None: the base recipe's
    model: dict = field(default_factory=dict)        # ModelConfig fields
    loss_extras: dict = field(default_factory=dict)  # LossConfig fields
    optim: dict = field(default_factory=dict)        # OptimConfig fields laid over the base's optimiser
    fields: dict = field(default_factory=dict)       # RunSpec fields (batch_size, ema_decay, ...)
    steps_scale: float = 1.0                         # a step-budgeted benchmark's multiple of its budget

    def spec(self, seed: int = 0, n_train: int | None = None) -> RunSpec:
        return recipe_spec(self.base, self.loss, seed=seed, n_train=n_train, model=self.model,
                           loss_extras=self.loss_extras, optim=self.optim, **self.fields)

    @property
    def desc(self) -> str:
        """The base, what is overridden, and the whole spec in one line."""
        changed = {**self.model, **self.loss_extras, **self.optim, **self.fields}
        over = ", ".join(f"{k} {v}" for k, v in changed.items())
        scale = f", {self.steps_scale:g}x the G steps" if self.steps_scale != 1 else ""
        return (f"{self.base}{f' ({self.loss})' if self.loss else ''}{f' with {over}' if over else ''}{scale}: "
                f"{spec_line(self.spec())}")


def on_device(parts: Parts, spec: RunSpec, device: str | torch.device) -> None:
    """Parts built by gan_core.training.build (on the CPU) moved to `device` in place, as the Ray worker
    does: the optimisers keep the same parameters; channels_last stays channels_last."""
    fmt = {"memory_format": torch.channels_last} if spec.channels_last and len(parts.data_shape) == 3 else {}
    for m in (parts.G, parts.D, *([parts.ema.module] if parts.ema is not None else [])):
        m.to(device, **fmt)


class EpochClock(Hooks):
    """gan_core.training.Hooks that keep, for each epoch of `fit`, the wall clock at its end (the device
    synchronised first, so queued GPU work is counted) and its metrics (steps_d, whether R1 was taken,
    epoch_time_s...)."""

    def __init__(self, device: str = "cpu") -> None:
        self.cuda = str(device).startswith("cuda")
        self.ends: list[float] = []
        self.metrics: list[dict[str, float]] = []

    def progress(self, p: Progress) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())
        self.metrics.append(p.metrics)
