"""The DVC stages' commands (`ganflow stage prepare|classifier`): the run's params (params.run.yaml) in,
files under data/ out.

DVC runs these; they are also plain functions so tests can call them directly."""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from flows.data.importer import check_zip
from flows.data.load import CLASSIFIER, CLASSIFIER_INFO, CLASSIFIER_WEIGHTS, MANIFEST, PROCESSED, load_manifest, \
    load_split, md5, split_file
from flows.errors import UserError
from flows.params import Params
from gan_core import classifier as clf
from gan_core import data as gdata
from gan_core.metrics import class_histogram
from gan_core.sizes import NATIVE_SIZES, native_size
from gan_core.toy_data import sample_toy, toy_modes

SHOW_SKIPPED = 5  # skipped files listed by `prepare`; the manifest has every one


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
    if src.is_file() and zipfile.is_zipfile(src):
        check_zip(src)  # a zip put in data/raw by hand has the import's budget too
    # A side the nets do not build is prepared at the nearest one they do: the manifest's shape, which
    # everything downstream reads, then has that size. Said here, as the stage's output reaches the user.
    size = native_size(d.image_size)
    if size != d.image_size:
        print(f"data.image_size {d.image_size} is not one the models build ({', '.join(map(str, NATIVE_SIZES))}): "
              f"images are resized to {size}x{size} (centre crop)")
    try:
        return gdata.load_images(src, size, d.channels)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def prepare(params: Params, workspace: Path) -> dict:
    x, y, class_names, skipped = _load_source(params, workspace)
    d = params.data
    val_fraction = float(getattr(d, "val_fraction", 0.1))  # params may predate data.val_fraction
    splits = gdata.train_val_holdout(x, y, d.holdout_fraction, val_fraction, d.seed)
    (x_tr, y_tr), (x_va, y_va), (x_ho, y_ho) = splits["train"], splits["val"], splits["holdout"]
    if len(x_tr) + len(x_va) < 2 or len(x_ho) < 1:
        raise UserError(f"{len(x)} usable images are too few to split into train and holdout")
    if len(x_tr) < 2 or len(x_va) < 1:
        raise UserError(f"{len(x)} usable images are too few to split into train, validation and holdout "
                        "(at least 4 are needed)")
    out = workspace / PROCESSED
    out.mkdir(parents=True, exist_ok=True)
    for name, (xs, ys) in splits.items():
        torch.save({"x": xs.contiguous(), "y": ys.contiguous()}, workspace / split_file(name))
    k = len(class_names)
    manifest = {
        "name": d.name,
        "source": d.source or d.name,
        "kind": "points" if d.is_points else "images",
        "shape": list(x.shape[1:]),
        # train: fit; val: selection (probes, kept checkpoints, Tune); holdout: the report and the gate.
        "counts": {name: len(xs) for name, (xs, _) in splits.items()},
        "split": {"holdout_fraction": d.holdout_fraction, "val_fraction": val_fraction, "seed": d.seed},
        "classes": class_names,
        "class_histogram": {name: np.round(class_histogram(ys.numpy(), k), 4).tolist()
                            for name, (_, ys) in splits.items()},
        "md5": {split_file(name).name: md5(workspace / split_file(name)) for name in splits},
        "skipped": [{"file": f, "reason": r} for f, r in skipped],
    }
    if d.is_points:
        means, std = toy_modes(d.builtin)
        manifest["modes"] = {"means": means.tolist(), "std": std}
    (workspace / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"prepared {d.name}: {len(x_tr)} train + {len(x_va)} validation + {len(x_ho)} holdout of shape "
          f"{tuple(x.shape[1:])}, {k} classes, {len(skipped)} files skipped")
    for f, r in skipped[:SHOW_SKIPPED]:  # all of them are in manifest.json (logged to MLflow)
        print(f"  skipped {f}: {r}")
    if len(skipped) > SHOW_SKIPPED:
        print(f"  ... and {len(skipped) - SHOW_SKIPPED} more (see {MANIFEST})")
    return manifest


def train_classifier(params: Params, workspace: Path) -> dict:
    """The dataset's own feature extractor for Fréchet distance (no Inception download).

    2-D point sets need none: they are scored against their known modes."""
    manifest = load_manifest(workspace)
    out = workspace / CLASSIFIER
    out.mkdir(parents=True, exist_ok=True)
    # The final evaluation's protocol is frozen with the judge: every version it scores is drawn alike,
    # and a changed protocol is another evaluator (the gate then re-scores both sides).
    protocol = {"num_samples": params.eval.num_samples, "seed": params.eval.seed}
    suffix = f"n{protocol['num_samples']}-s{protocol['seed']}"
    if manifest["kind"] == "points":
        info = {"kind": "points", "eval": protocol, "evaluator_version": f"modes-{manifest['name']}-v1-{suffix}"}
        (workspace / CLASSIFIER_INFO).write_text(json.dumps(info, indent=2) + "\n")
        return info
    x_tr, y_tr = load_split(workspace, "train")
    x_ho, y_ho = load_split(workspace, "holdout")
    c = params.classifier
    num_classes = len(manifest["classes"])
    if num_classes >= 2:
        model: clf.Classifier = clf.train_classifier(x_tr, y_tr, num_classes, epochs=c.epochs, lr=c.lr,
                                                     seed=c.seed, feature_dim=c.feature_dim)
        judged = {"judge": "classifier", "labelled": True,
                  "holdout_accuracy": round(clf.accuracy(model, x_ho, y_ho), 4)}
        line = f"classifier: holdout accuracy {judged['holdout_accuracy']:.3f} over {num_classes} classes"
    else:
        # One class (a folder without class subfolders): cross-entropy would have nothing to learn.
        model = clf.train_self_supervised(x_tr, epochs=c.epochs, lr=c.lr, seed=c.seed, feature_dim=c.feature_dim)
        judged = {"judge": "self-supervised", "objective": "rotation+contrastive", "labelled": False,
                  "class_coverage": "not measured: unlabelled images, one class (trivially 1/1)",
                  "holdout_rotation_accuracy": round(clf.rotation_accuracy(model, x_ho), 4)}
        line = (f"judge: self-supervised features (rotation prediction + contrastive; the images carry no "
                f"class labels), holdout rotation accuracy {judged['holdout_rotation_accuracy']:.3f} "
                f"(chance {1 / clf.ROTATIONS:.2f})")
    torch.save(model.state_dict(), workspace / CLASSIFIER_WEIGHTS)
    info = {
        "kind": "images",
        **judged,
        "in_shape": manifest["shape"],
        "num_classes": num_classes,
        "feature_dim": c.feature_dim,
        "eval": protocol,
        # Scores are comparable only when made by the same evaluator: its weights' hash (and the
        # protocol) name it.
        "evaluator_version": hashlib.md5(f"{md5(workspace / CLASSIFIER_WEIGHTS)}|{suffix}".encode()).hexdigest()[:12],
    }
    (workspace / CLASSIFIER_INFO).write_text(json.dumps(info, indent=2) + "\n")
    print(f"{line} (evaluator {info['evaluator_version']})")
    return info


