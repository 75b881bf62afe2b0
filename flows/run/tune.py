"""Ray Tune over params.yaml's `tune.space`: one distributed TorchTrainer per trial.

Ray Train V2 cannot be a Tune trainable itself (`Tuner(TorchTrainer)` fails), so each trial is a
small driver function that builds its own TorchTrainer and forwards the workers' reports to Tune
(with the checkpoints, which PBT copies between trials). Every trial is an MLflow child run of one
parent run; successive halving (synchronous by default, flows/run/halving.py, or Ray's ASHA) stops weak
trials early on the per-epoch probe of the selection metric (`score`, lower is better); PBT replaces the
weakest trials' weights by the best ones' and mutates their values."""
from __future__ import annotations

import json
import math
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flows import params as params_mod
from flows.registry import tracking
from flows.run import ray_runtime
from flows.conventions import SELECTION, STATE_FILE, completed
from flows.env import RunPaths
from flows.errors import TrainingFailed, UserError
from flows.servers import redact_text
from flows.params import Params
from flows.run.train import fit
from flows.run.identity import TrainOutcome, run_identity


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


def _scheduler(params: Params, stops: list[int], population: int, at_once: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    s = params.tune
    if s.scheduler == "sha":
        from flows.run.halving import SyncHalving

        return SyncHalving(stops, s.reduction_factor, population, at_once)
    if s.scheduler == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=params.train.epochs,
                             grace_period=s.grace_period, reduction_factor=s.reduction_factor)
    if s.scheduler == "pbt":
        # `epoch` (not training_iteration): a trial that takes over a donor's weights continues at the
        # donor's epoch. Choices and grids (the population's starting values) mutate as lists (PBT
        # shifts to a neighbour), ranges as domains (PBT scales by 0.8 / 1.2 or resamples).
        space = _search_space(params)
        mutations = {k: next(iter(spec.values())) if ("choice" in spec or "grid" in spec) else space[k]
                     for k, spec in s.space.items()}
        return PopulationBasedTraining(time_attr="epoch", perturbation_interval=s.perturbation_interval,
                                       hyperparam_mutations=mutations, quantile_fraction=0.25,
                                       resample_probability=0.25, synch=s.pbt_synch)
    return FIFOScheduler()


def _stops(params: Params) -> list[int]:
    """The epoch counts at which the scheduler compares trials and may pause or stop them: a trial
    trains in segments that end there. PBT's clock is the 0-based `epoch` of the reports, perturbing
    at multiples of the interval; ASHA and SHA compare at their rungs. FIFO: straight through."""
    s, epochs = params.tune, params.train.epochs
    if s.scheduler == "pbt":
        return list(range(s.perturbation_interval + 1, epochs, s.perturbation_interval))
    if s.scheduler in ("asha", "sha"):
        from flows.run.halving import rungs

        return rungs(s.grace_period, s.reduction_factor, epochs)
    return []


def trial_params(base_raw: dict, config: dict[str, Any], n_train: int | None) -> Params:
    """The trial's params: its sampled values laid over params.yaml as written (nulls included), then
    the recipe resolved for them, so a trial of another loss gets that loss's recipe."""
    raw = json.loads(json.dumps(base_raw))
    for key, value in config.items():
        params_mod.apply(raw, key, value)
    return params_mod.validate(raw, f"tune trial {config}", n_train)


class _ReportToTune:
    """Ray Train -> Tune, as TuneReportCallback does, plus the checkpoint itself when PBT needs it.

    Ray's TuneReportCallback passes Tune only the checkpoint's *path*, so PBT would have no Tune
    checkpoint to copy into a losing trial. This callback runs in the TorchTrainer's controller actor
    and queues (metrics, checkpoint); the trial's driver thread reports them with tune.report."""

    def __init__(self, queue, with_checkpoint: bool) -> None:
        self.queue, self.with_checkpoint = queue, with_checkpoint

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        out = dict(metrics[0])
        if checkpoint is not None:
            out["checkpoint_path"] = checkpoint.path  # where the best trial's weights are read from
        self.queue.put((out, checkpoint if self.with_checkpoint else None))


