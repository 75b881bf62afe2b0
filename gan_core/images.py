"""Sample grids and scatter plots as PNG files (no torchvision, no pyplot global state)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
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


def _rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a


def _upscale(a: np.ndarray, scale: int) -> np.ndarray:
    return a.repeat(scale, axis=0).repeat(scale, axis=1)  # nearest neighbour: crisp pixels


def _min_scale(width: int, min_width: int = MIN_GRID_WIDTH) -> int:
    return max(1, math.ceil(min_width / width))


def _with_header(body: np.ndarray, labels: list[tuple[int, str]]) -> Image.Image:
    """`body` (H, W, 3) under a white strip holding each (x, text) label, in PIL's built-in font (no
    font file needed)."""
    from PIL import ImageDraw

    strip = 16
    img = Image.new("RGB", (body.shape[1], body.shape[0] + strip), (255, 255, 255))
    img.paste(Image.fromarray(body), (0, strip))
    draw = ImageDraw.Draw(img)
    for x, text in labels:
        draw.text((x + 2, 2), text, fill=(0, 0, 0))
    return img


def _save(img: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path


def save_comparison_png(left: Tensor, right: Tensor, path: str | Path, labels: tuple[str, str] = ("generated", "real"),
                        gap: int = 8, scale: int | None = None) -> Path:
    """Two grids side by side in one PNG (generated left, real right), each labelled above. Both use
    the same number of columns, so their rows line up; the integer upscale makes each grid at least
    MIN_GRID_WIDTH px wide by default."""
    cols = math.ceil(math.sqrt(max(len(left), len(right))))
    grids = [_rgb(image_grid(images, nrow=cols)) for images in (left, right)]
    scale = scale or _min_scale(max(g.shape[1] for g in grids))
    grids = [_upscale(g, scale) for g in grids]
    height = max(g.shape[0] for g in grids)
    grids = [np.pad(g, ((0, height - g.shape[0]), (0, 0), (0, 0)), constant_values=255) for g in grids]
    body = np.concatenate([grids[0], np.full((height, gap, 3), 255, np.uint8), grids[1]], axis=1)
    return _save(_with_header(body, [(0, labels[0]), (grids[0].shape[1] + gap, labels[1])]), path)


MARK = (220, 30, 30)  # the frame of a marked pair
UNMARKED = (190, 190, 190)  # light grey: pairs stay apart from each other


def save_pairs_png(first: Tensor, second: Tensor, path: str | Path, marked: list[bool] | None = None,
                   per_row: int = 4, label: str = "", scale: int | None = None) -> Path:
    """Pairs (first[i] beside second[i]), `per_row` pairs a row, each pair in a frame: red when
    marked[i], light grey otherwise. For a nearest-neighbour panel: a sample beside its nearest match."""
    if len(first) != len(second) or len(first) == 0:
        raise ValueError(f"need equally many images on both sides, got {len(first)} and {len(second)}")
    if marked is not None and len(marked) != len(first):
        raise ValueError(f"marked has {len(marked)} entries for {len(first)} pairs")
    frame = 2
    tiles = []
    for i in range(len(first)):
        pair = _rgb(image_grid(torch.stack([first[i], second[i]]), nrow=2, pad=1))
        colour = MARK if marked is not None and marked[i] else UNMARKED
        tile = np.empty((pair.shape[0] + 2 * frame, pair.shape[1] + 2 * frame, 3), np.uint8)
        tile[:] = colour
        tile[frame:-frame, frame:-frame] = pair
        tiles.append(tile)
    th, tw = tiles[0].shape[:2]
    cols = min(per_row, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    gut = 1  # white between frames, so neighbouring frames of one colour stay apart
    body = np.full((rows * (th + gut) - gut, cols * (tw + gut) - gut, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        body[r * (th + gut):r * (th + gut) + th, c * (tw + gut):c * (tw + gut) + tw] = tile
    body = _upscale(body, scale or _min_scale(body.shape[1], int(1.5 * MIN_GRID_WIDTH)))  # pairs: wider
    return _save(_with_header(body, [(0, label)]) if label else Image.fromarray(body), path)


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
