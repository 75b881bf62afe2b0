"""Small typed configs for the pieces of gan_core. Validated once, at the edge (params.yaml)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LossName = Literal[
    "saturating",       # minimax: G minimises log(1 - D(G(z)))
    "non-saturating",   # G minimises -log D(G(z))
    "wgan",             # Wasserstein critic, Lipschitz by weight clipping (WGAN-clip)
    "wgan-gp",          # Wasserstein critic, Lipschitz by gradient penalty
    "hinge",
    "least-squares",
    "rpgan",            # relativistic pairing, with R1 and R2 at loss.r1_gamma (R3GAN's loss)
    "f-kl", "f-reverse-kl", "f-js", "f-pearson", "f-hellinger",  # f-GAN (Nowozin et al. 2016)
]
LOSS_NAMES: tuple[str, ...] = get_args(LossName)
LOSS_ALIASES = {"ns": "non-saturating", "minimax": "saturating", "wgan-clip": "wgan", "wgangp": "wgan-gp",
                "lsgan": "least-squares", "js": "f-js", "kl": "f-kl", "reverse-kl": "f-reverse-kl",
                "pearson": "f-pearson", "hellinger": "f-hellinger",
                "r3gan": "rpgan", "relativistic": "rpgan"}


def _takes_bool(annotation) -> bool:
    return annotation is bool or any(_takes_bool(a) for a in get_args(annotation))


def _takes_number(annotation) -> bool:
    return annotation in (int, float) or any(_takes_number(a) for a in get_args(annotation))


class Strict(BaseModel):
    """Unknown keys are errors: a typo in params.yaml must not be silently ignored. Nor is true/false a
    number: pydantic would read `epochs: true` as 1 epoch."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value, info):
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool) and _takes_number(annotation) and not _takes_bool(annotation):
            raise ValueError("expected a number, not true/false")
        return value


class ModelConfig(Strict):
    arch: Literal["auto", "dcgan", "resnet", "mlp"] = Field(
        "dcgan", description="auto: mlp for points, dcgan for images (resolved before building)")
    z_dim: int = Field(32, ge=1, le=1024)
    width: int = Field(32, ge=4, le=1024, description="base channels (dcgan/resnet) or hidden units (mlp)")
    depth: int = Field(3, ge=1, le=8, description="hidden layers of the MLP pair")
    spectral_norm: bool = Field(False, description="spectral normalisation on every D layer")
    conditional: bool | Literal["auto"] = Field(
        False, description="class-conditional G (cond. batch norm) and D (projection); auto: when the data has "
                           ">= 2 classes (resolved before building)")
    num_classes: int | None = Field(None, ge=2, description="set from the data when conditional")
    class_shares: list[float] | None = Field(
        None, description="set from the data when conditional: each class's share of the training split. Fake "
                          "labels in training and a draw without a class follow it; None: equal shares")

    @model_validator(mode="after")
    def _shares(self):
        # An imbalanced labelled folder: fakes drawn in equal shares would not be the data's joint p(x, y),
        # and the judge (whose holdout keeps the data's class mix) would charge the mix to the generator.
        if self.class_shares is not None:
            s = self.class_shares
            if self.num_classes is not None and len(s) != self.num_classes:
                raise ValueError(f"class_shares has {len(s)} entries for {self.num_classes} classes")
            if min(s) < 0 or sum(s) <= 0:
                raise ValueError("class_shares must be non-negative with a positive sum")
            self.class_shares = [float(v) / sum(s) for v in s]
        return self


class LossConfig(Strict):
    """The user's choice of loss and its extras; what each loss is, and its defaults, is its row in
    gan_core.losses.LOSSES (GanLoss lays these values over the row)."""

    name: LossName = "non-saturating"
    gp_weight: float | None = Field(None, ge=0.0, description="lambda; None: the loss's own (gan_core.losses), 0 = off")
    gp_one_sided: bool = False
    clip: float | None = Field(None, gt=0.0, description="weight clipping c; None: the loss's own (gan_core.losses)")
    r1_gamma: float = Field(0.0, ge=0.0, description="R1 penalty gamma/2 E||grad D(x_real)||^2 (rpgan: also R2, the "
                            "same on fakes); 0 = off")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value):
        # `loss: wgan-gp` in params.yaml is shorthand for `loss: {name: wgan-gp}`.
        if isinstance(value, str):
            value = {"name": value}
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            value = {**value, "name": LOSS_ALIASES.get(value["name"], value["name"])}
        return value


OptimizerName = Literal["adam", "rmsprop"]


class OptimConfig(Strict):
    """Optimiser settings; None means the recipe's paper default for the chosen loss."""

    optimizer: OptimizerName | None = None
    lr_g: float | None = Field(None, gt=0.0)
    lr_d: float | None = Field(None, gt=0.0, description="a different lr_d than lr_g is TTUR")
    betas: tuple[float, float] | None = None
    n_critic: int | None = Field(None, ge=1, description="D steps per G step")
    lr_decay_start: float | None = Field(
        None, ge=0.0, le=1.0, description="share of training after which both lrs decay linearly to 1%; "
        "1 = constant (None: the recipe's choice)")

    @model_validator(mode="after")
    def _betas_in_range(self):
        if self.betas is not None and not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError("each of optim.betas must be in [0, 1)")
        return self


@dataclass(frozen=True)
class ResolvedOptim:
    """Every optimiser setting decided: a loss's paper optimiser, a recipe's, or the user's, field by field."""

    optimizer: OptimizerName
    lr_g: float
    lr_d: float
    betas: tuple[float, float]  # Adam only; RMSprop ignores it
    n_critic: int
    lr_decay_start: float | None = None  # see OptimConfig; None = constant lr