def _callback(queue, with_checkpoint: bool):
    from ray.train.v2.api.callback import UserCallback

    # Subclassed here so that importing flows.run.tune does not import Ray Train.
    return type("ReportToTune", (_ReportToTune, UserCallback), {})(queue, with_checkpoint)


def _run_trial(config: dict[str, Any], base_raw: dict, n_train: int | None, paths: RunPaths, data_version: str,
               parent: str, stops: tuple[int, ...] = ()) -> None:
    """One Tune trial: params with the sampled values, an MLflow child run, a TorchTrainer. A paused
    trial starts again from its checkpoint; under PBT possibly another trial's, with mutated values
    (tune.get_checkpoint)."""
    from ray import tune

    p = trial_params(base_raw, config, n_train)
    # Tune needs a score every epoch and a checkpoint beside it, to pick the best trial's weights.
    p = p.model_copy(update={"train": p.train.model_copy(update={"checkpoint_every": max(1, p.eval.every)})})
    epochs = p.train.epochs
    trial_id = tune.get_context().get_trial_id()
    identity = run_identity(p, data_version, paths)
    base_name = identity.name = f"{identity.name}-{trial_id}"
    identity.trial = True
    init_state, donor = _donor_state(tune.get_checkpoint(), trial_id)
    start_epoch = completed(init_state["epoch"]) if init_state is not None else 0
    if init_state is not None:
        print(f"[ganflow] trial {trial_id}: " + (f"continuing another trial's weights at epoch {start_epoch} "
              f"(trial {donor}) with {config}" if donor else f"resuming its own checkpoint at epoch {start_epoch}"))
        identity.mlflow_run_id = tracking.find_trial_run(parent, trial_id)  # one MLflow run per trial
    tracking.start_run(p, paths, identity, data_version, parent_run_id=parent, extra_tags={"ganflow.trial_id": trial_id})
    while start_epoch < epochs:  # a trial paused at the very last epoch has nothing left to do
        if start_epoch:
            # A Ray Train run of its own (a reused name would resume that run's stale checkpoint instead).
            identity.name = f"{base_name}-e{start_epoch}"
        # The values this trial trains with from here on (PBT changes them): tags, and metrics over epochs.
        tracking.record_trial_config(identity, config, start_epoch, donor)
        donor = None
        # PBT, ASHA and SHA act on the report at a stop: train in segments that end there, and send that
        # report only once the segment's TorchTrainer has shut down, so that pausing or stopping this
        # trial never kills a live TorchTrainer (a killed one can leave its placement group, and so its
        # CPUs, reserved for good: seen under PBT and under ASHA, the search then waits forever).
        stop = min([e for e in stops if e > start_epoch] + [epochs])
        init_state = _fit_segment(p, paths, identity, init_state, stop, bool(stops))
        start_epoch = stop
    tracking.finish_run(identity.mlflow_run_id)


