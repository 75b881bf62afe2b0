"""Registered versions: the generator logged deliberately as a pyfunc "model from code" over a plain state
dict (loadable with torch.load(weights_only=True)): no pickled classes, no torch.export GraphModule. Also
loading a version back, and finding the version a training run made."""
from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
import torch
from mlflow.tracking import MlflowClient
from torch import nn

import gan_core
from flows.errors import UserError
from flows.params import Params
from gan_core import integrity
from gan_core.checkpoint import generator_bundle, generator_from_state


PYFUNC_CODE = Path(__file__).with_name("pyfunc.py")
GAN_CORE = Path(gan_core.__file__).parent
# What the logged model imports (gan_core ships with it); mlflow itself brings pandas.
MODEL_REQUIREMENTS = ("torch", "numpy", "pydantic")
BUNDLE = "generator.pt"
TRAINING_STATE = "training_state.pt"  # G, D, both optimisers, EMA: what --init-from starts a run from
SCORE_PREFIX = "eval."  # a version's own holdout scores: eval.fd, eval.reverse_kl, ...
CODE_HASH_TAG = "code_hash"  # gan_core.integrity.digest of the logged model's code, at registration


PROMOTION_PREFIX = "promotion."


@dataclass(frozen=True)
class PromotionTags:
    """The gate's decision on a version, as its ``promotion.*`` tags (flows.registry.promote writes them,
    through this class only). Scores are the means over the decision's paired draws; `difference` is the
    mean paired difference (challenger - champion) relative to the champion's mean, `bound` its one-sided
    upper confidence bound. A version without a ``promotion.decision`` tag was never gated."""

    decision: str
    reason: str
    metric: str = "none"
    challenger_score: str = "none"
    champion_score: str = "none"
    champion_version: str = "none"
    reevaluated: str = "false"
    draws: str = "0"
    seeds: str = "[]"  # JSON list: the evaluation seeds drawn for this decision
    difference: str = "none"
    bound: str = "none"
    min_effect: str = "none"
    at: str = ""

    def as_mlflow(self) -> dict[str, str]:
        """Tag name -> value, `promotion.decision` last: it marks the version gated, so a crash while the
        tags are written leaves the version ungated (and the next run gates it again), never half-decided."""
        tags = {f"{PROMOTION_PREFIX}{k}": v for k, v in asdict(self).items() if k != "decision"}
        return {**tags, f"{PROMOTION_PREFIX}decision": self.decision}

    @classmethod
    def read(cls, tags: Mapping[str, str]) -> PromotionTags | None:
        if f"{PROMOTION_PREFIX}decision" not in tags:
            return None
        names = {f.name for f in fields(cls)}
        return cls(**{k[len(PROMOTION_PREFIX):]: v for k, v in tags.items()
                      if k.startswith(PROMOTION_PREFIX) and k[len(PROMOTION_PREFIX):] in names})


@dataclass(frozen=True)
class VersionTags:
    """The tags every registered version carries: written by the pipeline's register task and read by the
    gate and the unchanged-since check, only through this class. A version registered without one of
    them (by hand, or by an older ganflow) reads it as ""."""

    data_version: str = ""
    config_hash: str = ""
    git_sha: str = ""
    ray_run: str = ""
    evaluator_version: str = ""  # scores compare only on the same holdout with the same evaluator
    primary_metric: str = ""
    scores: dict[str, str] = field(default_factory=dict)  # metric -> the tag's text, nan/inf included
    promotion: PromotionTags | None = None  # the gate's decision; None: never gated

    @classmethod
    def of_run(cls, *, data_version: str, config_hash: str, git_sha: str, ray_run: str, evaluator_version: str,
               primary_metric: str, metrics: Mapping[str, float]) -> VersionTags:
        return cls(data_version, config_hash, git_sha, ray_run, evaluator_version, primary_metric,
                   {k: f"{v:.6g}" for k, v in metrics.items()})

    @classmethod
    def read(cls, tags: Mapping[str, str]) -> VersionTags:
        named = {k: tags.get(k, "") for k in ("data_version", "config_hash", "git_sha", "ray_run",
                                                "evaluator_version", "primary_metric")}
        scores = {k[len(SCORE_PREFIX):]: v for k, v in tags.items() if k.startswith(SCORE_PREFIX)}
        return cls(**named, scores=scores, promotion=PromotionTags.read(tags))

    def as_mlflow(self) -> dict[str, str]:
        tags = {k: getattr(self, k) for k in ("data_version", "config_hash", "git_sha", "ray_run",
                                              "evaluator_version", "primary_metric")}
        promotion = self.promotion.as_mlflow() if self.promotion is not None else {}
        return {**tags, **{f"{SCORE_PREFIX}{k}": v for k, v in self.scores.items()}, **promotion}

    def stored_score(self, metric: str | None) -> float | None:
        """The stored score as a finite float, else None (missing, unparsable, NaN or Inf)."""
        try:
            value = float(self.scores[metric])  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None

    def metrics(self) -> dict[str, float]:
        """Every stored score as a float (NaN/Inf kept): what the run reported when it was registered."""
        return {k: float(v) for k, v in self.scores.items()}


