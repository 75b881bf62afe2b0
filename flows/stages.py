"""The DVC stages' commands (`ganflow stage prepare|classifier`): params.yaml in, files under data/ out.

DVC runs these; they are also plain functions so tests can call them directly."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from flows.errors import UserError
from flows.params import Params
from gan_core import classifier as clf
from gan_core import data as gdata
from gan_core.metrics import class_histogram
from gan_core.toy_data import sample_toy, toy_modes

PROCESSED = Path("data/processed")
CLASSIFIER = Path("data/classifier")
SHOW_SKIPPED = 5  # skipped files listed by `prepare`; the manifest has every one


def md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_source(params: Params, workspace: Path):
    d = params.data
    if d.is_points:
        x, y = sample_toy(d.builtin, d.points, d.seed)
        return x, y, [f"mode{i}" for i in range(int(y.max()) + 1)], []
    if d.builtin == "digits":
        if (d.image_size, d.channels) != (8, 1):
            raise UserError("digits are 8x8 grayscale: set data.image_size: 8 and data.channels: 1")
        x, y = gdata.load_digits()
        return x, y, [str(i) for i in range(10)], []
    src = Path(d.source)
    src = src if src.is_absolute() else workspace / src
    if not src.exists():
        raise UserError(f"data.source {d.source!r} does not exist (a folder or .zip of PNG/JPEG images)")
    try:
        return gdata.load_images(src, d.image_size, d.channels)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def prepare(params: Params, workspace: Path) -> dict:
    x, y, class_names, skipped = _load_source(params, workspace)
    d = params.data
    x_tr, y_tr, x_ho, y_ho = gdata.split(x, y, d.holdout_fraction, d.seed)
    if len(x_tr) < 2 or len(x_ho) < 1:
        raise UserError(f"{len(x)} usable images are too few to split into train and holdout")
    out = workspace / PROCESSED
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"x": x_tr.contiguous(), "y": y_tr.contiguous()}, out / "train.pt")
    torch.save({"x": x_ho.contiguous(), "y": y_ho.contiguous()}, out / "holdout.pt")
    k = len(class_names)
    manifest = {
        "name": d.name,
        "source": d.source or d.name,
        "kind": "points" if d.is_points else "images",
        "shape": list(x.shape[1:]),
        "counts": {"train": len(x_tr), "holdout": len(x_ho)},
        "classes": class_names,
        "class_histogram": {
            "train": np.round(class_histogram(y_tr.numpy(), k), 4).tolist(),
            "holdout": np.round(class_histogram(y_ho.numpy(), k), 4).tolist(),
        },
        "md5": {f: md5(out / f) for f in ("train.pt", "holdout.pt")},
        "skipped": [{"file": f, "reason": r} for f, r in skipped],
    }
    if d.is_points:
        means, std = toy_modes(d.builtin)
        manifest["modes"] = {"means": means.tolist(), "std": std}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"prepared {d.name}: {len(x_tr)} train + {len(x_ho)} holdout of shape {tuple(x.shape[1:])}, "
          f"{k} classes, {len(skipped)} files skipped")
    for f, r in skipped[:SHOW_SKIPPED]:  # all of them are in manifest.json (logged to MLflow)
        print(f"  skipped {f}: {r}")
    if len(skipped) > SHOW_SKIPPED:
        print(f"  ... and {len(skipped) - SHOW_SKIPPED} more (see {PROCESSED / 'manifest.json'})")
    return manifest


def load_split(workspace: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    path = workspace / PROCESSED / f"{split}.pt"
    if not path.exists():
        raise UserError(f"{path} is missing: run the prepare stage first (`ganflow prepare` or `dvc repro`)")
    blob = torch.load(path, weights_only=True)
    return blob["x"], blob["y"]


def load_manifest(workspace: Path) -> dict:
    return json.loads((workspace / PROCESSED / "manifest.json").read_text())


def train_classifier(params: Params, workspace: Path) -> dict:
    """The dataset's own feature extractor for Fréchet distance (no Inception download).

    2-D point sets need none: they are scored against their known modes."""
    manifest = load_manifest(workspace)
    out = workspace / CLASSIFIER
    out.mkdir(parents=True, exist_ok=True)
    if manifest["kind"] == "points":
        info = {"kind": "points", "evaluator_version": f"modes-{manifest['name']}-v1"}
        (out / "classifier.json").write_text(json.dumps(info, indent=2) + "\n")
        return info
    x_tr, y_tr = load_split(workspace, "train")
    x_ho, y_ho = load_split(workspace, "holdout")
    c = params.classifier
    num_classes = len(manifest["classes"])
    model = clf.train_classifier(x_tr, y_tr, num_classes, epochs=c.epochs, lr=c.lr, seed=c.seed,
                                 feature_dim=c.feature_dim)
    torch.save(model.state_dict(), out / "classifier.pt")
    info = {
        "kind": "images",
        "in_shape": manifest["shape"],
        "num_classes": num_classes,
        "feature_dim": c.feature_dim,
        "holdout_accuracy": round(clf.accuracy(model, x_ho, y_ho), 4),
        # Scores are comparable only when made by the same evaluator: its weights' hash names it.
        "evaluator_version": md5(out / "classifier.pt")[:12],
    }
    (out / "classifier.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"classifier: holdout accuracy {info['holdout_accuracy']:.3f} (evaluator {info['evaluator_version']})")
    return info


def load_classifier(workspace: Path) -> tuple[clf.Classifier, dict]:
    info_path = workspace / CLASSIFIER / "classifier.json"
    if not info_path.exists():
        raise UserError(f"{info_path} is missing: run the classifier stage first (`dvc repro`)")
    info = json.loads(info_path.read_text())
    model = clf.Classifier(tuple(info["in_shape"]), info["num_classes"], info["feature_dim"])
    model.load_state_dict(torch.load(workspace / CLASSIFIER / "classifier.pt", weights_only=True))
    return model.eval(), info
