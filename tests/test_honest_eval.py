"""Honest numbers: train/val/holdout splits, memorisation, KID's scale, the bar, the evaluation pictures.

Everything runs on digits or synthetic arrays in a bare workspace folder (no DVC, no Ray); the judge is
an untrained classifier, whose random features are enough to exercise the Evaluator's plumbing."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flows.evaluate import Evaluator, headline, judge_protocol, meets_bar, render
from flows.params import Params
from flows.data.load import CLASSIFIER, PROCESSED, load_split
from flows.data.stages import prepare
from gan_core.classifier import Classifier
from gan_core.data import load_digits, split, train_val_holdout
from gan_core.metrics import memorisation, pixel_space, scaled_kid

# sha256 of today's (pre-validation-split) digits holdout: split(digits, 0.2, seed 0), x then y bytes.
DIGITS_HOLDOUT_SHA = "6c3b024ef9695b7b"


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.tobytes() for r in x.flatten(1).numpy()}


def test_three_splits_are_disjoint_stratified_and_keep_the_holdout():
    n = 500
    ids = torch.arange(n, dtype=torch.float32)[:, None]  # each item is its own id: overlaps show exactly
    y = torch.arange(n) % 5
    s = train_val_holdout(ids, y, 0.2, 0.1, seed=3)
    sets = {k: set(v[0].flatten().tolist()) for k, v in s.items()}
    assert sum(map(len, sets.values())) == n and set.union(*sets.values()) == set(range(n))
    assert (len(sets["holdout"]), len(sets["val"])) == (100, 50)  # 0.1 of ALL items, not of the rest
    assert torch.equal(s["holdout"][0], split(ids, y, 0.2, seed=3)[2])  # the holdout of before
    assert torch.bincount(s["val"][1], minlength=5).tolist() == [10] * 5  # stratified
    # a tiny set: the minimum gives val a quarter of the rest rather than round(0.1 * 12) = 1 item
    small = train_val_holdout(ids[:12], torch.zeros(12, dtype=torch.long), 0.2, 0.1, seed=0)
    assert [len(small[k][0]) for k in ("train", "val", "holdout")] == [8, 2, 2]


def test_prepare_writes_val_and_leaves_the_digits_holdout_as_it_was(tmp_path):
    manifest = prepare(Params(), tmp_path)
    x_ho, y_ho = load_split(tmp_path, "holdout")
    assert hashlib.sha256(x_ho.numpy().tobytes() + y_ho.numpy().tobytes()).hexdigest()[:16] == DIGITS_HOLDOUT_SHA
    assert manifest["counts"] == {"train": 1259, "val": 179, "holdout": 359}  # val: ~0.1 of 1,797
    assert set(manifest["md5"]) == {"train.pt", "val.pt", "holdout.pt"}
    assert manifest["split"] == {"holdout_fraction": 0.2, "val_fraction": 0.1, "seed": 0}
    rows = {k: _rows(load_split(tmp_path, k)[0]) for k in ("train", "val", "holdout")}
    # digits holds a few exact duplicate images, so identical rows can sit in two splits: only a few
    assert len(rows["train"] & rows["val"]) < 3 and len(rows["val"] & rows["holdout"]) < 3
    assert len(rows["train"] & rows["holdout"]) < 5


def test_memorisation_scores_replayed_training_images_high_and_unseen_real_images_near_5_percent():
    x, y = load_digits()
    s = train_val_holdout(x, y, 0.2, 0.1, seed=0)
    train, holdout, val = (pixel_space(s[k][0].numpy()) for k in ("train", "holdout", "val"))
    replay = memorisation(train, holdout, train[:500])
    unseen = memorisation(train, holdout, val)  # real digits the threshold was not calibrated on
    assert replay["memorisation"] == 1.0
    assert 0.01 <= unseen["memorisation"] <= 0.12, unseen
    assert replay["memorisation_threshold"] == unseen["memorisation_threshold"] > 0
    # slightly perturbed copies are still copies; the mean digit (a blur) is no copy of anything
    jitter = train[:500] + np.random.default_rng(0).normal(0, 0.05, (500, train.shape[1]))
    assert memorisation(train, holdout, jitter)["memorisation"] > 0.9
    assert memorisation(train, holdout, np.zeros((10, train.shape[1])))["memorisation"] == 0.0


def test_kid_is_scale_free_near_zero_for_real_vs_real_and_clearly_positive_for_a_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(1000, 64)), rng.normal(size=(1000, 64))
    same, same_std = scaled_kid(a, b)
    assert abs(same) < 10 and same_std > 0  # x1000: the unbiased estimate's noise, either sign
    shifted = scaled_kid(a, b + 0.5)[0]
    assert shifted > 300 and shifted > scaled_kid(a, b + 0.25)[0] > 50
    # raw feature units no longer matter: the cause of "KID 305.1" / "-2866.8"
    big = scaled_kid(40 * a + 7, 40 * (b + 0.5) + 7)[0]
    assert big == pytest.approx(shifted, rel=1e-6)


IMAGES = {"fd": 30.0, "fd_ratio": 1.5, "fd_real_baseline": 20.0, "fd_ratio_samples": 1259.0, "kid": 4.2,
          "kid_std": 2.0, "precision": 0.8, "recall": 0.7, "memorisation": 0.04, "memorisation_threshold": 1.4,
          "reference_samples": 359.0, "num_classes": 10.0, "class_coverage": 10.0, "class_kl": 0.01}


def test_meets_bar_gives_the_reasons_it_misses():
    bar = {"fd_ratio": 2.0, "class_coverage": 1.0}
    assert meets_bar(IMAGES, bar) == (True, [])
    ok, why = meets_bar({**IMAGES, "fd_ratio": 4.25, "class_coverage": 8.0}, bar)
    assert not ok and why == ["Frechet ratio 4.25 > 2", "8/10 classes covered, all needed"]
    assert meets_bar({**IMAGES, "class_coverage": 8.0}, {"class_coverage": 0.8}) == (True, [])
    assert meets_bar({**IMAGES, "fd_ratio": math.nan}, bar)[0] is False
    assert meets_bar({**IMAGES, "memorisation": 0.5}, {"memorisation": 0.2}) == (False, ["memorisation 0.5 > 0.2"])
    # unlabelled data: class coverage is not measured, so it neither passes nor fails the bar
    unlabelled = {k: v for k, v in IMAGES.items() if k not in ("class_coverage", "class_kl")} | {"num_classes": 1.0}
    assert meets_bar({**unlabelled, "fd_ratio": 3.0}, bar) == (False, ["Frechet ratio 3 > 2"])
    points = {"modes": 7.0, "num_modes": 8.0, "high_quality": 0.99, "reverse_kl": 0.02}
    ok, why = meets_bar(points, {"modes": 1.0, "high_quality": 0.97, "reverse_kl": 0.05})
    assert not ok and why == ["7/8 modes captured, all needed"]
    with pytest.raises(ValueError, match="unknown bar criteria"):
        meets_bar(IMAGES, {"fid": 2.0})


def test_headline_says_plainly_whether_the_bar_is_met():
    line = headline(IMAGES, "images", {"fd_ratio": 2.0, "class_coverage": 1.0})
    assert line.startswith("Meets the bar (Frechet ratio <= 2, every class)")
    assert "KID x1000 4.2" in line and "memorisation 0.04" in line and "classes covered 10/10" in line
    assert headline({**IMAGES, "fd_ratio": 3.0}, "images").startswith("Misses the bar: Frechet ratio 3 > 2")
    unlabelled = {k: v for k, v in IMAGES.items() if k not in ("class_coverage", "class_kl")} | {"num_classes": 1.0}
    line = headline(unlabelled, "images")
    assert "class coverage not measured" in line and "1/1" not in line and line.startswith("Meets the bar")
    old = {k: v for k, v in IMAGES.items() if not k.startswith(("memorisation", "reference"))}  # an older score
    assert "(memorisation not measured)" in headline(old, "images")
    points = headline({"modes": 8.0, "num_modes": 8.0, "high_quality": 0.99, "reverse_kl": 0.01}, "points")
    assert points.startswith("Meets the bar (every mode, high-quality share >= 0.97, reverse KL <= 0.05)")


def _small_workspace(ws: Path, n: int = 400, judge: dict | None = None) -> Path:
    """Digits cut to n images, split as prepare does, with an untrained classifier as the judge."""
    x, y = load_digits()
    out = ws / PROCESSED
    out.mkdir(parents=True)
    splits = train_val_holdout(x[:n], y[:n], 0.2, 0.1, seed=0)
    for name, (xs, ys) in splits.items():
        torch.save({"x": xs, "y": ys}, out / f"{name}.pt")
    counts = {k: len(v[0]) for k, v in splits.items()}
    (out / "manifest.json").write_text(json.dumps({"kind": "images", "name": "digits", "counts": counts}))
    (ws / CLASSIFIER).mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(Classifier((1, 8, 8), 10, 16).state_dict(), ws / CLASSIFIER / "classifier.pt")
    info = {"kind": "images", "in_shape": [1, 8, 8], "num_classes": 10, "feature_dim": 16, **(judge or {})}
    (ws / CLASSIFIER / "classifier.json").write_text(json.dumps(info))
    return ws


class Replay(torch.nn.Module):
    """A "generator" that returns images of a given set, in a seeded random order."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.images = images

    def sample_z(self, n, generator):
        return torch.randint(len(self.images), (n,), generator=generator)

    def forward(self, idx):
        return self.images[idx]


