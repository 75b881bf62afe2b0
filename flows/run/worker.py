"""The function every Ray Train worker runs: DDP around gan_core's steps, per-epoch report/checkpoint.

Rank 0 alone logs to MLflow and writes checkpoints; every rank reports (Ray's report is a barrier)."""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flows.conventions import PROBE_PREFIX, PROGRESS, SELECTION, STATE_FILE, checkpoint_dir_name, completed
from gan_core.augment import AugmentConfig, adjust_p, mirror, resumed_p
from gan_core.checkpoint import restore, training_state
from gan_core.config import LossConfig, ModelConfig, ResolvedOptim
from gan_core.ema import EMA
from gan_core.losses import GanLoss
from gan_core.models import build_discriminator, build_generator
from gan_core.recipes import describe
from gan_core.schedules import lr_scale, progress, set_hyperparams
from gan_core.steps import build_optimizers, train_epoch, unwrap



def _mean_across_ranks(metrics: dict[str, float], device) -> dict[str, float]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return metrics
    keys = sorted(metrics)
    t = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


class _MlflowEpochLogger:
    """Live per-epoch metrics in the driver's MLflow run (rank 0 only: one writer for mlflow.db)."""

    def __init__(self, run_id: str | None):
        self.run_id = run_id
        if run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient()

    def log(self, metrics: dict[str, float], epoch: int) -> None:
        if not self.run_id:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, epoch) for k, v in metrics.items()
                 if math.isfinite(v) and not k.endswith("_unix")]
        self.client.log_batch(self.run_id, metrics=batch)


def _quiet_ray_train_reports() -> None:
    # Ray Train logs every report at INFO under a logger named by file path, which its own
    # LoggingConfig level filter misses (it filters "ray.train*" names only).
    from ray.train.v2._internal.execution import context as train_context

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


@dataclass
class _Setup:
    """What one worker trains: the typed config, its data, and G, D, their optimisers and the EMA."""

    model_cfg: ModelConfig
    loss: GanLoss
    train: dict
    aug: AugmentConfig
    optim: ResolvedOptim
    tensors: list[torch.Tensor]
    G: nn.Module
    D: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: EMA | None
    horizon: int  # epochs the lr schedule spans (a continued run: its parent's; later epochs hold the end)

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.tensors[0].shape[1:])


def train_loop(config: dict) -> dict:
    _quiet_ray_train_reports()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(config["train"]["cpus_per_worker"])  # = the CPUs Ray reserved for it
    s = _build(config)
    t = s.train
    start_epoch, history = _restore(config, s, rank)
    p = resumed_p(s.aug, history)  # the adaptive p lives in the checkpointed history (`augment_p`)
    G, D, loader, per_worker = _distribute(s, device, world)
    logger = _MlflowEpochLogger(config.get("mlflow_run_id") if rank == 0 else None)
    evaluator = ray.get(config["evaluator_ref"]) if rank == 0 and config["evaluator_ref"] is not None else None

    diverged_at, score = None, math.inf
    stop = config["stop_epoch"]
    for epoch in range(start_epoch, stop):
        done = completed(epoch)
        metrics = _train_epoch(s, G, D, loader, epoch, rank, world, p, device)
        if s.aug.policy == "adaptive" and metrics.get("nonfinite", 0.0) == 0.0:
            # From rank-averaged values only, so every rank steps p identically (no extra collective).
            p = adjust_p(p, metrics["d_sign_real"], metrics["steps_d"] * per_worker * world, s.aug)
        if s.aug.policy != "off":
            metrics["augment_p"] = p  # after this epoch's step: the p the next epoch (or a resume) uses
        finite = metrics.get("nonfinite", 0.0) == 0.0 and all(math.isfinite(v) for v in metrics.values())
        metrics["nonfinite"] = 0.0 if finite else 1.0
        if evaluator is not None:
            ev = config["eval"]
            if finite and (done % ev["every"] == 0 or done in (stop, t["epochs"])):
                score = _probe(evaluator, s, G, ev, metrics)
            # Every report carries the selection metric (Tune insists): the last probe's, or +inf once diverged.
            metrics[SELECTION] = score if finite else math.inf
        history.append(metrics)
        logger.log(metrics, epoch)
        if rank == 0:
            _print_progress(metrics, done, t["epochs"], finite)
        if not finite:
            # A NaN/Inf poisons every later step: stop now, keep the last good checkpoint, and let
            # the driver mark the run failed (it reads the returned `diverged_at`).
            ray.train.report(metrics)
            diverged_at = done
            break
        if done % t["checkpoint_every"] == 0 or done in (stop, t["epochs"]):
            _report_with_checkpoint(metrics, rank, training_state(G, D, s.opt_g, s.opt_d, s.ema, epoch, history,
                                                                  s.model_cfg, s.data_shape))
        else:
            ray.train.report(metrics)
    return {"diverged_at": diverged_at}  # Ray hands rank 0's return value to the driver


