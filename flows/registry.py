"""MLflow: one run per training, live metrics, pictures, and the generator in the model registry.

The generator is logged deliberately as a pyfunc "model from code" over a plain state dict
(loadable with torch.load(weights_only=True)): no pickled classes, no torch.export GraphModule."""
from __future__ import annotations

import subprocess
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from flows import env
from flows.env import RunPaths
from flows.errors import UserError
from flows.params import Params
from flows.train import RunIdentity
from gan_core.checkpoint import generator_bundle, generator_from_state

PYFUNC_CODE = Path(__file__).with_name("generator_pyfunc.py")
BUNDLE = "generator.pt"


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def git_sha(workspace: Path) -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workspace, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "none"


def experiment_id(params: Params, paths: RunPaths) -> str:
    client = MlflowClient()
    try:
        exp = client.get_experiment_by_name(params.experiment)
    except Exception as exc:  # an unreachable server: say which one
        raise UserError(f"cannot reach MLflow at {mlflow.get_tracking_uri()}: {exc}") from None
    if exp is not None:
        return exp.experiment_id
    # With the embedded SQLite store, keep artifacts in the run dir (default would be ./mlruns).
    location = paths.mlflow_artifacts.as_uri() if env.local_mlflow() else None
    return client.create_experiment(params.experiment, artifact_location=location)


def start_run(params: Params, paths: RunPaths, identity: RunIdentity, data_version: str) -> str:
    """The MLflow run of a training run; a resumed training continues its earlier MLflow run."""
    client = MlflowClient()
    if identity.mlflow_run_id:
        try:
            client.get_run(identity.mlflow_run_id)
            client.set_terminated(identity.mlflow_run_id, "RUNNING")
            return identity.mlflow_run_id
        except mlflow.exceptions.MlflowException:
            pass  # the store was reset: start a fresh run
    tags = {
        "ganflow.data_version": data_version,
        "ganflow.config_hash": identity.training_hash,
        "ganflow.git_sha": git_sha(paths.workspace),
        "ganflow.ray_run": identity.name,
        "ganflow.dataset": params.data.name,
        "ganflow.loss": params.loss.name,
    }
    run = client.create_run(experiment_id(params, paths), run_name=identity.name, tags=tags)
    run_id = run.info.run_id
    flat = _flatten(params.model_dump(mode="json"))
    client.log_batch(run_id, params=[mlflow.entities.Param(k, v) for k, v in flat.items()])
    identity.mlflow_run_id = run_id
    return run_id


def log_evaluation(run_id: str, metrics: dict[str, float], images: dict[str, Path]) -> None:
    client = MlflowClient()
    for k, v in metrics.items():
        client.log_metric(run_id, f"eval/{k}", float(v))
    for name, path in images.items():
        client.log_artifact(run_id, str(path), artifact_path="images")


def register(run_id: str, params: Params, state: dict, tags: dict[str, str]) -> str:
    """Log the generator to the run and register it as a new version; returns the version."""
    bundle = generator_bundle(state)
    G = generator_from_state(bundle)
    example = G.sample_z(2, generator=torch.Generator().manual_seed(0)).numpy().astype(np.float32)
    if G.num_classes:  # conditional: the last input column is the class id
        example = np.concatenate([example, np.array([[0.0], [1.0]], dtype=np.float32)], axis=1)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        # MLflow asks for predict() type hints; ours takes/returns ndarrays, typed by the signature.
        warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
        path = Path(tmp) / BUNDLE
        torch.save(bundle, path)
        info = mlflow.pyfunc.log_model(
            name="generator",
            python_model=str(PYFUNC_CODE),
            artifacts={"generator": str(path)},
            input_example=example,
            # Explicit: inferring requirements re-imports the model in a subprocess (slow).
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy", "ganflow"],
            registered_model_name=params.model_name,
        )
    version = str(info.registered_model_version)
    client = MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(params.model_name, version, k, v)
    return version


def finish_run(run_id: str, status: str = "FINISHED") -> None:
    MlflowClient().set_terminated(run_id, status)


def load_generator(model_uri: str) -> nn.Module:
    """A registered generator as a torch module, from its weights alone (no code from the artifact)."""
    try:
        local = mlflow.artifacts.download_artifacts(f"{model_uri.rstrip('/')}/artifacts/{BUNDLE}")
    except mlflow.exceptions.MlflowException as exc:
        raise UserError(f"cannot load model {model_uri!r}: {exc.message}") from None
    return generator_from_state(torch.load(local, weights_only=True, map_location="cpu"))


def version_summary(model_name: str, version: str) -> dict:
    mv = MlflowClient().get_model_version(model_name, version)
    return {"name": model_name, "version": version, "run_id": mv.run_id, "tags": dict(mv.tags)}

