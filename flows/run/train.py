"""Driver side of training: a Ray Train TorchTrainer per run (flows.run.worker is the loop each worker
runs). Which run this is, and whether it resumes, is decided in flows.run.identity."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from flows.conventions import SELECTION, STATE_FILE
from flows.data.load import load_manifest, load_split
from flows.errors import TrainingDiverged, TrainingFailed, UserError
from flows.env import RunPaths
from flows.evaluate import Evaluator
from flows.params import Params
from flows.run import ray_runtime
from flows.run.identity import RunIdentity, TrainOutcome, last_checkpoint_epoch, record_identity, resolve_model, settle
from flows.run.worker import WorkerJob, train_loop
from flows.servers import redact_text
from gan_core.config import ModelConfig
from gan_core.recipes import describe
from gan_core.training import FIT_AFTER, RunSpec, recorded_schedule, resolve_r1_every, resolve_speed


def fit(params: Params, paths: RunPaths, identity: RunIdentity, callbacks: list | None = None,
        init_state: dict | None = None, stop_epoch: int | None = None) -> TrainOutcome:
    """Train (or resume) the run `identity`. `init_state`: a training_state to start from when the run
    has no checkpoint of its own (a PBT trial taking over another trial's weights). `stop_epoch`: end
    after that many epochs, with a checkpoint, though the schedule still spans train.epochs (a PBT
    segment)."""
    ray_runtime.init(paths)
    use_gpu, workers = _check_resources(params)
    resumed = last_checkpoint_epoch(paths.ray_results / identity.name)
    if resumed is not None:
        print(f"Resuming run {identity.name} from its checkpoint after epoch {resumed} "
              f"(same hyper-parameters and data; pass --new-run to start over)")
    identity.status = "running"
    config = _worker_config(params, paths, identity, use_gpu, workers, init_state, stop_epoch)
    trainer = _trainer(params, paths, identity, config, use_gpu, workers, callbacks)
    started = time.perf_counter()
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray wraps worker errors; keep the reason, drop Ray's internals
        settle(identity, paths, "failed")  # resumable: its checkpoints stay
        raise TrainingFailed(f"training run {identity.name} failed: {redact_text(str(exc))}") from exc
    state = _outcome_state(result, identity, paths)
    return TrainOutcome(identity, state, state["history"], resumed or 0, time.perf_counter() - started)


def _check_resources(params: Params) -> tuple[bool, int]:
    """(whether the workers get GPUs, how many workers); a request the Ray cluster cannot place is a clear
    error."""
    import ray

    t = params.train
    gpus = ray_runtime.gpus_available()
    workers = t.workers(gpus)
    use_gpu = t.use_gpu if t.use_gpu != "auto" else gpus >= workers
    cpus = ray.cluster_resources().get("CPU", 0)
    if workers * t.cpus_per_worker > cpus:
        raise UserError(f"train.num_workers={workers} x train.cpus_per_worker={t.cpus_per_worker} needs "
                        f"{workers * t.cpus_per_worker} CPUs; the Ray cluster has {cpus:g}. Lower them "
                        "or add nodes (RAY_ADDRESS).")
    return use_gpu, workers


def _worker_config(params: Params, paths: RunPaths, identity: RunIdentity, use_gpu: bool, workers: int,
                   init_state: dict | None, stop_epoch: int | None) -> dict:
    """train_loop's config: the run's typed spec, and its data and judge through the object store."""
    import ray

    t = params.train
    x, y = load_split(paths.workspace, "train")
    spec = run_spec(params, resolve_model(params, load_manifest(paths.workspace)), identity,
                    "cuda" if use_gpu else "cpu", tuple(x.shape[1:]), stop_epoch)
    record_identity(identity, paths)  # with the speed settings it resolved
    aug = "" if spec.augment.policy == "off" else f", {spec.augment.policy} augmentation"
    fast = f", {spec.precision}" + (", channels_last" if spec.channels_last else "") + (
        ", compiled" if spec.compile else "") + (f", R1 every {spec.r1_every} D steps" if spec.r1_every > 1 else "")
    print(f"Training {identity.name} (recipe {params.recipe}): {spec.loss.name} loss, {describe(spec.optim)}, "
          f"{spec.model.arch} G/D{aug}, {workers} {'GPU' if use_gpu else 'CPU'} workers{fast}, "
          f"{spec.epochs} epochs" + (f" ({t.kimg:g}k images shown)" if t.kimg else "")
          + (f", schedule fitted to {t.time_budget:g} min after epoch {FIT_AFTER}" if spec.time_budget_s else "")
          + (f", stopping when the probe stalls for {t.stop_patience:.0%} of the decay" if t.stop_patience else ""))
    job = WorkerJob(
        # Through the object store: works on a multi-node cluster too.
        data_ref=ray.put(x.numpy()),
        labels_ref=ray.put(y.numpy()) if spec.model.conditional else None,
        # Selection (probe -> kept checkpoints, Tune) measures on val; the holdout is kept for the report.
        evaluator_ref=ray.put(Evaluator(paths.workspace, split="val")) if params.eval.every else None,
        probe_samples=params.eval.probe_samples, probe_seed=params.eval.seed,
        mlflow_run_id=identity.mlflow_run_id,
        init_state_ref=ray.put(init_state) if init_state is not None else None,
        cpus_per_worker=t.cpus_per_worker,
        terminal=sys.stdout.isatty(),
    )
    return {"spec": spec, "job": job}


def run_spec(params: Params, model_cfg: ModelConfig, identity: RunIdentity, device_type: str,
             data_shape: tuple[int, ...], stop_epoch: int | None = None) -> RunSpec:
    """The run's RunSpec, resolved once: params (recipe values filled in), the model made concrete for the
    data, the schedule's horizon (a continued run keeps its parent's), and the speed settings this machine
    gets (or the run's first machine got: `identity.speed`)."""
    t = params.train
    if not identity.speed:
        precision, channels_last = resolve_speed(t.precision, t.channels_last, device_type, data_shape)
        identity.speed = {"precision": precision, "channels_last": channels_last}
    return RunSpec(
        model=model_cfg, loss=params.loss, optim=params.resolved_optim, augment=params.augment,
        epochs=t.epochs, batch_size=t.batch_size, seed=t.seed, ema_decay=t.ema_decay, repeat=t.repeat,
        mirror=params.data.mirror, stop_epoch=stop_epoch,
        horizon=identity.schedule_epochs if identity.continued_from else None,  # a --continue keeps its parent's
        checkpoint_every=t.checkpoint_every, probe_every=params.eval.every, probe_budget=params.eval.probe_budget,
        precision=identity.speed["precision"], channels_last=identity.speed["channels_last"], compile=t.compile,
        r1_every=resolve_r1_every(t.r1_every, data_shape),
        time_budget_s=t.time_budget * 60 if t.time_budget else None, stop_patience=t.stop_patience)


def _trainer(params: Params, paths: RunPaths, identity: RunIdentity, config: dict, use_gpu: bool, workers: int,
             callbacks: list | None):
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    t = params.train
    return TorchTrainer(
        train_loop,
        train_loop_config=config,
        torch_config=ray_runtime.torch_config(),  # the local runtime's process group store on loopback
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": t.cpus_per_worker}),
        run_config=RunConfig(
            name=identity.name,
            storage_path=str(paths.ray_results),  # absolute, as Ray requires
            # The N best by the selection metric (lower is better) when there is one; Ray always keeps
            # the latest as well, which is what a resume starts from.
            checkpoint_config=CheckpointConfig(
                num_to_keep=t.keep_checkpoints,
                checkpoint_score_attribute=SELECTION if params.eval.every else None,
                checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=t.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),  # per-report INFO lines drown progress
            callbacks=callbacks,
        ),
    )


def _outcome_state(result, identity: RunIdentity, paths: RunPaths) -> dict:
    """The last checkpoint's training state, with the run's record settled; a diverged run or one
    without a checkpoint is a TrainingFailed."""
    diverged_at = (result.return_value or {}).get("diverged_at")
    if diverged_at:
        settle(identity, paths, "diverged")  # resuming would only diverge again
        raise TrainingDiverged(f"training run {identity.name} diverged: NaN/Inf at epoch {diverged_at}; "
                               "lower the learning rates or use a Lipschitz-constrained loss (wgan-gp, "
                               "spectral norm)")
    if result.checkpoint is None:
        settle(identity, paths, "failed")
        raise TrainingFailed(f"training run {identity.name} produced no checkpoint")
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, weights_only=True, map_location="cpu")
    # The schedule a time budget fitted is the run's: a --continue of it keeps that horizon.
    identity.schedule_epochs = recorded_schedule(state["history"]) or identity.schedule_epochs
    settle(identity, paths, "finished")
    return state