def _build(config: dict) -> _Setup:
    """The typed config, the data (mirrored if asked) and fresh models, identical on every rank."""
    model_cfg = ModelConfig.model_validate(config["model"])
    t = config["train"]
    aug = AugmentConfig.model_validate(config.get("augment") or {})
    x = torch.from_numpy(np.array(ray.get(config["data_ref"])))  # copy: object-store arrays are read-only
    tensors = [x]
    if config["labels_ref"] is not None:
        tensors.append(torch.from_numpy(np.array(ray.get(config["labels_ref"]))))
    if x.dim() != 4 and (aug.policy != "off" or config.get("mirror", False)):
        raise ValueError(f"augment/mirror need image data; this data has shape {tuple(x.shape[1:])}")
    if config.get("mirror", False):
        tensors = mirror(*tensors)  # stylegan2-ada's --mirror: the set doubled with its x-flips
    if t.get("repeat", 1) > 1:  # a small set, repeated so an epoch has the recipe's G steps (gan_core.recipes)
        tensors = [v.repeat(t["repeat"], *[1] * (v.dim() - 1)) for v in tensors]
    data_shape = tuple(tensors[0].shape[1:])
    optim = ResolvedOptim(**{**config["optim"], "betas": tuple(config["optim"]["betas"])})
    torch.manual_seed(t["seed"])  # identical initial weights on every rank (DDP also broadcasts)
    G, D = build_generator(model_cfg, data_shape), build_discriminator(model_cfg, data_shape)
    opt_g, opt_d = build_optimizers(G, D, optim)
    ema = EMA(G, t["ema_decay"]) if t["ema_decay"] > 0 else None
    return _Setup(model_cfg, GanLoss(LossConfig.model_validate(config["loss"])), t, aug, optim, list(tensors),
                  G, D, opt_g, opt_d, ema, int(config.get("schedule_epochs") or t["epochs"]))


def _restore(config: dict, s: _Setup, rank: int) -> tuple[int, list[dict]]:
    """(first epoch to train, history so far): from this run's own checkpoint, else from a training state
    handed over by a PBT donor, else a fresh start."""
    epochs = s.train["epochs"]
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # this run's own checkpoint: Ray restarted the workers, or the same run was rerun
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, weights_only=True, map_location="cpu")
        start_epoch, history = restore(state, s.G, s.D, s.opt_g, s.opt_d, s.ema)
        if rank == 0:
            print(f"[ganflow] resuming from checkpoint at epoch {start_epoch}/{epochs}")
        return start_epoch, history
    if config.get("init_state_ref") is not None:  # a PBT donor's state, or the run this one extends
        start_epoch, history = restore(ray.get(config["init_state_ref"]), s.G, s.D, s.opt_g, s.opt_d, s.ema)
        if rank == 0:
            print(f"[ganflow] continuing from the training state handed over at epoch {start_epoch}/{epochs} "
                  f"with {describe(s.optim)}")
        return start_epoch, history
    return 0, []


