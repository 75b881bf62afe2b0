"""Driver side of training: a Ray Train TorchTrainer per run, with explicit resume semantics.

A run is named by what determines its weights (hyper-parameters + data version). Ray Train resumes
silently when a name + storage path is reused, so we make that explicit: the same command resumes
(and says so); a run folder whose recorded identity differs is refused."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from flows import ray_runtime
from flows.env import RunPaths
from flows.errors import TrainingFailed, UserError
from flows.params import Params
from flows.evaluate import Evaluator
from flows.stages import load_manifest, load_split
from gan_core.config import ModelConfig
from gan_core.recipes import describe
from flows.train_worker import STATE_FILE, train_loop

IDENTITY_FILE = "ganflow_run.json"


@dataclass
class RunIdentity:
    name: str
    training_hash: str
    data_version: str
    mlflow_run_id: str | None = None

    @property
    def key(self) -> dict:
        return {"training_hash": self.training_hash, "data_version": self.data_version}


@dataclass
class TrainOutcome:
    identity: RunIdentity
    state: dict  # gan_core.checkpoint.training_state of the last checkpoint
    history: list[dict]
    resumed_from_epoch: int
    wall_s: float


def resolve_model(params: Params, manifest: dict) -> ModelConfig:
    """params.model made concrete for this data: `auto` arch, class count for conditioning."""
    cfg = params.model
    points = manifest["kind"] == "points"
    arch = cfg.arch if cfg.arch != "auto" else ("mlp" if points else "dcgan")
    if points != (arch == "mlp"):
        raise UserError(f"model.arch {arch!r} does not fit {manifest['kind']} data: use "
                        f"{'mlp' if points else 'dcgan or resnet'} (or auto)")
    num_classes = len(manifest["classes"]) if cfg.conditional else None
    if cfg.conditional and num_classes < 2:
        raise UserError("model.conditional needs labelled data with at least 2 classes "
                        "(image folders: one sub-folder per class)")
    return cfg.model_copy(update={"arch": arch, "num_classes": num_classes})


def run_identity(params: Params, data_version: str, paths: RunPaths, new_run: bool = False) -> RunIdentity:
    h = params.training_hash()
    digest = hashlib.sha256(f"{h}:{data_version}".encode()).hexdigest()[:10]
    name = f"{params.data.name}-{digest}"
    if new_run:
        name += time.strftime("-%Y%m%d-%H%M%S")
    identity = RunIdentity(name, h, data_version)
    recorded = paths.ray_results / name / IDENTITY_FILE
    if recorded.exists():
        old = json.loads(recorded.read_text())
        if {k: old.get(k) for k in identity.key} != identity.key:
            raise UserError(f"run folder {recorded.parent} belongs to other hyper-parameters or data "
                            f"({old}); rerun with --new-run to start a separate run")
        identity.mlflow_run_id = old.get("mlflow_run_id")
    return identity


def record_identity(identity: RunIdentity, paths: RunPaths) -> None:
    folder = paths.ray_results / identity.name
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (IDENTITY_FILE + ".tmp")
    tmp.write_text(json.dumps(identity.__dict__, indent=2))
    tmp.replace(folder / IDENTITY_FILE)  # atomic: a crash never leaves half a file


def last_checkpoint_epoch(identity: RunIdentity, paths: RunPaths) -> int | None:
    ckpts = sorted((paths.ray_results / identity.name).glob("epoch_*"))
    return int(ckpts[-1].name.split("_")[1]) + 1 if ckpts else None


def fit(params: Params, paths: RunPaths, identity: RunIdentity, callbacks: list | None = None) -> TrainOutcome:
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    import ray

    t = params.train
    ray_runtime.init(paths)
    use_gpu = t.use_gpu if t.use_gpu != "auto" else ray_runtime.gpus_available() >= t.num_workers
    cpus = ray.cluster_resources().get("CPU", 0)
    if not use_gpu and t.num_workers > cpus:
        raise UserError(f"train.num_workers={t.num_workers} needs {t.num_workers} CPUs; the Ray cluster has "
                        f"{cpus:g}. Lower train.num_workers or add nodes (RAY_ADDRESS).")
    resumed = last_checkpoint_epoch(identity, paths)
    if resumed is not None:
        print(f"Resuming run {identity.name} from its checkpoint after epoch {resumed} "
              f"(same hyper-parameters and data; pass --new-run to start over)")
    record_identity(identity, paths)

    model_cfg = resolve_model(params, load_manifest(paths.workspace))
    optim = params.resolved_optim
    print(f"Training {identity.name}: {params.loss.name} loss, {describe(optim)}, {model_cfg.arch} "
          f"G/D, {t.num_workers} {'GPU' if use_gpu else 'CPU'} workers, {t.epochs} epochs")
    x, y = load_split(paths.workspace, "train")
    config = {
        "model": model_cfg.model_dump(),
        "loss": params.loss.model_dump(),
        "optim": dataclasses.asdict(optim),
        "train": t.model_dump(mode="json"),
        # Through the object store: works on a multi-node cluster too.
        "data_ref": ray.put(x.numpy()),
        "labels_ref": ray.put(y.numpy()) if model_cfg.conditional else None,
        "evaluator_ref": ray.put(Evaluator(paths.workspace)) if params.eval.every else None,
        "eval": params.eval.model_dump(),
        "mlflow_run_id": identity.mlflow_run_id,
    }
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=use_gpu),
        run_config=RunConfig(
            name=identity.name,
            storage_path=str(paths.ray_results),  # absolute, as Ray requires
            checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints),
            failure_config=FailureConfig(max_failures=t.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),  # per-report INFO lines drown progress
            callbacks=callbacks,
        ),
    )
    started = time.perf_counter()
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray wraps worker errors; keep the reason, drop Ray's internals
        raise TrainingFailed(f"training run {identity.name} failed: {exc}") from exc
    wall = time.perf_counter() - started
    diverged_at = (result.return_value or {}).get("diverged_at")
    if diverged_at:
        raise TrainingFailed(f"training run {identity.name} diverged: NaN/Inf at epoch {diverged_at}; "
                             "lower the learning rates or use a Lipschitz-constrained loss (wgan-gp, "
                             "spectral norm)")
    if result.checkpoint is None:
        raise TrainingFailed(f"training run {identity.name} produced no checkpoint")
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, weights_only=True, map_location="cpu")
    history = state["history"]
    return TrainOutcome(identity, state, history, resumed or 0, wall)