def _fit_segment(p: Params, paths: RunPaths, identity, init_state: dict | None, stop: int,
                 with_checkpoint: bool) -> dict:
    """fit() to `stop` epochs beside this thread, which alone may call tune.report (Tune's session is
    this thread's); the last report waits until fit() has returned. Returns the final training state."""
    from ray import tune
    from ray.util.queue import Queue

    queue = Queue(actor_options={"num_cpus": 0})
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["outcome"] = fit(p, paths, identity, callbacks=[_callback(queue, with_checkpoint)],
                                 init_state=init_state, stop_epoch=stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the trial's thread below
            box["error"] = exc
        finally:
            queue.put(None)

    thread = threading.Thread(target=work, name="ganflow-trial-fit", daemon=True)
    thread.start()
    last = None
    while (item := queue.get()) is not None:
        if "epoch" in item[0] and completed(item[0]["epoch"]) == stop:
            last = item
        else:
            tune.report(item[0], checkpoint=item[1])
    thread.join()
    if (error := box.get("error")) is not None:
        if isinstance(error, TrainingFailed):
            tracking.fail_run(identity.mlflow_run_id, str(error))
        raise error
    if last is not None:
        tune.report(last[0], checkpoint=last[1])
    return box["outcome"].state


def _donor_state(checkpoint, trial_id: str) -> tuple[dict | None, str | None]:
    """The training state Tune handed this trial and the other trial it came from: (None, None) for a
    fresh trial, (state, None) when PBT paused this trial and resumes it from its own checkpoint."""
    if checkpoint is None:
        return None, None
    with checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, weights_only=True, map_location="cpu")
    # Tune keeps it in the donor trial's folder, named _run_trial_<trial id>_<config>_<date>.
    folder = Path(checkpoint.path).parent.name
    found = re.search(r"_run_trial_([0-9a-f]+_\d+)", folder)
    donor = found.group(1) if found else folder
    return state, (donor if donor != trial_id else None)


def _settle_trial(r, parent: str, epochs: int, pbt: bool) -> dict:
    """One row of the search summary; also ends the trial's MLflow run, which a trial stopped by the
    scheduler (its driver stopped at a rung) or a crashed one could not end itself."""
    last = r.metrics or {}
    frame = r.metrics_dataframe
    scores = frame[SELECTION] if frame is not None and SELECTION in frame else []
    finite = [float(x) for x in scores if math.isfinite(x)]
    # Epochs trained (not reports: a PBT trial that took over a donor's weights is at the donor's epoch).
    iters = completed(last["epoch"]) if "epoch" in last else int(last.get("training_iteration", 0))
    if r.error:
        status, reason = "error", redact_text(str(r.error)).strip().splitlines()[-1][:300]
    elif last.get("nonfinite") or not math.isfinite(last.get(SELECTION, math.nan)):
        status, reason = "error", f"diverged: NaN/Inf at epoch {iters}"
    else:
        status, reason = "ok", None if iters >= epochs else f"stopped early by the scheduler at epoch {iters}"
    run_id = tracking.find_trial_run(parent, r.metrics.get("trial_id") if r.metrics else None)
    if run_id:
        if status == "error":
            tracking.fail_run(run_id, reason)
        else:
            if reason:
                tracking.MlflowClient().set_tag(run_id, "ganflow.stopped", reason)
            tracking.finish_run(run_id)
    row = {"config": r.config, "score": min(finite) if finite else math.nan, "epochs": iters,
           "status": status, "reason": reason, "mlflow_run_id": run_id}
    if pbt:
        row["pbt_exploit_epochs"] = tracking.exploit_epochs(run_id) if run_id else []
    return row


