"""Ray Tune over params.yaml's `tune.space`: one distributed TorchTrainer per trial.

Ray Train V2 cannot be a Tune trainable itself (`Tuner(TorchTrainer)` fails), so each trial is a
small driver function that builds its own TorchTrainer and forwards the workers' reports to Tune
with TuneReportCallback. Every trial is an MLflow child run of one parent run; ASHA stops weak
trials early on the per-epoch probe of the primary metric (`score`, lower is better)."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flows import params as params_mod
from flows import ray_runtime, registry
from flows.env import RunPaths
from flows.errors import TrainingFailed, UserError
from flows.params import Params
from flows.train import TrainOutcome, fit, run_identity
from flows.train_worker import STATE_FILE


@dataclass
class TuneOutcome:
    best: TrainOutcome
    parent_run_id: str
    trials: list[dict]  # one row per trial: config, score, status, mlflow run


def _search_space(params: Params) -> dict[str, Any]:
    from ray import tune

    kinds = {"choice": tune.choice, "grid": tune.grid_search,
             "uniform": lambda b: tune.uniform(*b), "loguniform": lambda b: tune.loguniform(*b)}
    return {key: kinds[kind](values) for key, spec in params.tune.space.items() for kind, values in spec.items()}


def trial_params(base_raw: dict, config: dict[str, Any]) -> Params:
    raw = json.loads(json.dumps(base_raw))
    for key, value in config.items():
        params_mod.apply(raw, key, value)
    return params_mod.validate(raw, f"tune trial {config}")


def _run_trial(config: dict[str, Any], base_raw: dict, paths: RunPaths, data_version: str, parent: str) -> None:
    """One Tune trial: params with the sampled values, an MLflow child run, a TorchTrainer."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    p = trial_params(base_raw, config)
    # Tune needs a score every epoch and a checkpoint beside it, to pick the best trial's weights.
    p = p.model_copy(update={"train": p.train.model_copy(update={"checkpoint_every": max(1, p.eval.every)})})
    identity = run_identity(p, data_version, paths)
    identity.name += f"-{tune.get_context().get_trial_id()}"
    identity.trial = True
    registry.start_run(p, paths, identity, data_version, parent_run_id=parent,
                       extra_tags={"ganflow.trial_config": json.dumps(config),
                                   "ganflow.trial_id": tune.get_context().get_trial_id()})
    try:
        fit(p, paths, identity, callbacks=[TuneReportCallback()])
    except TrainingFailed as exc:
        registry.fail_run(identity.mlflow_run_id, str(exc))
        raise
    registry.finish_run(identity.mlflow_run_id)


def _settle_trial(r, parent: str, epochs: int) -> dict:
    """One row of the search summary; also ends the trial's MLflow run, which a trial stopped by
    ASHA (its actor killed mid-fit) or a crashed one could not end itself."""
    last = r.metrics or {}
    scores = r.metrics_dataframe["score"] if r.metrics_dataframe is not None and "score" in r.metrics_dataframe else []
    finite = [float(x) for x in scores if math.isfinite(x)]
    iters = int(last.get("training_iteration", 0))
    if r.error:
        status, reason = "error", str(r.error).strip().splitlines()[-1][:300]
    elif last.get("nonfinite") or not math.isfinite(last.get("score", math.nan)):
        status, reason = "error", f"diverged: NaN/Inf at epoch {iters}"
    else:
        status, reason = "ok", None if iters >= epochs else f"stopped early by the scheduler at epoch {iters}"
    run_id = registry.find_trial_run(parent, r.metrics.get("trial_id") if r.metrics else None)
    if run_id:
        if status == "error":
            registry.fail_run(run_id, reason)
        else:
            if reason:
                registry.MlflowClient().set_tag(run_id, "ganflow.stopped", reason)
            registry.finish_run(run_id)
    return {"config": r.config, "score": min(finite) if finite else math.nan, "epochs": iters,
            "status": status, "reason": reason, "mlflow_run_id": run_id}


def run_search(params: Params, paths: RunPaths, data_version: str) -> TuneOutcome:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if not params.tune.space:
        raise UserError("tune.space in params.yaml is empty: declare what to search (see README)")
    base_raw = params_mod.read_raw(paths.workspace / params_mod.PARAMS_FILE)
    ray_runtime.init(paths)
    cpus = ray.cluster_resources().get("CPU", 1)
    per_trial = params.train.num_workers * params.train.cpus_per_worker
    concurrent = params.tune.max_concurrent or max(1, int(cpus // per_trial))
    s = params.tune
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=params.train.epochs,
                               grace_period=s.grace_period, reduction_factor=s.reduction_factor)
                 if s.scheduler == "asha" else FIFOScheduler())
    parent = registry.start_parent_run(params, paths, data_version, s.model_dump(mode="json"))
    trainable = tune.with_parameters(_run_trial, base_raw=base_raw, paths=paths, data_version=data_version,
                                     parent=parent)
    # The trial's driver only waits on its TorchTrainer, whose workers hold the CPUs.
    trainable = tune.with_resources(trainable, {"CPU": 0, "memory": 1})  # Ray refuses an empty request
    print(f"Tune: {s.num_samples} trials over {list(s.space)}, {s.scheduler}, {concurrent} at a time")
    started = time.perf_counter()
    tuner = tune.Tuner(
        trainable,
        param_space=_search_space(params),
        tune_config=tune.TuneConfig(metric="score", mode="min", scheduler=scheduler,
                                    num_samples=s.num_samples, max_concurrent_trials=concurrent),
        run_config=tune.RunConfig(name=f"tune-{parent[:8]}", storage_path=str(paths.ray_results / "tune"),
                                  verbose=1),
    )
    grid = tuner.fit()
    trials = [_settle_trial(r, parent, params.train.epochs) for r in grid]
    ok = [r for r, t in zip(grid, trials) if t["status"] == "ok"]
    if not ok:
        registry.fail_run(parent, "every trial failed")
        raise TrainingFailed(f"every one of {len(trials)} tune trials failed: {[t['reason'] for t in trials]}")
    best = min(ok, key=lambda r: r.metrics["score"])
    state_dir = Path(best.metrics["checkpoint_path"])
    state = torch.load(state_dir / STATE_FILE, weights_only=True, map_location="cpu")
    best_params = trial_params(base_raw, best.config)
    identity = run_identity(best_params, data_version, paths)
    identity.name = state_dir.parent.name
    identity.mlflow_run_id = registry.find_child_run(parent, identity.name)
    registry.log_trials(parent, trials, best.config, time.perf_counter() - started)
    print(f"Tune: best trial {identity.name} score {best.metrics['score']:.4f} with {best.config}")
    return TuneOutcome(TrainOutcome(identity, state, state["history"], 0, time.perf_counter() - started),
                       parent, trials)
