"""MLflow runs: one run per training (a tune trial is a child of its search's run), its params, live
metrics, pictures, verdict and failure reason. Registered versions are in flows.registry.versions."""
from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from flows import env
from flows.conventions import EVAL_PREFIX
from flows.env import RunPaths
from flows.errors import UserError
from flows.servers import redact, redact_text
from flows.params import Params, flatten
from flows.run.identity import RunIdentity


def _flatten(d: dict) -> dict[str, str]:
    return {k: str(v) for k, v in flatten(d).items()}  # MLflow params are strings


def git_sha(workspace: Path) -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workspace, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "none"


def experiment_id(params: Params, paths: RunPaths) -> str:
    client = MlflowClient()
    try:
        exp = client.get_experiment_by_name(params.experiment)
    except Exception as exc:  # an unreachable server: say which one
        uri = redact(mlflow.get_tracking_uri())
        raise UserError(f"cannot reach MLflow at {uri}: {redact_text(str(exc))}") from None
    if exp is not None:
        return exp.experiment_id
    # With the embedded SQLite store, keep artifacts in the run dir (default would be ./mlruns).
    location = paths.mlflow_artifacts.as_uri() if env.local_mlflow() else None
    return client.create_experiment(params.experiment, artifact_location=location)


def start_run(params: Params, paths: RunPaths, identity: RunIdentity, data_version: str,
              parent_run_id: str | None = None, extra_tags: dict[str, str] | None = None) -> str:
    """The MLflow run of a training run; a resumed training continues its earlier MLflow run.
    A tune trial is a child of the search's parent run."""
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
        "ganflow.recipe": params.recipe,
        **({"mlflow.parentRunId": parent_run_id} if parent_run_id else {}),
        **(extra_tags or {}),
    }
    run = client.create_run(experiment_id(params, paths), run_name=identity.name, tags=tags)
    run_id = run.info.run_id
    flat = _flatten(params.model_dump(mode="json"))
    client.log_batch(run_id, params=[mlflow.entities.Param(k, v) for k, v in flat.items()])
    identity.mlflow_run_id = run_id
    return run_id


def overrides_tags(overrides: list[str]) -> dict[str, str]:
    """A one-off run's --set values as given (its logged params hold the resolved values); none: no tag."""
    return {"ganflow.overrides": json.dumps(overrides)[:5000]} if overrides else {}


def log_evaluation(run_id: str, metrics: dict[str, float], images: dict[str, Path]) -> None:
    client = MlflowClient()
    for k, v in metrics.items():
        client.log_metric(run_id, f"{EVAL_PREFIX}{k}", float(v))
    for name, path in images.items():
        client.log_artifact(run_id, str(path), artifact_path="images")


def log_verdict(run_id: str, ok: bool, misses: list[str]) -> None:
    """Whether the run meets its recipe's bar, as tags a reader sees on the MLflow run page."""
    MlflowClient().set_tag(run_id, "ganflow.meets_bar", "yes" if ok else "no: " + "; ".join(misses))


def finish_run(run_id: str, status: str = "FINISHED") -> None:
    MlflowClient().set_terminated(run_id, status)


def record_trial_config(identity: RunIdentity, config: dict, epoch: int, donor: str | None) -> None:
    """A tune trial's current values on its MLflow run: tags for the latest, and each numeric value
    as an `hp/<key>` metric at the epoch it took effect (PBT's schedule, drawn by the MLflow UI)."""
    client = MlflowClient()
    run_id = identity.mlflow_run_id
    client.set_tag(run_id, "ganflow.trial_config", json.dumps(config))
    client.set_tag(run_id, "ganflow.ray_run", identity.name)  # the Ray Train run now holding its weights
    if donor:
        client.set_tag(run_id, f"ganflow.pbt_exploit_epoch_{epoch}",
                       f"continued trial {donor}'s weights with {json.dumps(config)}")
    now = int(time.time() * 1000)
    values = [mlflow.entities.Metric(f"hp/{k}", float(v), now, epoch) for k, v in config.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if values:
        client.log_batch(run_id, metrics=values)


def exploit_epochs(run_id: str) -> list[int]:
    """The epochs at which PBT gave this trial another trial's weights (record_trial_config's tags)."""
    tags = MlflowClient().get_run(run_id).data.tags
    prefix = "ganflow.pbt_exploit_epoch_"
    return sorted(int(k[len(prefix):]) for k in tags if k.startswith(prefix))


def fail_run(run_id: str, reason: str) -> None:
    """FAILED, with the reason where people look (a tag shown in the runs table), its secrets masked:
    MLflow's own errors name the request URL with its credentials."""
    client = MlflowClient()
    client.set_tag(run_id, "ganflow.failure", redact_text(reason)[:5000])  # redacted whole: a cut URL hides less
    client.set_terminated(run_id, "FAILED")


def start_parent_run(params: Params, paths: RunPaths, data_version: str, search: dict,
                     extra_tags: dict[str, str] | None = None) -> str:
    """The parent run of a hyper-parameter search; trials are its children."""
    client = MlflowClient()
    run = client.create_run(experiment_id(params, paths), run_name=time.strftime("tune-%Y%m%d-%H%M%S"),
                            tags={"ganflow.kind": "search", "ganflow.data_version": data_version,
                                  "ganflow.git_sha": git_sha(paths.workspace), **(extra_tags or {})})
    flat = _flatten({"tune": search})
    client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, v[:6000]) for k, v in flat.items()])
    return run.info.run_id


def find_child_run(parent_run_id: str, ray_run: str) -> str:
    client = MlflowClient()
    exp = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                     f"tags.`ganflow.ray_run` = '{ray_run}'")
    if not runs:
        raise RuntimeError(f"no MLflow child run of {parent_run_id} for trial {ray_run}")
    return runs[0].info.run_id


def find_trial_run(parent_run_id: str, trial_id: str | None) -> str | None:
    if not trial_id:
        return None
    client = MlflowClient()
    exp = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                     f"tags.`ganflow.trial_id` = '{trial_id}'")
    return runs[0].info.run_id if runs else None


def log_trials(parent_run_id: str, trials: list[dict], best_config: dict, wall_s: float) -> None:
    """The search's summary on its parent run: every trial (failed ones with their reason)."""
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trials.json"
        path.write_text(redact_text(json.dumps(trials, indent=2, default=str)))  # failed trials' reasons
        client.log_artifact(parent_run_id, str(path))
    client.log_metric(parent_run_id, "trials_failed", sum(t["status"] != "ok" for t in trials))
    client.log_metric(parent_run_id, "search_wall_s", wall_s)
    if any("pbt_exploit_epochs" in t for t in trials):
        client.log_metric(parent_run_id, "pbt_exploits", sum(len(t["pbt_exploit_epochs"]) for t in trials))
    client.set_tag(parent_run_id, "ganflow.best_config", json.dumps(best_config))
    client.set_terminated(parent_run_id, "FINISHED")


