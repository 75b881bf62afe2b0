"""Pictures people look for in an MLflow run: loss curves and the diagnostics beside them."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers or CI
import matplotlib.pyplot as plt  # noqa: E402

from flows.conventions import PANELS, completed  # noqa: E402

def training_curves(history: list[dict], path: Path) -> Path:
    epochs = [completed(h["epoch"]) for h in history]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (title, keys) in zip(axes.flat, PANELS):
        for k in keys:
            if history and k in history[0]:
                ax.plot(epochs, [h[k] for h in history], label=k)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
