"""Exponential moving average of the generator's weights (Karras et al. 2018; Yazici et al. 2019).
Evaluating the averaged G gives smoother, usually better samples than the latest iterate."""
from __future__ import annotations

import copy

import torch
from torch import nn


def _bare(m: nn.Module) -> nn.Module:
    # Same as steps.unwrap; repeated here so ema does not import the training loop.
    return getattr(m, "module", m)


class EMA:
    def __init__(self, G: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = warmup
        self.n_updates = 0
        self.module = copy.deepcopy(_bare(G)).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """Decay of the next update. The warm-up keeps the average from clinging to the random
        init for ~1/(1-decay) steps early on."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.n_updates) / (10 + self.n_updates))

    @torch.no_grad()
    def update(self, G: nn.Module) -> None:
        d = self.current_decay()
        src = _bare(G)
        for p_ema, p in zip(self.module.parameters(), src.parameters(), strict=True):
            p_ema.lerp_(p.detach(), 1.0 - d)  # = d * p_ema + (1 - d) * p
        # Buffers (BN running stats, counters) are not averaged: G's own are already averages.
        for b_ema, b in zip(self.module.buffers(), src.buffers(), strict=True):
            b_ema.copy_(b)
        self.n_updates += 1

    def state_dict(self) -> dict[str, object]:
        """Tensors and an int only: loadable with torch.load(weights_only=True)."""
        return {"module": dict(self.module.state_dict()), "n_updates": self.n_updates}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.module.load_state_dict(state["module"])  # type: ignore[arg-type]
        self.n_updates = int(state["n_updates"])  # type: ignore[call-overload]

    def __repr__(self) -> str:
        return f"EMA(decay={self.decay}, warmup={self.warmup}, n_updates={self.n_updates})"
