"""The judge of unlabelled images: self-supervised features must rank flawed image sets the way the
labelled classifier does, and the classifier stage must save and load it like the classifier."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from flows.data import load, stages
from flows.params import Params
from gan_core.classifier import (ROTATIONS, Classifier, SelfSupervisedJudge, predict_features, rotation_accuracy,
                                 train_classifier, train_self_supervised)
from gan_core.data import load_digits, split
from gan_core.metrics import frechet_distance

SETS = ("real", "noised", "blurred", "half missing")


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, ...]:
    x, y = load_digits()
    return split(x, y, 0.2, seed=0)


def _box_blur(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def _flawed_sets(x_tr: torch.Tensor, y_tr: torch.Tensor) -> dict[str, torch.Tensor]:
    """Equal-sized sets of training images (never the holdout they are compared with)."""
    g = torch.Generator().manual_seed(0)
    low = x_tr[y_tr < 5]
    n = len(low)
    real = x_tr[torch.randperm(len(x_tr), generator=g)[:n]]
    return {"real": real,
            "noised": (real + 0.1 * torch.randn(real.shape, generator=g)).clamp(-1, 1),  # 5% of the range
            "blurred": _box_blur(real),
            "half missing": low}  # digits 0-4 only


def _fd_ratios(model: Classifier, x_tr: torch.Tensor, y_tr: torch.Tensor, x_ho: torch.Tensor) -> dict[str, float]:
    """FD(set, holdout) / FD(n real training images, holdout), n the sets' size (as Evaluator.baseline)."""
    f_tr, _ = predict_features(model, x_tr)
    f_ho, _ = predict_features(model, x_ho)
    sets = _flawed_sets(x_tr, y_tr)
    n = len(sets["real"])
    rng = np.random.default_rng(0)
    base = np.mean([frechet_distance(f_tr[rng.choice(len(f_tr), n, replace=False)], f_ho) for _ in range(10)])
    return {name: frechet_distance(predict_features(model, s)[0], f_ho) / base for name, s in sets.items()}


def _ranking(ratios: dict[str, float]) -> list[str]:
    return sorted(ratios, key=ratios.get)


def test_self_supervised_judge_ranks_flawed_sets_like_the_classifier(digits, one_thread):
    x_tr, y_tr, x_ho, y_ho = digits
    judge = train_self_supervised(x_tr, epochs=5, lr=1e-3, seed=0)  # labels hidden: images only
    assert isinstance(judge, SelfSupervisedJudge) and not judge.training
    assert rotation_accuracy(judge, x_ho) > 0.4  # chance: 1/4
    blind = _fd_ratios(judge, x_tr, y_tr, x_ho)
    labelled = _fd_ratios(train_classifier(x_tr, y_tr, 10, epochs=10, lr=3e-3, seed=0), x_tr, y_tr, x_ho)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        untrained = _fd_ratios(SelfSupervisedJudge((1, 8, 8)).eval(), x_tr, y_tr, x_ho)
    summary = {k: f"{blind[k]:.2f} / {labelled[k]:.2f} / {untrained[k]:.2f}" for k in SETS}
    # A 3x3 box blur of an 8x8 digit flattens every stroke: both judges find it further from real
    # digits than perfect digits of half the classes.
    assert _ranking(blind) == ["real", "noised", "half missing", "blurred"], summary
    assert _ranking(labelled) == _ranking(blind), summary
    assert blind["real"] < 1.5 and blind["noised"] > 1.5 * blind["real"], summary
    # Training is what makes missing classes visible: a random network's features barely see them.
    assert blind["half missing"] > 1.5 * untrained["half missing"], summary


def test_self_supervised_training_is_seeded(digits, one_thread):
    x_tr = digits[0][:64]
    a, b = (train_self_supervised(x_tr, epochs=1, lr=1e-3, seed=3, batch_size=32) for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    feats, labels = predict_features(a, x_tr[:5])
    assert feats.shape == (5, 64) and labels.tolist() == [0] * 5  # one data class, whatever the rotation head says
    assert a.head.out_features == ROTATIONS and a.num_classes == 1


def _unlabelled_folder(root: Path, n: int) -> Path:
    x, _ = load_digits()
    root.mkdir()
    for i in range(n):  # no class subfolders: every image lands in one class
        Image.fromarray(((x[i, 0].numpy() + 1) * 127.5).round().astype(np.uint8), "L").save(root / f"{i:03d}.png")
    return root


def test_classifier_stage_trains_a_self_supervised_judge_for_one_class(tmp_path, one_thread, capsys):
    src = _unlabelled_folder(tmp_path / "scans", 60)
    ws = tmp_path / "ws"
    params = Params(data={"name": "scans", "source": str(src)}, classifier={"epochs": 2})
    stages.prepare(params, ws)
    info = stages.train_classifier(params, ws)
    line = capsys.readouterr().out.splitlines()[-1]
    assert "rotation accuracy" in line and "holdout accuracy" not in line
    on_disk = json.loads((ws / load.CLASSIFIER / "classifier.json").read_text())
    assert on_disk == info
    assert info["judge"] == "self-supervised" and info["labelled"] is False and info["num_classes"] == 1
    assert "holdout_accuracy" not in info and 0.0 <= info["holdout_rotation_accuracy"] <= 1.0
    assert info["eval"] == {"num_samples": params.eval.num_samples, "seed": params.eval.seed}
    other = Params(data={"name": "scans", "source": str(src)}, classifier={"epochs": 2}, eval={"seed": 7})
    assert stages.train_classifier(other, ws)["evaluator_version"] != info["evaluator_version"]  # protocol names it
    info = stages.train_classifier(params, ws)
    model, loaded = load.load_classifier(ws)
    assert isinstance(model, SelfSupervisedJudge) and loaded == info
    x_ho, _ = load.load_split(ws, "holdout")
    feats, labels = predict_features(model, x_ho)
    assert feats.shape == (len(x_ho), 64) and np.all(labels == 0) and np.isfinite(feats).all()


def test_classifier_stage_keeps_the_classifier_for_labelled_images(tmp_path, one_thread):
    x, y = load_digits()
    src = tmp_path / "two"
    for i in range(60):  # class subfolders "0" and "1"
        (src / str(int(y[i]) % 2)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(((x[i, 0].numpy() + 1) * 127.5).round().astype(np.uint8), "L").save(
            src / str(int(y[i]) % 2) / f"{i:03d}.png")
    ws = tmp_path / "ws"
    params = Params(data={"name": "two", "source": str(src)}, classifier={"epochs": 1})
    stages.prepare(params, ws)
    info = stages.train_classifier(params, ws)
    assert info["judge"] == "classifier" and info["labelled"] is True and info["num_classes"] == 2
    model, _ = load.load_classifier(ws)
    assert type(model) is Classifier and model.head.out_features == 2
