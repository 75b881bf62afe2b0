"""Everything a GAN run needs to continue exactly where it stopped, as one plain dict.

Only tensors, numbers, strings, lists and dicts: loadable with torch.load(weights_only=True)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gan_core.config import ModelConfig
from gan_core.ema import EMA
from gan_core.models import build_generator
from gan_core.steps import unwrap


def training_state(G, D, opt_g, opt_d, ema: EMA | None, epoch: int, history: list[dict],
                   model_cfg: ModelConfig, data_shape: tuple[int, ...]) -> dict[str, Any]:
    return {
        "generator": unwrap(G).state_dict(),
        "discriminator": unwrap(D).state_dict(),
        "opt_g": opt_g.state_dict(),
        "opt_d": opt_d.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "epoch": epoch,
        "rng": torch.get_rng_state(),
        "history": history,
        "model": model_cfg.model_dump(),
        "data_shape": list(data_shape),
    }


def restore(state: dict[str, Any], G, D, opt_g, opt_d, ema: EMA | None) -> tuple[int, list[dict]]:
    """Load a training_state into fresh modules/optimizers; returns (next epoch, history)."""
    unwrap(G).load_state_dict(state["generator"])
    unwrap(D).load_state_dict(state["discriminator"])
    opt_g.load_state_dict(state["opt_g"])
    opt_d.load_state_dict(state["opt_d"])
    if ema is not None and state.get("ema") is not None:
        ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["rng"])
    return int(state["epoch"]) + 1, list(state["history"])


def generator_bundle(state: dict[str, Any], class_names: list[str] | None = None) -> dict[str, Any]:
    """What gets evaluated and registered: the EMA generator when there is one, else the last G, and
    (conditional generators) the dataset's class names in class-id order, so a class is asked for by name."""
    weights = state["ema"]["module"] if state.get("ema") is not None else state["generator"]
    bundle = {"generator": weights, "model": state["model"], "data_shape": state["data_shape"]}
    if class_names is not None:
        bundle["classes"] = [str(c) for c in class_names]
    return bundle


def generator_from_state(state: dict[str, Any]) -> nn.Module:
    """Rebuild the generator (eval mode) from a generator_bundle (or a training_state). A conditional one
    carries `class_names`: the bundle's, or "0", "1", ... for bundles saved before names were kept."""
    bundle = generator_bundle(state) if "discriminator" in state else state
    G = build_generator(ModelConfig.model_validate(bundle["model"]), tuple(bundle["data_shape"]))
    G.load_state_dict(bundle["generator"])
    if G.num_classes:
        G.class_names = list(bundle.get("classes") or [str(i) for i in range(G.num_classes)])
    return G.eval()
