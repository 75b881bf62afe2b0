"""Where every task reads the prepared data: the splits, the manifest and the judge that the DVC stages
(flows.data.stages) wrote under data/."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from flows.errors import UserError
from gan_core import classifier as clf

# The prepared data's file names, relative to the workspace: every module asks these.
PROCESSED = Path("data/processed")
CLASSIFIER = Path("data/classifier")
MANIFEST = PROCESSED / "manifest.json"            # the prepare stage's record: kind, shape, counts, classes, md5s
CLASSIFIER_INFO = CLASSIFIER / "classifier.json"  # the judge's kind, frozen protocol and evaluator version
CLASSIFIER_WEIGHTS = CLASSIFIER / "classifier.pt"


def split_file(split: str) -> Path:
    """A prepared split's tensors (train, val, holdout), relative to the workspace."""
    return PROCESSED / f"{split}.pt"


def md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_split(workspace: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    path = workspace / split_file(split)
    if not path.exists():
        if split == "val" and (workspace / split_file("holdout")).exists():
            # Prepared before the validation split existed; DVC sees no changed dependency to rerun.
            raise UserError(f"{path} is missing: the data was prepared before the validation split existed; "
                            "run `dvc repro --force prepare` once (or add `val_fraction: 0.1` under `data:` "
                            "in params.yaml)")
        raise UserError(f"{path} is missing: run the prepare stage first (`ganflow prepare` or `dvc repro`)")
    blob = torch.load(path, weights_only=True)
    return blob["x"], blob["y"]


def load_manifest(workspace: Path) -> dict:
    return json.loads((workspace / MANIFEST).read_text())


def load_classifier(workspace: Path) -> tuple[clf.Classifier, dict]:
    """The judge the classifier stage trained, and its classifier.json. A file without "judge"
    predates the self-supervised judge: a classifier."""
    info_path = workspace / CLASSIFIER_INFO
    if not info_path.exists():
        raise UserError(f"{info_path} is missing: run the classifier stage first (`dvc repro`)")
    info = json.loads(info_path.read_text())
    in_shape = tuple(info["in_shape"])
    model = (clf.SelfSupervisedJudge(in_shape, info["feature_dim"]) if info.get("judge") == "self-supervised"
             else clf.Classifier(in_shape, info["num_classes"], info["feature_dim"]))
    model.load_state_dict(torch.load(workspace / CLASSIFIER_WEIGHTS, weights_only=True))
    return model.eval(), info
