"""Sample-quality metrics on classifier features and predicted labels (FID-style, mode coverage)."""
from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg


def _sqrtm(m: np.ndarray) -> tuple[np.ndarray, bool]:
    """Matrix square root, plus whether scipy flagged it as unreliable (singular input)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        root = linalg.sqrtm(m)
    bad = any(issubclass(w.category, linalg.LinAlgWarning) for w in caught) or not np.isfinite(root).all()
    return root, bad


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (the FID formula):
    ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))."""
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (n, d) arrays with the same d, got {a.shape} and {b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("need at least 2 samples per set to estimate a covariance")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a = np.atleast_2d(np.cov(a, rowvar=False))
    s_b = np.atleast_2d(np.cov(b, rowvar=False))

    covmean, singular = _sqrtm(s_a @ s_b)
    if singular:
        # Singular product (fewer samples than dims, dead features): shift both off singularity.
        offset = np.eye(s_a.shape[0]) * eps
        covmean, _ = _sqrtm((s_a + offset) @ (s_b + offset))
    # sqrtm of a product of PSD matrices is real in theory; round-off leaves tiny imaginary parts.
    covmean = np.real(covmean)

    diff = mu_a - mu_b
    fd = float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean))
    return max(fd, 0.0)  # round-off can give -1e-12 for identical sets


def class_histogram(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of samples per class (sums to 1; all zeros for no samples)."""
    labels = np.asarray(labels).astype(np.int64).ravel()
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return counts / counts.sum() if labels.size else counts


def class_coverage(labels: np.ndarray, num_classes: int, min_share: float = 0.01) -> int:
    """How many classes get at least `min_share` of the samples (mode-collapse signal)."""
    return int((class_histogram(labels, num_classes) >= min_share).sum())


def class_histogram_kl(labels: np.ndarray, num_classes: int) -> float:
    """KL(p || uniform) = sum p log(p K); 0 for a uniform spread, log K when one class takes all."""
    p = class_histogram(labels, num_classes)
    nz = p > 0  # 0 log 0 = 0
    return float(np.sum(p[nz] * np.log(p[nz] * num_classes)))