def register(run_id: str, params: Params, state: dict, tags: VersionTags,
             class_names: list[str] | None = None) -> str:
    """Log the generator to the run and register it as a new version; returns the version. A conditional
    generator's bundle keeps `class_names` (the dataset's, in class-id order)."""
    bundle = generator_bundle(state, class_names if state["model"].get("conditional") else None)
    G = generator_from_state(bundle)
    # The request form (gan_core.sampling's fields) is what the example shows a client; raw latents are
    # accepted too, so no signature is enforced (one would refuse one form or the other).
    example = pd.DataFrame([{"n": 2, "seed": 0, **({"class": G.class_names[0]} if G.num_classes else {})}])
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id):
        path = Path(tmp) / BUNDLE
        torch.save(bundle, path)
        torch.save(state, Path(tmp) / TRAINING_STATE)
        info = mlflow.pyfunc.log_model(
            name="generator",
            python_model=str(PYFUNC_CODE),
            artifacts={"generator": str(path), "training_state": str(Path(tmp) / TRAINING_STATE)},
            code_paths=[str(GAN_CORE)],  # the model's own code travels with it: nothing named ganflow to install
            input_example=example,
            signature=False,
            # Explicit: inferring requirements re-imports the model in a subprocess (slow).
            pip_requirements=[f"{name}=={metadata.version(name).split('+')[0]}" for name in MODEL_REQUIREMENTS],
        )
        code_hash = _record_code_hashes(info.model_id)
        # The version and its tags (scores, data version, config hash) in one create call: a crash
        # can leave an unregistered logged model, never a version without the tags the gate reads.
        mv = mlflow.register_model(info.model_uri, params.model_name,
                                   tags={**tags.as_mlflow(), CODE_HASH_TAG: code_hash})
    return str(mv.version)


def _record_code_hashes(model_id: str) -> str:
    """Hash the code files as MLflow logged them (read back from the artifact store, not our sources) into
    the logged model's artifacts/ (what load_context checks); returns their digest, the version's tag."""
    location = MlflowClient().get_logged_model(model_id).artifact_location
    with tempfile.TemporaryDirectory() as tmp:
        hashes = _logged_code_hashes(location, Path(tmp) / "model")
        manifest = Path(tmp) / integrity.MANIFEST
        manifest.write_text(json.dumps(hashes, indent=1, sort_keys=True))
        MlflowClient().log_model_artifact(model_id, str(manifest), "artifacts")
    return integrity.digest(hashes)


def _logged_code_hashes(model_root: str, into: Path) -> dict[str, str]:
    """integrity.file_hashes of a logged model's code, downloaded through MLflow (any artifact store)."""
    for part in (integrity.MODEL_FILE, integrity.CODE_DIR):
        mlflow.artifacts.download_artifacts(artifact_uri=f"{model_root}/{part}", dst_path=str(into))
    return integrity.file_hashes(into)