def run_search(params: Params, base_raw: dict, paths: RunPaths, data_version: str,
               tags: dict[str, str] | None = None) -> TuneOutcome:
    """`params` resolved from `base_raw`, params.yaml (with the run's --set values) as the run read it (trials
    lay their values over it); `tags` go on the search's run and the best trial's."""
    if not params.tune.space:
        raise UserError("tune.space in params.yaml is empty: declare what to search (see README)")
    n_train = params_mod.training_set_size(paths.workspace, base_raw)
    ray_runtime.init(paths)
    parent = tracking.start_parent_run(params, paths, data_version, params.tune.model_dump(mode="json"), tags)
    tuner = _tuner(params, base_raw, n_train, paths, data_version, parent)
    started = time.perf_counter()
    try:
        grid = tuner.fit()
    finally:
        # PBT's copies of the trials' checkpoints: all kept while the search runs (a donor's may be
        # needed any time; Tune keeping fewer deleted one before a trial restored from it), none after.
        # The trials' own Ray Train checkpoints, which registration reads, stay.
        for folder in (paths.ray_results / "tune" / f"tune-{parent[:8]}").glob("*/checkpoint_*"):
            shutil.rmtree(folder, ignore_errors=True)
    pbt = params.tune.scheduler == "pbt"
    trials = [_settle_trial(r, parent, params.train.epochs, pbt) for r in grid]
    if pbt:
        _say_exploits(trials, params.tune.pbt_synch)
    ok = [r for r, t in zip(grid, trials) if t["status"] == "ok"]
    if not ok:
        tracking.fail_run(parent, "every trial failed")
        raise TrainingFailed(f"every one of {len(trials)} tune trials failed: {[t['reason'] for t in trials]}")
    best = min(ok, key=lambda r: r.metrics[SELECTION])
    state_dir = Path(best.metrics["checkpoint_path"])
    state = torch.load(state_dir / STATE_FILE, weights_only=True, map_location="cpu")
    identity = run_identity(trial_params(base_raw, best.config, n_train), data_version, paths)
    identity.name = state_dir.parent.name
    identity.mlflow_run_id = tracking.find_child_run(parent, identity.name)
    for k, v in (tags or {}).items():  # the run that gets registered says what it was run with
        tracking.MlflowClient().set_tag(identity.mlflow_run_id, k, v)
    tracking.log_trials(parent, trials, best.config, time.perf_counter() - started)
    print(f"Tune: best trial {identity.name} score {best.metrics[SELECTION]:.4f} with {best.config}")
    return TuneOutcome(TrainOutcome(identity, state, state["history"], 0, time.perf_counter() - started),
                       parent, trials)


def _tuner(params: Params, base_raw: dict, n_train: int | None, paths: RunPaths, data_version: str, parent: str):
    """The Tuner: one driver function per trial (each builds its own TorchTrainer), the scheduler, and
    how many trials train at once."""
    import ray
    from ray import tune

    s = params.tune
    cpus = ray.cluster_resources().get("CPU", 1)
    workers = params.train.workers(ray_runtime.gpus_available())
    fits = max(1, int(cpus // (workers * params.train.cpus_per_worker)))
    # Tune's max_concurrent_trials holds back trial *creation*: PBT and successive halving pause trials
    # and need the whole population to exist (paused trials make room). Under PBT the TorchTrainers'
    # CPU requests alone bound who trains; successive halving picks who trains itself.
    at_once = s.max_concurrent or fits
    concurrent = None if s.scheduler in ("pbt", "sha") else at_once
    population = s.num_samples * math.prod(len(v["grid"]) for v in s.space.values() if "grid" in v)
    stops = _stops(params)
    trainable = tune.with_parameters(_run_trial, base_raw=base_raw, n_train=n_train, paths=paths,
                                     data_version=data_version, parent=parent, stops=tuple(stops))
    # The trial's driver only waits on its TorchTrainer, whose workers hold the CPUs.
    trainable = tune.with_resources(trainable, {"CPU": 0, "memory": 1})  # Ray refuses an empty request
    rungs = f" (trials compared at epochs {stops})" if s.scheduler == "sha" else ""
    print(f"Tune: {population} trials over {list(s.space)}, {s.scheduler}{rungs}, {at_once} training at a time")
    return tune.Tuner(
        trainable,
        param_space=_search_space(params),
        tune_config=tune.TuneConfig(metric=SELECTION, mode="min", scheduler=_scheduler(params, stops, population, at_once),
                                    num_samples=s.num_samples, max_concurrent_trials=concurrent),
        run_config=tune.RunConfig(name=f"tune-{parent[:8]}", storage_path=str(paths.ray_results / "tune"),
                                  verbose=1),
    )


def _say_exploits(trials: list[dict], synch: bool) -> None:
    # Said either way: a population whose trials were never compared is a plain grid.
    exploits = sum(len(t["pbt_exploit_epochs"]) for t in trials)
    why = "" if exploits else " (no trial met a better, still running one at a perturbation" + (
        ")" if synch else "; tune.pbt_synch: true makes them wait for each other)")
    print(f"Tune: PBT made {exploits} exploit(s) over {len(trials)} trials{why}")
