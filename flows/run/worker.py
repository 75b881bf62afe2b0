"""The function every Ray Train worker runs: the adapter around gan_core.training.fit (DDP, Ray's
per-epoch report and checkpoint, the live MLflow metrics); the science is all in gan_core.

Rank 0 alone logs to MLflow, probes and writes checkpoints; every rank reports (Ray's report is a barrier)."""
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

from flows.conventions import PROBE_PREFIX, PROGRESS, SAMPLES_KEY, SELECTION, STATE_FILE, checkpoint_dir_name
from gan_core.checkpoint import restore
from gan_core.images import image_grid
from gan_core.recipes import describe
from gan_core.sampling import SampleRequest, draw
from gan_core.training import (PROBE_NOISE, SCORE, Hooks, Parts, Progress, RunSpec, build, epoch_batches, estimate_line, fit,
                               format_duration, prepare_data, progress_line)

GRID_SAMPLES = 64  # the sample grid logged to MLflow at each checkpoint


@dataclass(frozen=True)
class WorkerJob:
    """What a worker needs beside the spec: the data and the judge through Ray's object store, and where
    its live metrics go."""

    data_ref: object
    labels_ref: object | None
    evaluator_ref: object | None  # the validation-split judge of the probe; None: no probe
    probe_samples: int
    probe_seed: int
    mlflow_run_id: str | None
    init_state_ref: object | None  # a PBT donor's training state, or the run this one extends
    cpus_per_worker: int
    terminal: bool  # the driver's output is a terminal: progress with a bar


def train_loop(config: dict) -> dict:
    """Ray's train_func: `config` is {"spec": RunSpec, "job": WorkerJob}."""
    spec: RunSpec = config["spec"]
    job: WorkerJob = config["job"]
    _quiet_ray_train_reports()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(job.cpus_per_worker)  # = the CPUs Ray reserved for it
    x = torch.from_numpy(np.array(ray.get(job.data_ref)))  # copy: object-store arrays are read-only
    y = torch.from_numpy(np.array(ray.get(job.labels_ref))) if job.labels_ref is not None else None
    tensors = prepare_data(spec, x, y)
    parts = build(spec, tuple(tensors[0].shape[1:]))
    start_epoch, history = _restore(spec, job, parts, rank)
    batches = _distribute(spec, parts, tensors, device, rank, world)
    hooks = _WorkerHooks(spec, job, parts, rank, device)
    outcome = fit(spec, parts, batches, hooks, start_epoch, history, rank, world)
    return {"diverged_at": outcome.diverged_at}  # Ray hands rank 0's return value to the driver


