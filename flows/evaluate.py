"""Evaluation of a generator against a held-out real split, the same code during and after training.

Two real splits judge, never the training one: `val` for selection (the per-epoch probe, which drives
the kept checkpoints and Ray Tune's pick) and `holdout` for the final report and the promotion gate,
so reported scores are not the optimistic ones selection was made on.

Images: the dataset's own classifier gives features (Fréchet distance, KID, precision/recall,
density/coverage) and labels (class coverage, class-histogram KL); memorisation is measured in pixel
space. 2-D points: modes captured, high-quality share and reverse KL against the known mixture
(PacGAN's protocol).

An Evaluator holds everything it needs in memory, so Ray can ship it to a training worker for
per-epoch scores (what the Tune schedulers and the progress curves use)."""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flows.data.load import CLASSIFIER_INFO, load_classifier, load_manifest, load_split
from gan_core import recipes
from gan_core.classifier import predict_features
from gan_core.images import save_comparison_png, save_pairs_png, save_scatter_png
from gan_core.metrics import (class_coverage, class_histogram, class_histogram_kl, frechet_distance, image_quality,
                              memorisation, mode_metrics, nearest, pixel_space)
from gan_core.sampling import SampleRequest, draw

# The metric each kind of data is ranked by (lower is better): versions (the gate, compare) by PRIMARY,
# a run's checkpoints and Tune's trials by SELECT. For points they differ: reverse KL is PacGAN's published
# measure, but blind to samples smeared between modes, so selecting on it kept mid-training checkpoints
# whose modes were still wide (grid25: 94.7% high quality where the last epoch had 95.6%); mixture_kl
# counts modes, balance and smear in one number (gan_core.metrics.mode_metrics).
PRIMARY = {"images": "fd", "points": "reverse_kl"}
SELECT = {"images": "fd", "points": "mixture_kl"}
SPLITS = ("val", "holdout")  # val: selection; holdout: the final report and the gate
SMALL_DATA = 1000  # training images: below this, render adds a nearest-training-neighbour panel
PANEL_PAIRS = 16

# A bar a generator meets: key -> limit. "max": the metric must not exceed it; "min": must reach it.
# class_coverage and modes are shares (of the classes, of the mixture's modes).
BAR_DIRECTIONS = {"fd_ratio": "max", "kid": "max", "memorisation": "max", "class_kl": "max",
                  "reverse_kl": "max", "class_coverage": "min", "modes": "min", "high_quality": "min",
                  "precision": "min", "recall": "min", "coverage": "min"}
DEFAULT_BAR = {"images": recipes.IMAGE_BAR, "points": recipes.POINT_BAR}  # a recipe's own bar wins
_BAR_NAMES = {"fd_ratio": "Frechet ratio", "kid": "KID", "memorisation": "memorisation", "class_kl": "class KL",
              "reverse_kl": "reverse KL", "high_quality": "high-quality share", "precision": "precision",
              "recall": "recall", "coverage": "coverage"}


@torch.no_grad()
def sample(G: nn.Module, n: int, seed: int) -> torch.Tensor:
    """The evaluator's draws: the same as `ganflow sample -n N --seed S` gives."""
    return draw(G, SampleRequest(n=n, seed=seed))


def judge_protocol(workspace: Path, params) -> tuple[int, int]:
    """(num_samples, seed) of the final evaluation. The classifier stage freezes them in classifier.json
    beside the judge's weights, so every version it scores is drawn alike; params.eval's values are
    the fallback for a judge recorded before that."""
    info = workspace / CLASSIFIER_INFO
    frozen = json.loads(info.read_text()).get("eval", {}) if info.exists() else {}
    return int(frozen.get("num_samples", params.eval.num_samples)), int(frozen.get("seed", params.eval.seed))