def check_code(model_name: str, version: str) -> str | None:
    """None when a version's logged code (pyfunc and gan_core copy) is the code it was registered with,
    else one line saying why it must not be promoted. A version registered before code hashes were
    recorded has no `code_hash` tag and is accepted: there is nothing to compare with."""
    recorded = MlflowClient().get_model_version(model_name, version).tags.get(CODE_HASH_TAG)
    if not recorded:
        return None
    root = f"models:/{model_name}/{version}"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            found = _logged_code_hashes(root, Path(tmp) / "model")
        except (mlflow.exceptions.MlflowException, OSError) as exc:
            return f"its logged code cannot be read ({getattr(exc, 'message', exc)}); it cannot be checked"
        if integrity.digest(found) == recorded:
            return None
        try:  # the manifest names the file, unless it was edited too
            listed = json.loads(Path(mlflow.artifacts.download_artifacts(
                artifact_uri=f"{root}/artifacts/{integrity.MANIFEST}", dst_path=tmp)).read_text())
        except (mlflow.exceptions.MlflowException, OSError, ValueError):
            listed = {}
    change = integrity.first_change(listed, found) if integrity.digest(listed) == recorded else None
    what = change or "its files no longer match the code hash recorded then"
    return f"its code changed after it was registered ({what}): register it again from its run"


def load_generator(model_uri: str) -> nn.Module:
    """A registered generator as a torch module, from its weights alone (no code from the artifact)."""
    return generator_from_state(_load_artifact(model_uri, BUNDLE))


def load_training_state(model_uri: str) -> dict:
    """The training state stored with a version (G, D, optimisers, EMA; its history and epoch), to start
    a new run from (`ganflow pipeline --init-from`)."""
    try:
        return _load_artifact(model_uri, TRAINING_STATE)
    except UserError:
        load_generator(model_uri)  # a bad URI or a missing version: that error
        raise UserError(f"{model_uri} was registered before versions kept their training state (D and the "
                        "optimisers), so it cannot start a run; use a newer version") from None


@dataclass(frozen=True)
class Seed:
    """A registered version a new run starts from (`--init-from`): its training state and where it came from."""

    uri: str
    label: str  # NAME/VERSION when the URI names a registered version (an alias resolved), else the URI
    data_version: str  # the data it was trained on ("" when unknown)
    state: dict


def seed_from(model_uri: str) -> Seed:
    state = load_training_state(model_uri)
    label, data_version = model_uri, ""
    if model_uri.startswith("models:/"):
        name, _, ref = model_uri[len("models:/"):].partition("@")
        client = MlflowClient()
        if ref:  # models:/NAME@ALIAS
            mv = client.get_model_version_by_alias(name, ref)
        else:  # models:/NAME/VERSION
            name, _, number = name.partition("/")
            mv = client.get_model_version(name, number)
        label, data_version = f"{mv.name}/{mv.version}", VersionTags.read(mv.tags).data_version
    return Seed(model_uri, label, data_version, state)


def _load_artifact(model_uri: str, name: str) -> dict:
    if ":" not in model_uri and not Path(model_uri).expanduser().exists():
        # MLflow would read it as a local folder and only say "No such artifact: 'generator.pt'".
        raise UserError(f"model {model_uri!r} is neither a model URI (models:/<name>/<version>, "
                        "models:/<name>@<alias>, runs:/<run_id>/generator) nor an existing model folder")
    try:
        local = mlflow.artifacts.download_artifacts(f"{model_uri.rstrip('/')}/artifacts/{name}")
    except (mlflow.exceptions.MlflowException, OSError) as exc:
        raise UserError(f"cannot load model {model_uri!r}: {getattr(exc, 'message', exc)}") from None
    return torch.load(local, weights_only=True, map_location="cpu")


def version_for_run(model_name: str, ray_run: str) -> tuple[str, dict[str, str]] | None:
    """The registered version made by this training run (same data version and config hash), if any."""
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{model_name}' and tags.ray_run = '{ray_run}'")
    except mlflow.exceptions.MlflowException:
        return None  # no such model yet
    if not versions:
        return None
    mv = max(versions, key=lambda v: int(v.version))
    return str(mv.version), dict(mv.tags)


def newest_ungated(model_name: str) -> str | None:
    """The newest version the gate never decided on (no ``promotion.decision`` tag): a run that crashed
    between registering it and the gate's decision. None when the newest has a decision, or no versions."""
    try:
        found = MlflowClient().search_model_versions(f"name = '{model_name}'")
    except mlflow.exceptions.MlflowException:
        return None  # no such model yet
    ungated = [v for v in found if PromotionTags.read(v.tags) is None]
    return str(max(ungated, key=lambda v: int(v.version)).version) if ungated else None

