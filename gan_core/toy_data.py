"""2-D Gaussian mixtures from the mode-collapse literature: every mode is known, so collapse is
measured exactly (see metrics.mode_metrics) instead of through a classifier."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

TOY_DATASETS = ("ring8", "grid25", "gauss8", "gauss25")


def toy_modes(name: str) -> tuple[np.ndarray, float]:
    """(means (K, 2) float64, per-coordinate std shared by all modes) of a named toy mixture.

    ring8   8 modes evenly on the unit circle, std 0.01 (VEEGAN, Srivastava et al. 2017; PacGAN).
    grid25  means {-4,-2,0,2,4}^2, std 0.05 (PacGAN, Lin et al. 2018).
    gauss8  WGAN-GP's "8gaussians" (improved_wgan_training/gan_toy.py): centres 2*(±1,0), 2*(0,±1),
            2*(±1/√2,±1/√2), noise std 0.02, then every point divided by 1.414. The division is folded in:
            means = centres / 1.414, std = 0.02 / 1.414 (the literal 1.414, as in the reference code).
    gauss25 WGAN-GP's "25gaussians": centres 2*{-2..2}^2, noise std 0.05, every point divided by 2.828:
            means = centres / 2.828, std = 0.05 / 2.828.
    """
    if name == "ring8":
        angles = 2.0 * np.pi * np.arange(8) / 8
        return np.stack([np.cos(angles), np.sin(angles)], axis=1), 0.01
    if name == "grid25":
        return _grid(np.arange(-4.0, 5.0, 2.0)), 0.05
    if name == "gauss8":
        s = 1.0 / np.sqrt(2.0)
        dirs = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)], dtype=np.float64)
        return 2.0 * dirs / 1.414, 0.02 / 1.414
    if name == "gauss25":
        return _grid(2.0 * np.arange(-2.0, 3.0)) / 2.828, 0.05 / 2.828
    raise ValueError(f"unknown toy dataset {name!r}; valid names: {', '.join(TOY_DATASETS)}")


def _grid(coords: np.ndarray) -> np.ndarray:
    xs, ys = np.meshgrid(coords, coords, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def sample_toy(name: str, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """(points (n, 2) float32, mode index (n,) int64): modes drawn i.i.d. uniformly, then isotropic noise.
    Own numpy Generator, so the global torch/numpy RNG state is left untouched."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    means, std = toy_modes(name)
    rng = np.random.default_rng(seed)
    mode = rng.integers(0, means.shape[0], size=n)
    points = means[mode] + std * rng.standard_normal((n, 2))
    return torch.from_numpy(points.astype(np.float32)), torch.from_numpy(mode.astype(np.int64))
