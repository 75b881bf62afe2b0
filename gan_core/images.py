"""Sample grids and scatter plots as PNG files (no torchvision, no pyplot global state)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

MIN_GRID_WIDTH = 256  # px; 8x8 digits at scale 1 would be an unreadable thumbnail


def image_grid(images: Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 grid, (H', W') for C == 1 or (H', W', 3) for C == 3.
    `nrow` is images per row (default: a near-square grid); padding is white."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 1|3, H, W) images, got {tuple(images.shape)}")
    n, c, h, w = images.shape
    if n == 0:
        raise ValueError("no images to put in a grid")
    cols = max(1, min(nrow or math.ceil(math.sqrt(n)), n))
    rows = math.ceil(n / cols)
    pix = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    pix_np = pix.numpy().astype(np.uint8).transpose(0, 2, 3, 1)  # N, H, W, C
    grid = np.full((pad + rows * (h + pad), pad + cols * (w + pad), c), 255, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[top : top + h, left : left + w] = pix_np[i]
    return grid[..., 0] if c == 1 else grid


def save_grid_png(images: Tensor, path: str | Path, nrow: int | None = None, scale: int | None = None) -> Path:
    """Write a grid PNG. `scale` is a nearest-neighbour upscale factor (crisp pixels); by default
    the smallest integer making the grid at least MIN_GRID_WIDTH px wide."""
    grid = image_grid(images, nrow)
    if scale is None:
        scale = max(1, math.ceil(MIN_GRID_WIDTH / grid.shape[1]))
    img = Image.fromarray(grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path


def save_scatter_png(points: np.ndarray, path: str | Path, real: np.ndarray | None = None) -> Path:
    """Scatter of generated 2-D points (first two dims), optionally over the real ones in grey."""
    # Figure + Agg canvas directly: no pyplot, so no global backend switch and thread-safe.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pts = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    fig = Figure(figsize=(4, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if real is not None:
        r = np.asarray(real, dtype=np.float64).reshape(len(real), -1)
        ax.scatter(r[:, 0], r[:, 1 % r.shape[1]], s=4, c="0.6", alpha=0.5, label="real", linewidths=0)
    ax.scatter(pts[:, 0], pts[:, 1 % pts.shape[1]], s=4, c="tab:orange", alpha=0.7, label="generated", linewidths=0)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="upper right", fontsize=7, markerscale=3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