def test_evaluator_scores_against_the_split_it_is_given(tmp_path):
    ws = _small_workspace(tmp_path)
    train, val, holdout = (load_split(ws, k)[0] for k in ("train", "val", "holdout"))
    probe, final = Evaluator(ws, split="val"), Evaluator(ws)
    assert len(probe.ref_features) == len(val) and len(final.ref_features) == len(holdout)
    cheap, _ = probe.measure(Replay(train), 200, seed=0, full=False)
    assert "memorisation" not in cheap and cheap["reference_samples"] == len(val)
    copied, _ = final.measure(Replay(train), 200, seed=0)
    unseen, _ = final.measure(Replay(val), 200, seed=0)
    assert copied["memorisation"] > 0.95 and unseen["memorisation"] < 0.2, (copied, unseen)
    assert "class_coverage" in copied  # a labelled judge (its untrained guesses are all one class)
    with pytest.raises(ValueError, match="split must be one of"):
        Evaluator(ws, split="train")


def test_the_ratio_of_more_samples_than_training_images_averages_chunks_that_cover_them_all(tmp_path):
    """A ratio from the first m samples alone ignores the rest (and swings ±0.2 between draws on
    digits): with 2m samples whose second half is noise, both halves must count, equally."""
    from gan_core.classifier import predict_features
    from gan_core.metrics import frechet_distance

    ws = _small_workspace(tmp_path)
    train = load_split(ws, "train")[0]
    m = len(train)
    noise = torch.rand_like(train) * 2 - 1
    judge = Evaluator(ws)
    both = judge.measure_samples(torch.cat([train, noise]), full=False)
    first = judge.measure_samples(train, full=False)
    assert both["fd_ratio_samples"] == first["fd_ratio_samples"] == m
    f_noise, _ = predict_features(judge.classifier, noise)
    expected = (frechet_distance(judge.ref_features, judge.train_features)
                + frechet_distance(judge.ref_features, f_noise)) / 2 / judge.baseline(m)
    assert both["fd_ratio"] == pytest.approx(expected, rel=1e-6) and both["fd_ratio"] > first["fd_ratio"]