def _distribute(s: _Setup, device, world: int):
    """G and D wrapped for DDP, the EMA on the device, and this rank's shard of the data:
    (G, D, loader, per-worker batch size)."""
    # No per-forward broadcast of BatchNorm statistics: each rank keeps its own running stats (rank
    # 0's are the ones saved and evaluated), saving a collective per forward. (torch 2.13 deprecated
    # the older `broadcast_buffers` name with a FutureWarning; unlike it, this one still syncs the
    # buffers once at init, which is harmless: every rank builds or restores the same ones.)
    ddp = {"forward_sync_buffers": False}
    G = ray.train.torch.prepare_model(s.G, parallel_strategy_kwargs=ddp)
    D = ray.train.torch.prepare_model(s.D, parallel_strategy_kwargs=ddp)
    if s.ema is not None:
        s.ema.module.to(device)
    per_worker = max(1, s.train["batch_size"] // world)
    shard = math.ceil(len(s.tensors[0]) / world)
    # drop_last keeps batch sizes equal (ragged last batches skew D's statistics) unless data is tiny.
    loader = ray.train.torch.prepare_data_loader(
        DataLoader(TensorDataset(*s.tensors), batch_size=per_worker, shuffle=True, drop_last=shard >= per_worker)
    )
    return G, D, loader, per_worker


def _train_epoch(s: _Setup, G, D, loader, epoch: int, rank: int, world: int, p: float, device) -> dict[str, float]:
    """One epoch of D and G steps at the schedule's lr; its metrics averaged across ranks."""
    t = s.train
    started = time.perf_counter()
    # Every epoch: the schedule's lr, and after a restore the configured (PBT: mutated) values
    # rather than the ones the loaded optimiser state carries.
    set_hyperparams(s.opt_g, s.opt_d, s.optim, lr_scale(s.optim, progress(epoch, s.horizon)))
    if world > 1:
        loader.sampler.set_epoch(epoch)
    # Per-(epoch, rank) seeds: a resumed run draws the same noise as an uninterrupted one.
    gen = torch.Generator(device="cpu").manual_seed(t["seed"] * 1_000_003 + epoch * 1009 + rank)
    torch.manual_seed(t["seed"] * 1_000_003 + epoch * 1009 + rank)
    metrics = train_epoch(G, D, loader, s.opt_g, s.opt_d, s.loss, n_critic=s.optim.n_critic, gen=gen,
                          conditional=s.model_cfg.conditional, ema=s.ema, augment=s.aug.pipeline(p))
    metrics = _mean_across_ranks(metrics, device)
    metrics["lr_g"], metrics["lr_d"] = s.opt_g.param_groups[0]["lr"], s.opt_d.param_groups[0]["lr"]
    metrics["epoch_time_s"] = time.perf_counter() - started
    metrics["epoch_end_unix"] = time.time()  # wall clock incl. reports/checkpoints (bench/overhead.py)
    metrics["epoch"] = epoch
    return metrics


def _probe(evaluator, s: _Setup, G, ev: dict, metrics: dict[str, float]) -> float:
    """The quality the user cares about, as training goes (rank 0 only; the EMA G if any): adds the
    probe_* metrics and returns the selection value (evaluate.SELECT)."""
    probe, _ = evaluator.measure(s.ema.module if s.ema is not None else unwrap(G), ev["probe_samples"],
                                 ev["seed"], full=False)
    metrics.update({f"{PROBE_PREFIX}{k}": v for k, v in probe.items()})
    return probe[evaluator.select]


def _print_progress(metrics: dict[str, float], done: int, epochs: int, finite: bool) -> None:
    shown = {k: metrics.get(k, float("nan")) for k in PROGRESS}
    print(f"[ganflow] epoch {done}/{epochs} "
          + " ".join(f"{k}={v:.{3 if 'acc' in k else 4}f}" for k, v in shown.items())
          + f" ({metrics['epoch_time_s']:.1f}s)" + ("" if finite else "  NaN/Inf: stopping"), flush=True)


def _report_with_checkpoint(metrics: dict, rank: int, state: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if rank == 0:
            torch.save(state, os.path.join(tmp, STATE_FILE))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=checkpoint_dir_name(metrics["epoch"]))
        else:
            ray.train.report(metrics)
