"""Evaluation of a trained generator against the holdout split.

Images: the dataset's own classifier gives features (Fréchet distance, KID, precision/recall,
density/coverage) and labels (class coverage, class-histogram KL). 2-D points: modes captured,
high-quality share and reverse KL against the known mixture (PacGAN's protocol)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from flows.params import Params
from flows.stages import load_classifier, load_manifest, load_split
from gan_core.classifier import predict_features
from gan_core.images import save_grid_png, save_scatter_png
from gan_core.metrics import class_coverage, class_histogram_kl, frechet_distance, image_quality, mode_metrics

# The metric each kind of data is ranked by (lower is better).
PRIMARY = {"images": "fd", "points": "reverse_kl"}


@torch.no_grad()
def sample(G: nn.Module, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    z = G.sample_z(n, generator=gen)
    y = G.sample_labels(n, generator=gen) if getattr(G, "num_classes", None) else None
    out = G.eval()(z) if y is None else G.eval()(z, y=y)
    return out.clamp(-1.0, 1.0) if out.dim() == 4 else out


def evaluate(G: nn.Module, params: Params, workspace: Path) -> tuple[dict[str, float], torch.Tensor]:
    """Returns metrics (see PRIMARY) and the evaluated samples (for the picture)."""
    manifest = load_manifest(workspace)
    fake = sample(G, params.eval.num_samples, params.eval.seed)
    if manifest["kind"] == "points":
        modes = manifest["modes"]
        metrics = mode_metrics(fake.numpy(), np.asarray(modes["means"]), modes["std"])
        metrics = {**metrics, "num_modes": len(modes["means"])}
        return {k: float(v) for k, v in metrics.items()}, fake
    classifier, info = load_classifier(workspace)
    x_tr, _ = load_split(workspace, "train")
    x_ho, _ = load_split(workspace, "holdout")
    f_fake, labels = predict_features(classifier, fake)
    f_ho, _ = predict_features(classifier, x_ho)
    f_tr, _ = predict_features(classifier, x_tr)
    k = info["num_classes"]
    metrics = image_quality(f_ho, f_fake)
    # Real-vs-real baseline: the distance a perfect generator would still show on these sample sizes.
    baseline = frechet_distance(f_tr, f_ho)
    metrics.update({
        "fd_real_baseline": baseline,
        "fd_ratio": metrics["fd"] / baseline if baseline > 0 else float("inf"),
        "class_coverage": float(class_coverage(labels, k)),
        "num_classes": float(k),
        "class_kl": class_histogram_kl(labels, k),
    })
    return metrics, fake


def render(samples: torch.Tensor, path: Path, workspace: Path) -> Path:
    """A sample grid for images, a scatter over the real data for points."""
    if samples.dim() == 4:
        return save_grid_png(samples[:100], path)
    real, _ = load_split(workspace, "holdout")
    return save_scatter_png(samples.numpy(), path, real=real.numpy())


def headline(metrics: dict[str, float]) -> str:
    """One line a person reads first."""
    if "modes" in metrics:
        return (f"modes {metrics['modes']:.0f}/{metrics['num_modes']:.0f}, high quality "
                f"{100 * metrics['high_quality']:.1f}%, reverse KL {metrics['reverse_kl']:.3f}")
    return (f"Frechet distance {metrics['fd']:.3f} (real-vs-real baseline {metrics['fd_real_baseline']:.3f}, "
            f"ratio {metrics['fd_ratio']:.2f}), KID {metrics['kid']:.4f}, precision {metrics['precision']:.2f}, "
            f"recall {metrics['recall']:.2f}; classes covered {metrics['class_coverage']:.0f}/"
            f"{metrics['num_classes']:.0f}, class-histogram KL {metrics['class_kl']:.3f}")