def _restore(spec: RunSpec, job: WorkerJob, parts: Parts, rank: int) -> tuple[int, list[dict]]:
    """(first epoch to train, history so far): from this run's own checkpoint, else from a training state
    handed over by a PBT donor, else a fresh start."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # this run's own checkpoint: Ray restarted the workers, or the same run was rerun
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, weights_only=True, map_location="cpu")
        start_epoch, history = restore(state, parts.G, parts.D, parts.opt_g, parts.opt_d, parts.ema)
        if rank == 0:
            print(f"[ganflow] resuming from checkpoint at epoch {start_epoch}/{spec.epochs}")
        return start_epoch, history
    if job.init_state_ref is not None:
        start_epoch, history = restore(ray.get(job.init_state_ref), parts.G, parts.D, parts.opt_g, parts.opt_d,
                                       parts.ema)
        if rank == 0:
            print(f"[ganflow] continuing from the training state handed over at epoch {start_epoch}/{spec.epochs} "
                  f"with {describe(spec.optim)}")
        return start_epoch, history
    return 0, []


def _distribute(spec: RunSpec, parts: Parts, tensors: list[torch.Tensor], device, rank: int, world: int):
    """G and D wrapped for DDP (in `parts`), the EMA and, on a GPU, the training set on the device; returns
    `batches(epoch)`, this rank's shard."""
    # No per-forward broadcast of BatchNorm statistics: each rank keeps its own running stats (rank
    # 0's are the ones saved and evaluated), saving a collective per forward. (torch 2.13 deprecated
    # the older `broadcast_buffers` name with a FutureWarning; unlike it, this one still syncs the
    # buffers once at init, which is harmless: every rank builds or restores the same ones.)
    ddp = {"forward_sync_buffers": False}
    parts.G = ray.train.torch.prepare_model(parts.G, parallel_strategy_kwargs=ddp)
    parts.D = ray.train.torch.prepare_model(parts.D, parallel_strategy_kwargs=ddp)
    if parts.ema is not None:
        parts.ema.module.to(device)
    if device.type == "cuda":  # resident: no host-to-device copy per batch (a few hundred MB at most)
        tensors = [t.to(device) for t in tensors]
    return epoch_batches(tensors, max(1, spec.batch_size // world), rank, world)


class _WorkerHooks(Hooks):
    def __init__(self, spec: RunSpec, job: WorkerJob, parts: Parts, rank: int, device):
        self.spec, self.job, self.parts, self.rank, self.device = spec, job, parts, rank, device
        self.logger = _MlflowEpochLogger(job.mlflow_run_id if rank == 0 else None)
        self.evaluator = ray.get(job.evaluator_ref) if rank == 0 and job.evaluator_ref is not None else None
        self.score = math.inf

    def reduce(self, metrics: dict[str, float]) -> dict[str, float]:
        return _mean_across_ranks(metrics, self.device)

    def probe(self, G, done: int) -> dict[str, float] | None:
        """The quality the user cares about, as training goes (rank 0 only): the probe_* metrics; the
        selection value (evaluate.SELECT) is kept for every later report."""
        if self.evaluator is None:
            return None
        probe, _ = self.evaluator.measure(G, self.job.probe_samples, self.job.probe_seed, full=False)
        self.score = probe[self.evaluator.select]
        return {**{f"{PROBE_PREFIX}{k}": v for k, v in probe.items()}, SCORE: self.score}  # SCORE: the stop rule's

    def progress(self, p: Progress) -> None:
        if self.rank != 0:
            return
        shown = {k: p.metrics.get(k, float("nan")) for k in PROGRESS if k != SELECTION}
        if self.evaluator is not None:
            shown[SELECTION] = self.score if p.finite else math.inf
        print(f"[ganflow] {progress_line(p, bar=self.job.terminal)} "
              + " ".join(f"{k}={v:.{3 if 'acc' in k else 4}f}" for k, v in shown.items())
              + f" ({p.epoch_s:.1f}s)" + ("" if p.finite else "  NaN/Inf: stopping"), flush=True)
        if p.fitted:
            budget = format_duration(self.spec.time_budget_s or 0)
            print(f"[ganflow] time budget {budget}: the schedule (lr decay included) now spans {p.total} epochs "
                  f"at {p.epoch_s:.1f}s an epoch here, ending in about {format_duration(p.eta_s)}", flush=True)
        elif p.first and p.end > p.done:
            print(f"[ganflow] {estimate_line(p)}", flush=True)
        if p.stopped:
            print(f"[ganflow] stopping after epoch {p.done} of {p.total}: for {self.spec.stop_patience:.0%} of the "
                  f"schedule into the lr decay the probe has not improved beyond its draw noise ({PROBE_NOISE:.0%})",
                  flush=True)

    def end_epoch(self, metrics: dict[str, float], done: int, state: dict | None) -> None:
        if self.evaluator is not None:
            # Every report carries the selection metric (Tune insists): the last probe's, or +inf once diverged.
            metrics[SELECTION] = self.score if metrics["nonfinite"] == 0.0 else math.inf
        self.logger.log(metrics, metrics["epoch"])
        if state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            if self.rank == 0:
                torch.save(state, os.path.join(tmp, STATE_FILE))
                if len(self.parts.data_shape) == 3:  # images: a grid; points have their scatter at the end
                    self.logger.log_grid(self.parts.evaluated, done)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                                 checkpoint_dir_name=checkpoint_dir_name(metrics["epoch"]))
            else:
                ray.train.report(metrics)


def _mean_across_ranks(metrics: dict[str, float], device) -> dict[str, float]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return metrics
    keys = sorted(metrics)
    t = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


class _MlflowEpochLogger:
    """Live per-epoch metrics, and a sample grid at each checkpoint, in the driver's MLflow run (rank 0
    only: one writer for mlflow.db). Steps are epochs completed (flows.conventions)."""

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

    def log_grid(self, G, done: int) -> None:
        """The generator a probe scores (the EMA if any) as a grid, so MLflow's UI shows the run improving."""
        if not self.run_id:
            return
        samples = draw(G, SampleRequest(n=GRID_SAMPLES, seed=0))
        self.client.log_image(self.run_id, image_grid(samples), key=SAMPLES_KEY, step=done)


def _quiet_ray_train_reports() -> None:
    # Ray Train logs every report at INFO under a logger named by file path, which its own
    # LoggingConfig level filter misses (it filters "ray.train*" names only).
    from ray.train.v2._internal.execution import context as train_context

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