def test_unlabelled_judge_reports_no_class_coverage_and_the_protocol_is_frozen_with_it(tmp_path):
    ws = _small_workspace(tmp_path, judge={"labelled": False, "eval": {"num_samples": 300, "seed": 7}})
    metrics, _ = Evaluator(ws).measure(Replay(load_split(ws, "val")[0]), 100, seed=0)
    assert "class_coverage" not in metrics and "class coverage not measured" in headline(metrics, "images")
    assert judge_protocol(ws, Params()) == (300, 7)  # not params.eval's 2500 / 1234
    (ws / CLASSIFIER / "classifier.json").write_text(json.dumps({"kind": "images"}))
    assert judge_protocol(ws, Params()) == (2500, 1234)


def test_render_writes_samples_beside_real_images_and_a_nearest_neighbour_panel(tmp_path):
    ws = _small_workspace(tmp_path / "ws")
    train, _ = load_split(ws, "train")
    fakes = torch.cat([train[:8], -torch.ones(92, 1, 8, 8)])  # 8 copies, then blank (all black) images
    images = render(fakes, tmp_path / "out", ws, threshold=0.5)
    assert set(images) == {"samples", "nearest"}
    with Image.open(images["samples"]) as im:
        px = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert px.shape[1] >= 2 * 256
    half = px.shape[1] // 2
    # blank (black) samples on the left, real digits (light strokes on black) on the right
    assert abs(px[20:, :half].mean() - px[20:, half:].mean()) > 10
    with Image.open(images["nearest"]) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
    assert red.sum() > 0  # the 8 copies are framed as within the memorisation threshold
    # a training set of 1,000 images or more gets no nearest-neighbour panel
    big = tmp_path / "big"
    _small_workspace(big, n=1797)
    assert set(render(fakes, tmp_path / "out2", big)) == {"samples"}


def test_a_workspace_prepared_before_the_val_split_says_how_to_make_it(tmp_path):
    from flows.errors import UserError

    ws = _small_workspace(tmp_path)
    (ws / PROCESSED / "val.pt").unlink()
    with pytest.raises(UserError, match="dvc repro --force prepare"):
        Evaluator(ws, split="val")
