"""Small typed configs for the pieces of gan_core. Validated once, at the edge (params.yaml)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

LOSS_ALIASES = {"ns": "non-saturating", "wgangp": "wgan-gp"}


class Strict(BaseModel):
    """Unknown keys are errors: a typo in params.yaml must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ModelConfig(Strict):
    arch: Literal["dcgan", "mlp"] = "dcgan"
    z_dim: int = Field(32, ge=1, le=1024)
    width: int = Field(32, ge=4, le=1024, description="base channels (dcgan) or hidden units (mlp)")
    depth: int = Field(3, ge=1, le=8, description="hidden layers of the MLP pair")


class LossConfig(Strict):
    name: Literal["non-saturating", "wgan-gp"] = "non-saturating"
    gp_weight: float = Field(10.0, ge=0.0, description="lambda of the gradient penalty (wgan-gp)")
    gp_one_sided: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value):
        # `loss: wgan-gp` in params.yaml is shorthand for `loss: {name: wgan-gp}`.
        if isinstance(value, str):
            value = {"name": value}
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            value = {**value, "name": LOSS_ALIASES.get(value["name"], value["name"])}
        return value

    @property
    def is_critic(self) -> bool:
        """Critics output an unbounded score (no sigmoid) and estimate a Wasserstein distance."""
        return self.name == "wgan-gp"
