"""Pictures people look for in an MLflow run: loss curves and the diagnostics beside them."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers or CI
import matplotlib.pyplot as plt  # noqa: E402

from flows.conventions import PANELS, completed  # noqa: E402



def training_curves(history: list[dict], path: Path) -> Path:
    fig, axes = plt.subplots(2, 3, figsize=(15, 7))
    for ax, (title, keys) in zip(axes.flat, PANELS):
        for k in keys:
            points = [(completed(h["epoch"]), h[k]) for h in history if k in h]
            if points:  # a probe's key is in the epochs it ran, with gaps between
                ax.plot(*zip(*points), label=k, marker="." if len(points) < len(history) else None)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if title.startswith("probe") and ax.lines and all(min(line.get_ydata()) > 0 for line in ax.lines):
            ax.set_yscale("log")  # a Frechet ratio falls from ~100 to ~2: the end would be a flat line
        if ax.lines:
            ax.legend()
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(PANELS):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
