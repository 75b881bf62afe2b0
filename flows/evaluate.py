"""Evaluation of a trained generator against the holdout split, with the dataset's own classifier."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from flows.params import Params
from flows.stages import load_classifier, load_split
from gan_core.classifier import predict_features
from gan_core.metrics import class_coverage, class_histogram_kl, frechet_distance


@torch.no_grad()
def sample(G: nn.Module, n: int, seed: int) -> torch.Tensor:
    z = G.sample_z(n, generator=torch.Generator().manual_seed(seed))
    return G.eval()(z).clamp(-1.0, 1.0)


def evaluate(G: nn.Module, params: Params, workspace: Path) -> tuple[dict[str, float], torch.Tensor]:
    """Returns metrics (lower fd is better) and the evaluated samples (for the grid)."""
    classifier, info = load_classifier(workspace)
    x_tr, _ = load_split(workspace, "train")
    x_ho, _ = load_split(workspace, "holdout")
    fake = sample(G, params.eval.num_samples, params.eval.seed)
    f_fake, labels = predict_features(classifier, fake)
    f_ho, _ = predict_features(classifier, x_ho)
    f_tr, _ = predict_features(classifier, x_tr)
    k = info["num_classes"]
    fd = frechet_distance(f_fake, f_ho)
    # Real-vs-real baseline: the distance a perfect generator would still show on these sample sizes.
    baseline = frechet_distance(f_tr, f_ho)
    metrics = {
        "fd": fd,
        "fd_real_baseline": baseline,
        "fd_ratio": fd / baseline if baseline > 0 else float("inf"),
        "class_coverage": float(class_coverage(labels, k)),
        "num_classes": float(k),
        "class_kl": class_histogram_kl(labels, k),
    }
    return metrics, fake
