"""Run bookkeeping, Ray-free: what names a run (its identity: hyper-parameters + data version), the record
kept in its folder, resume points and interrupted runs. `ganflow sample`, `promote` and `compare` import
this without loading Ray Train or Tune.

A run is named by what determines its weights. Ray Train resumes silently when a name + storage path is
reused, so we make that explicit: the same command resumes (and says so); a run folder whose recorded
identity differs is refused."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from flows.conventions import SELECTION, STATE_FILE, checkpoint_dir_name, completed_from_checkpoint_dir
from flows.env import RunPaths
from flows.errors import UserError
from flows.params import Params, flatten
from gan_core.config import ModelConfig


IDENTITY_FILE = "ganflow_run.json"


@dataclass
class RunIdentity:
    name: str
    training_hash: str
    data_version: str
    mlflow_run_id: str | None = None
    # running (or killed: nothing updates it then) | finished | diverged | failed | abandoned
    status: str = "running"
    params: dict = field(default_factory=dict)  # the training key, to name what changed
    trial: bool = False  # a Tune trial: schedulers stop these early by design, they are not "interrupted"
    continued_from: str | None = None  # the finished run whose last checkpoint this run extends (--continue)
    schedule_epochs: int | None = None  # epochs the lr schedule spans: train.epochs, or a continued run's parent's
    init_from: str | None = None  # NAME/VERSION of the registered version this run started from (--init-from)
    overrides: list[str] = field(default_factory=list)  # the --set values it ran with: the same ones resume it
    created: float | None = None  # when the run was first recorded (epoch s): retention orders runs by it
    # train.precision/channels_last as resolved for the machine that started the run; its resumes keep them,
    # so the weights never depend on which machine resumed it.
    speed: dict = field(default_factory=dict)

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
    """params.model made concrete for this data: `auto` arch, `auto` conditioning (on when the data has
    at least 2 classes: an unlabelled folder's single class `all` trains unconditionally), class count."""
    cfg = params.model
    points = manifest["kind"] == "points"
    arch = cfg.arch if cfg.arch != "auto" else ("mlp" if points else "dcgan")
    if points != (arch == "mlp"):
        raise UserError(f"model.arch {arch!r} does not fit {manifest['kind']} data: use "
                        f"{'mlp' if points else 'dcgan or resnet'} (or auto)")
    labelled = len(manifest["classes"]) >= 2
    conditional = labelled if cfg.conditional == "auto" else cfg.conditional
    if conditional and not labelled:
        raise UserError("model.conditional needs labelled data with at least 2 classes "
                        "(image folders: one sub-folder per class)")
    # The training split's class mix (manifests before it was recorded: equal shares).
    shares = manifest.get("class_histogram", {}).get("train") if conditional else None
    return ModelConfig.model_validate({**cfg.model_dump(), "arch": arch, "conditional": conditional,
                                       "num_classes": len(manifest["classes"]) if conditional else None,
                                       "class_shares": shares})


def run_identity(params: Params, data_version: str, paths: RunPaths, new_run: bool = False,
                 guard_interrupted: bool = False, extend: bool = False, init_from: str | None = None,
                 overrides: list[str] | None = None) -> RunIdentity:
    """The run these params + data make (`overrides`, the --set values params came with, are only recorded:
    the resolved params name the run). With guard_interrupted (the pipeline), an interrupted run of the same
    data with other hyper-parameters is refused rather than silently left behind; an interrupted one-off run
    (one with --set values) does not stop a run of params.yaml as written (a scheduled one). With `extend`
    (--continue), the run that carries on the finished run of these settings (extendable_run) to
    train.epochs: a run of its own, named by its parent too, whose lr schedule keeps the parent's."""
    parent = extendable_run(params, data_version, paths) if extend else None
    h = params.training_hash()
    lineage = (f":{parent['name']}" if parent else "") + (f":init:{init_from}" if init_from else "")
    digest = hashlib.sha256(f"{h}:{data_version}{lineage}".encode()).hexdigest()[:10]
    name = f"{params.data.name}-{digest}"
    if new_run:
        name += time.strftime("-%Y%m%d-%H%M%S")
    horizon = (parent.get("schedule_epochs") or parent["params"]["train"]["epochs"]) if parent else params.train.epochs
    identity = RunIdentity(name, h, data_version, params=params.training_key(),
                           continued_from=parent["name"] if parent else None, schedule_epochs=horizon,
                           init_from=init_from, overrides=list(overrides or []))
    recorded = _read_identity(paths, name)
    if recorded is not None:
        if {k: recorded.get(k) for k in identity.key} != identity.key:
            raise UserError(f"run folder {paths.ray_results / name} belongs to other hyper-parameters or data "
                            f"({recorded}); rerun with --new-run to start a separate run")
        identity.mlflow_run_id = recorded.get("mlflow_run_id")
        identity.speed = recorded.get("speed") or {}
    if guard_interrupted:
        others = [r for r in interrupted_runs(paths, params.data.name, data_version) if r["name"] != name
                  and (overrides or not r.get("overrides"))]  # a one-off stays one-off: it never blocks the schedule
        if others and not new_run:
            raise UserError(_changed_params_message(others[0], identity, paths))
        for other in others:  # the user asked for a new run: these no longer block later runs
            record_identity(RunIdentity(**{**other, "status": "abandoned"}), paths)
    return identity


def check_seed(state: dict, model_cfg: ModelConfig, data_shape: list[int], uri: str) -> None:
    """A registered version can start a run on other data (transfer), never with another architecture or
    data shape: its weights and optimiser states would not fit. Names each difference."""
    theirs = ModelConfig.model_validate(state["model"]).model_dump()
    ours = model_cfg.model_dump()
    # class_shares is the data's class mix, not the architecture: a transfer to other data changes it.
    differ = [f"model.{k}: {theirs[k]!r} there, {ours[k]!r} here" for k in ours
              if ours[k] != theirs.get(k) and k != "class_shares"]
    if list(state["data_shape"]) != list(data_shape):
        differ.append(f"data shape: {list(state['data_shape'])} there, {list(data_shape)} here")
    if differ:
        raise UserError(f"--init-from {uri}: that generator does not fit this run (" + "; ".join(differ) +
                        "). Set the same model in params.yaml, or train from scratch.")


def extendable_run(params: Params, data_version: str, paths: RunPaths) -> dict:
    """The finished run (not a trial) of this data whose hyper-parameters equal `params` but for fewer
    train.epochs, the longest such; a UserError saying what there is when none fits."""
    def key(params_key: dict) -> dict:
        return {k: v for k, v in flatten(params_key).items() if k not in ("train.epochs", "train.kimg")}

    want, epochs = key(params.training_key()), params.train.epochs
    best, best_done, finished = None, -1, []
    for rec, done in _runs_of(paths, params.data.name, data_version):
        if rec.get("status") != "finished":
            continue
        finished.append(f"{rec['name']} ({done} epochs)")
        if done is not None and best_done < done < epochs and key(rec.get("params", {})) == want:
            best, best_done = rec, done
    if best is None:
        raise UserError(f"--continue: no finished run of these settings on this data ({data_version[:12]}) has fewer "
                        f"than train.epochs={epochs} epochs to extend (finished runs of this data: "
                        f"{', '.join(finished) or 'none'}). Raise train.epochs above the run's, keep every other "
                        "setting, or drop --continue to train from scratch.")
    return best


def last_state(paths: RunPaths, name: str) -> dict:
    """The training state of run `name`'s latest persisted checkpoint (G, D, optimisers, EMA, RNG, history)."""
    import torch

    done = last_checkpoint_epoch(paths.ray_results / name)
    if done is None:
        raise UserError(f"run {name} has no checkpoint to continue from")
    path = paths.ray_results / name / checkpoint_dir_name(done - 1) / STATE_FILE
    return torch.load(path, weights_only=True, map_location="cpu")


def best_kept_state(paths: RunPaths, name: str) -> tuple[dict, int, float | None]:
    """(training state, epochs completed, probe score) of run `name`'s best kept checkpoint by the validation
    probe (SELECTION, lower is better), else its latest; a UserError when it kept none."""
    import math

    import torch

    if not (paths.ray_results / name).is_dir():
        raise UserError(f"--finish: no run of these settings was started on this data (run {name}); pass the --set "
                        "values the stopped run was started with")
    snapshot = paths.ray_results / name / "checkpoint_manager_snapshot.json"
    kept = json.loads(snapshot.read_text()).get("checkpoint_results", []) if snapshot.exists() else []
    if not kept:
        raise UserError(f"run {name} has no kept checkpoint to register (it stopped before its first); "
                        "`ganflow pipeline` with the same settings resumes it")

    def score(r: dict) -> float:  # Ray's snapshot (pydantic JSON) writes an inf score, before the first probe, as null
        s = r["metrics"].get(SELECTION)
        return math.inf if s is None else float(s)

    scored = [r for r in kept if math.isfinite(score(r))]
    best = min(scored, key=score) if scored else max(kept, key=lambda r: r["checkpoint_dir_name"])
    folder = paths.ray_results / name / best["checkpoint_dir_name"]
    state = torch.load(folder / STATE_FILE, weights_only=True, map_location="cpu")
    return state, completed_from_checkpoint_dir(folder.name), score(best) if scored else None


def _read_identity(paths: RunPaths, name: str) -> dict | None:
    path = paths.ray_results / name / IDENTITY_FILE
    return json.loads(path.read_text()) if path.exists() else None


def interrupted_runs(paths: RunPaths, dataset: str, data_version: str) -> list[dict]:
    """Runs of this data that stopped before finishing (killed or failed) and hold a checkpoint."""
    return [rec for rec, done in _runs_of(paths, dataset, data_version)
            if rec.get("status", "finished") in ("running", "failed") and done is not None]


def _runs_of(paths: RunPaths, dataset: str, data_version: str):
    """(record, epochs its last checkpoint holds or None) of every run of this data, Tune trials aside."""
    for path in sorted(paths.ray_results.glob(f"{dataset}-*/{IDENTITY_FILE}")):
        rec = json.loads(path.read_text())
        if not rec.get("trial") and rec.get("data_version") == data_version:
            yield rec, last_checkpoint_epoch(path.parent)


def _changed_params_message(old: dict, new: RunIdentity, paths: RunPaths) -> str:
    a, b = flatten(old.get("params", {})), flatten(new.params)
    changed = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    epoch = last_checkpoint_epoch(paths.ray_results / old["name"])
    sets = " ".join(f"--set {o}" for o in old.get("overrides") or [])
    restore = f"Rerun it with the --set values it ran with ({sets})" if sets else "Restore them"
    return (f"run {old['name']} stopped after epoch {epoch} and its hyper-parameters differ from this run's ("
            + ("; ".join(changed[:8]) or "unrecorded") + f"). {restore} to resume that run, "
            "or pass --new-run to leave it and start a new run with these settings.")


def record_identity(identity: RunIdentity, paths: RunPaths) -> None:
    folder = paths.ray_results / identity.name
    folder.mkdir(parents=True, exist_ok=True)
    # The first record's creation time survives every rewrite (status changes, resumes). A record written
    # before creation times were kept gets its file's mtime, the best guess left, before this write moves it.
    before = _read_identity(paths, identity.name)
    identity.created = (before or {}).get("created") or identity.created or (
        (folder / IDENTITY_FILE).stat().st_mtime if before is not None else time.time())
    tmp = folder / (IDENTITY_FILE + ".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(identity), indent=2))
    tmp.replace(folder / IDENTITY_FILE)  # atomic: a crash never leaves half a file


def last_checkpoint_epoch(run_dir: Path) -> int | None:
    """The epoch to resume at: from Ray's own record of persisted checkpoints (a checkpoint folder that
    a crash left half-copied is never in it), so a partial write is never resumed from."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    if not snapshot.exists():
        return None
    latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
    return completed_from_checkpoint_dir(latest["checkpoint_dir_name"]) if latest else None


def settle(identity: RunIdentity, paths: RunPaths, status: str) -> None:
    identity.status = status
    record_identity(identity, paths)