class Evaluator:
    """Scores generators against one real split: "val" (selection: the training probe) or "holdout"
    (the final report and the promotion gate)."""

    def __init__(self, workspace: Path, split: str = "holdout"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split = split
        manifest = load_manifest(workspace)
        self.kind = manifest["kind"]
        self.primary, self.select = PRIMARY[self.kind], SELECT[self.kind]
        if self.kind == "points":
            self.means = np.asarray(manifest["modes"]["means"])
            self.std = float(manifest["modes"]["std"])
            return
        self.classifier, info = load_classifier(workspace)
        self.num_classes = info["num_classes"]
        # Class coverage needs real labels: not for a self-supervised judge nor a single class.
        self.labelled = bool(info.get("labelled", info.get("judge", "classifier") == "classifier")) \
            and self.num_classes > 1
        x_tr, y_tr = load_split(workspace, "train")
        x_ref, _ = load_split(workspace, split)
        # The class mix a generator should draw (it is trained and sampled at the training split's).
        self.class_shares = class_histogram(y_tr.numpy(), self.num_classes) if self.labelled else None
        self.ref_features, _ = predict_features(self.classifier, x_ref)
        self.train_features, _ = predict_features(self.classifier, x_tr)
        self._baselines: dict[int, float] = {}
        self._workspace = workspace
        self._pixels: tuple[np.ndarray, np.ndarray] | None = None  # loaded on the first full score

    def baseline(self, n: int) -> float:
        """Real-vs-real: FD(n training images, the reference split), the distance a perfect generator
        would still show with n samples. FD's covariance estimates bias it upwards at small n (on
        digits ~2x at 500 samples vs all), so the ratio compares sets of equal size: the mean over 10
        random subsets of the training split, or the whole split."""
        n = min(n, len(self.train_features))
        if n not in self._baselines:
            if n == len(self.train_features):
                self._baselines[n] = frechet_distance(self.train_features, self.ref_features)
            else:
                rng = np.random.default_rng(0)
                self._baselines[n] = float(np.mean([frechet_distance(
                    self.train_features[rng.choice(len(self.train_features), n, replace=False)],
                    self.ref_features) for _ in range(10)]))
        return self._baselines[n]

    def _memorisation_space(self) -> tuple[np.ndarray, np.ndarray]:
        # Pixels, not the judge's features: copying is a pixel-level fact, and classifier features put
        # any two clear "3"s close together. Loaded lazily: the per-epoch probe never needs them.
        if self._pixels is None:
            x_tr, _ = load_split(self._workspace, "train")
            x_ref, _ = load_split(self._workspace, self.split)
            self._pixels = pixel_space(x_tr.numpy()), pixel_space(x_ref.numpy())
        return self._pixels

    def measure(self, G: nn.Module, n: int, seed: int, full: bool = True) -> tuple[dict[str, float], torch.Tensor]:
        """Metrics of n samples (lower `self.primary` is better) and the samples. full=False skips
        the k-NN metrics (KID, precision/recall, density/coverage, memorisation) for cheap probes."""
        fake = sample(G, n, seed)
        return self.measure_samples(fake, full), fake

    def measure_samples(self, fake: torch.Tensor, full: bool = True) -> dict[str, float]:
        """The metrics of samples already drawn (score's, without a generator)."""
        if self.kind == "points":
            m = mode_metrics(fake.cpu().numpy(), self.means, self.std)
            return {**{k: float(v) for k, v in m.items()}, "num_modes": float(len(self.means))}
        f_fake, labels = predict_features(self.classifier, fake.cpu())
        metrics = image_quality(self.ref_features, f_fake) if full else {
            "fd": frechet_distance(self.ref_features, f_fake)}
        if full:
            train_px, ref_px = self._memorisation_space()
            metrics.update(memorisation(train_px, ref_px, pixel_space(fake.cpu().numpy())))
        # The ratio at equal sizes: more generated samples than training images are cut into chunks of
        # as many, evenly spaced to cover them all, and their distances averaged: every sample drawn
        # counts, and the ratio's draw-to-draw noise shrinks (bench/RESULTS.md section 7).
        n, m = len(f_fake), min(len(f_fake), len(self.train_features))
        starts = np.linspace(0, n - m, math.ceil(n / m)).round().astype(int)
        fd_m = metrics["fd"] if m == n else float(np.mean(
            [frechet_distance(self.ref_features, f_fake[s:s + m]) for s in starts]))
        baseline = self.baseline(m)
        metrics.update({
            "fd_real_baseline": baseline,
            "fd_ratio": fd_m / baseline if baseline > 0 else float("inf"),
            "fd_ratio_samples": float(m),
            "reference_samples": float(len(self.ref_features)),
            "num_classes": float(self.num_classes),
        })
        if self.labelled:
            metrics["class_coverage"] = float(class_coverage(labels, self.num_classes, reference=self.class_shares))
            metrics["class_kl"] = class_histogram_kl(labels, self.num_classes, self.class_shares)
        return metrics


def render(samples: torch.Tensor, out_dir: Path, workspace: Path,
           threshold: float | None = None) -> dict[str, Path]:
    """The pictures of an evaluation, by name. Images: "samples" (100 generated beside 100 real holdout
    images) and, for a training set under SMALL_DATA images, "nearest" (generated samples each beside
    its nearest training image in pixel space, closest first; framed red when within `threshold`, the
    memorisation threshold). Points: "samples", a scatter over the real holdout."""
    real, _ = load_split(workspace, "holdout")
    if samples.dim() != 4:
        return {"samples": save_scatter_png(samples.numpy(), out_dir / "samples.png", real=real.numpy())}
    images = {"samples": save_comparison_png(samples[:100], real[:100], out_dir / "samples.png",
                                             labels=("generated", "real (holdout)"))}
    train, _ = load_split(workspace, "train")
    if len(train) < SMALL_DATA:
        fake = samples[:PANEL_PAIRS]
        dist, idx = nearest(pixel_space(fake.numpy()), pixel_space(train.numpy()))
        order = np.argsort(dist, kind="stable")
        marked = [bool(dist[i] <= threshold) for i in order] if threshold is not None else None
        images["nearest"] = save_pairs_png(fake[torch.from_numpy(order)], train[torch.from_numpy(idx[order])],
                                           out_dir / "nearest.png", marked=marked,
                                           label="generated | nearest training image (red: memorised)")
    return images


def _bar_value(metrics: Mapping[str, float], key: str) -> float | None:
    """The value a bar criterion compares, or None when it was not measured."""
    if key == "class_coverage":
        k = metrics.get("num_classes", 0.0)
        return metrics["class_coverage"] / k if "class_coverage" in metrics and k > 1 else None
    if key == "modes":
        k = metrics.get("num_modes", 0.0)
        return metrics["modes"] / k if "modes" in metrics and k > 0 else None
    return float(metrics[key]) if key in metrics else None


def _miss(metrics: Mapping[str, float], key: str, value: float, limit: float) -> str:
    if key in ("class_coverage", "modes"):
        total = metrics["num_classes" if key == "class_coverage" else "num_modes"]
        what = "classes covered" if key == "class_coverage" else "modes captured"
        need = "all" if limit >= 1.0 else f"at least {math.ceil(limit * total - 1e-9):.0f}"
        return f"{metrics[key]:.0f}/{total:.0f} {what}, {need} needed"
    return f"{_BAR_NAMES[key]} {value:.3g} {'>' if BAR_DIRECTIONS[key] == 'max' else '<'} {limit:g}"


def meets_bar(metrics: Mapping[str, float], bar: Mapping[str, float]) -> tuple[bool, list[str]]:
    """Whether the metrics meet every criterion of `bar` (see BAR_DIRECTIONS), and the reasons they miss.
    A criterion whose metric was not measured (class coverage of unlabelled data, a score from before the
    metric existed) is skipped; a NaN or infinite value misses."""
    unknown = sorted(set(bar) - set(BAR_DIRECTIONS))
    if unknown:
        raise ValueError(f"unknown bar criteria {unknown}; known: {sorted(BAR_DIRECTIONS)}")
    misses = []
    for key, limit in bar.items():
        value = _bar_value(metrics, key)
        if value is None:
            continue
        ok = math.isfinite(value) and (value <= limit if BAR_DIRECTIONS[key] == "max" else value >= limit)
        if not ok:
            misses.append(_miss(metrics, key, value, limit))
    return not misses, misses


def _describe_bar(bar: Mapping[str, float]) -> str:
    parts = []
    for key, limit in bar.items():
        if key in ("class_coverage", "modes"):
            one, many = ("class", "classes covered") if key == "class_coverage" else ("mode", "modes captured")
            parts.append(f"every {one}" if limit >= 1.0 else f"{100 * limit:g}% of {many}")
        else:
            parts.append(f"{_BAR_NAMES[key]} {'<=' if BAR_DIRECTIONS[key] == 'max' else '>='} {limit:g}")
    return ", ".join(parts)


def headline(metrics: Mapping[str, float], kind: recipes.DataKind, bar: Mapping[str, float] | None = None) -> str:
    """What a person reads first: whether the generator meets `bar` (default: DEFAULT_BAR for the data
    `kind`, the manifest's) and why not, then the numbers behind it."""
    bar = DEFAULT_BAR[kind] if bar is None else bar
    ok, misses = meets_bar(metrics, bar)
    measured = {k: v for k, v in bar.items() if _bar_value(metrics, k) is not None}
    verdict = f"Meets the bar ({_describe_bar(measured)})" if ok else f"Misses the bar: {'; '.join(misses)}"
    # Class coverage of unlabelled data is said below; anything else unmeasured (an old score) here.
    unmeasured = [k for k in bar if k not in measured and k != "class_coverage"]
    if unmeasured:
        verdict += f" ({', '.join(unmeasured)} not measured)"
    if kind == "points":
        return (f"{verdict}. Modes {metrics['modes']:.0f}/{metrics['num_modes']:.0f}, high quality "
                f"{100 * metrics['high_quality']:.1f}%, reverse KL {metrics['reverse_kl']:.3f}")
    ref = f" vs {metrics['reference_samples']:.0f} holdout images" if "reference_samples" in metrics else ""
    parts = [f"Frechet distance {metrics['fd']:.2f}{ref}, {metrics['fd_ratio']:.2f}x the real-vs-real "
             f"{metrics['fd_real_baseline']:.2f} (both at {metrics['fd_ratio_samples']:.0f} samples)"]
    if "kid" in metrics:
        parts.append(f"KID x1000 {metrics['kid']:.1f}; precision {metrics['precision']:.2f}, "
                     f"recall {metrics['recall']:.2f}")
    if "memorisation" in metrics:
        parts.append(f"memorisation {metrics['memorisation']:.2f} (unseen real data ~0.05, "
                     "replayed training images ~1)")
    if "class_coverage" in metrics and metrics.get("num_classes", 0.0) > 1:
        parts.append(f"classes covered {metrics['class_coverage']:.0f}/{metrics['num_classes']:.0f}, "
                     f"class-histogram KL {metrics['class_kl']:.3f}")
    else:
        parts.append("class coverage not measured (unlabelled data)")
    return f"{verdict}. " + "; ".join(parts)


def evaluate(G: nn.Module, params, workspace: Path) -> tuple[dict[str, float], torch.Tensor]:
    """The final evaluation of a pipeline run: every metric on the holdout, with the judge's frozen
    sample count and seed (judge_protocol)."""
    n, seed = judge_protocol(workspace, params)
    return Evaluator(workspace, split="holdout").measure(G, n, seed)
