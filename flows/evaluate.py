"""Evaluation of a generator against the holdout split, the same code during and after training.

Images: the dataset's own classifier gives features (Fréchet distance, KID, precision/recall,
density/coverage) and labels (class coverage, class-histogram KL). 2-D points: modes captured,
high-quality share and reverse KL against the known mixture (PacGAN's protocol).

An Evaluator holds everything it needs in memory, so Ray can ship it to a training worker for
per-epoch scores (what the Tune schedulers and the progress curves use)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

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
    was_training = G.training
    out = G.eval()(z) if y is None else G.eval()(z, y=y)
    G.train(was_training)
    return out.clamp(-1.0, 1.0) if out.dim() == 4 else out


class Evaluator:
    def __init__(self, workspace: Path):
        manifest = load_manifest(workspace)
        self.kind = manifest["kind"]
        self.primary = PRIMARY[self.kind]
        if self.kind == "points":
            self.means = np.asarray(manifest["modes"]["means"])
            self.std = float(manifest["modes"]["std"])
            return
        self.classifier, info = load_classifier(workspace)
        self.num_classes = info["num_classes"]
        x_tr, _ = load_split(workspace, "train")
        x_ho, _ = load_split(workspace, "holdout")
        self.holdout_features, _ = predict_features(self.classifier, x_ho)
        self.train_features, _ = predict_features(self.classifier, x_tr)
        self._baselines: dict[int, float] = {}

    def baseline(self, n: int) -> float:
        """Real-vs-real: FD(n training images, holdout), the distance a perfect generator would still
        show with n samples. FD's covariance estimates bias it upwards at small n (here ~2x at 500
        samples vs 1,438), so the ratio compares sets of equal size: the mean over 10 random subsets
        of the training split, or the whole split."""
        n = min(n, len(self.train_features))
        if n not in self._baselines:
            if n == len(self.train_features):
                self._baselines[n] = frechet_distance(self.train_features, self.holdout_features)
            else:
                rng = np.random.default_rng(0)
                self._baselines[n] = float(np.mean([frechet_distance(
                    self.train_features[rng.choice(len(self.train_features), n, replace=False)],
                    self.holdout_features) for _ in range(10)]))
        return self._baselines[n]

    def score(self, G: nn.Module, n: int, seed: int, full: bool = True) -> tuple[dict[str, float], torch.Tensor]:
        """Metrics of n samples (lower `self.primary` is better) and the samples. full=False skips
        the k-NN metrics (KID, precision/recall, density/coverage) for cheap per-epoch probes."""
        fake = sample(G, n, seed)
        if self.kind == "points":
            m = mode_metrics(fake.cpu().numpy(), self.means, self.std)
            return {**{k: float(v) for k, v in m.items()}, "num_modes": float(len(self.means))}, fake
        f_fake, labels = predict_features(self.classifier, fake.cpu())
        metrics = image_quality(self.holdout_features, f_fake) if full else {
            "fd": frechet_distance(self.holdout_features, f_fake)}
        k = self.num_classes
        # The ratio at equal sizes: more generated samples than training images are cut to as many.
        m = min(len(f_fake), len(self.train_features))
        fd_m = metrics["fd"] if m == len(f_fake) else frechet_distance(self.holdout_features, f_fake[:m])
        baseline = self.baseline(m)
        metrics.update({
            "fd_real_baseline": baseline,
            "fd_ratio": fd_m / baseline if baseline > 0 else float("inf"),
            "fd_ratio_samples": float(m),
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
    extra = (f", KID {metrics['kid']:.4f}, precision {metrics['precision']:.2f}, recall {metrics['recall']:.2f}"
             if "kid" in metrics else "")
    return (f"Frechet distance {metrics['fd']:.3f} (ratio to real-vs-real {metrics['fd_ratio']:.2f}, both "
            f"at {metrics['fd_ratio_samples']:.0f} samples: baseline {metrics['fd_real_baseline']:.3f}){extra}; "
            f"classes covered {metrics['class_coverage']:.0f}/{metrics['num_classes']:.0f}, "
            f"class-histogram KL {metrics['class_kl']:.3f}")


def evaluate(G: nn.Module, params, workspace: Path) -> tuple[dict[str, float], torch.Tensor]:
    """The final evaluation of a pipeline run: params.eval.num_samples samples, every metric."""
    return Evaluator(workspace).score(G, params.eval.num_samples, params.eval.seed)
