"""Retention: what a workspace keeps of its trainings and registered versions (params.yaml `retention`),
applied by `ganflow prune` and as the last step of every pipeline run, one function for both.

Kept, always: every version holding an alias (champion, challenger), the newest `keep_versions` versions
and the last `keep_versions` champions of the history (what `ganflow promote --rollback` returns to),
the training runs behind kept versions, the newest `keep_runs` training runs (so the latest one, which
resume and `--continue` read), and unfinished runs (the same command resumes them; `--new-run` abandons
them). Deleted, the rest:

* a version: deleted from the MLflow registry (MLflow 3 has no stages to archive to, and a version that
  stays registered keeps its weights), with its logged model: the weights, training state and code copy,
  nearly all of a version's bytes. Its run's metrics stay in the store while the run itself is kept.
* a training run: its Ray run folder (checkpoints), its sample pictures (`runs/<name>`), its MLflow run
  (deleted as MLflow deletes: hidden, restorable until `mlflow gc`) and that run's artifact files.
* Tune's experiment folders but the newest (a search is never resumed), and the local Ray runtime's old
  session folders (logs; the latest session is kept).

Files are removed only inside the run dir (and its local Ray temp dir); MLflow runs only of the
workspace's own experiment. With an MLflow server the versions, logged models and runs are deleted
through its API and the server's `mlflow gc` frees their artifacts."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from flows.env import RunPaths
from flows.params import Params
from flows.registry import history
from flows.registry.versions import VersionTags
from flows.run.identity import IDENTITY_FILE

KINDS = {"version": "version", "run": "training run", "mlflow-run": "MLflow run", "tune": "search folder",
         "ray-session": "Ray session"}
UNFINISHED = ("running", "failed")  # what the same command resumes (flows.run.identity.interrupted_runs)


@dataclass(frozen=True)
class Removal:
    kind: str  # a key of KINDS
    name: str
    detail: str
    bytes: int


@dataclass
class Pruned:
    keep_versions: int | None
    keep_runs: int | None
    dry_run: bool
    removed: list[Removal] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(r.bytes for r in self.removed)

    def summary(self) -> str:
        """One line: what was (or would be) removed and the bytes freed."""
        counts = {label: sum(r.kind == k for r in self.removed) for k, label in KINDS.items()}
        what = ", ".join(f"{n} {label}{'s' * (n != 1)}" for label, n in counts.items() if n) or "nothing"
        verb = "would remove" if self.dry_run else "removed"
        return (f"retention (keep_versions={self.keep_versions}, keep_runs={self.keep_runs}, aliased versions "
                f"always): {verb} {what}; {'would free' if self.dry_run else 'freed'} {_mb(self.freed)}")

    def report(self) -> str:
        return "\n".join([*(f"  {KINDS[r.kind]} {r.name}: {r.detail} ({_mb(r.bytes)})" for r in self.removed),
                          self.summary()])

    def as_dict(self) -> dict:
        return {"summary": self.summary(), "freed_bytes": self.freed, "dry_run": self.dry_run,
                "removed": [f"{KINDS[r.kind]} {r.name}" for r in self.removed]}


def prune(paths: RunPaths, params: Params, dry_run: bool = False) -> Pruned:
    """Apply params.retention to the workspace's registered model and run dir. Call holding the workspace
    (flows.env.hold_workspace): no training may write while its runs are judged."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    policy = params.retention
    out = Pruned(policy.keep_versions, policy.keep_runs, dry_run)
    experiment = client.get_experiment_by_name(params.experiment)
    ours = {experiment.experiment_id} if experiment is not None else set()

    versions = _versions(client, params.model_name)
    aliased = {str(v) for v in client.get_registered_model(params.model_name).aliases.values()} if versions else set()
    newest = sorted(versions, key=int, reverse=True)
    # The champions `promote --rollback` would return to, newest first: as many as versions are kept.
    path = [v for v in history.lineage(history.read(client, params.model_name))[::-1] if v in versions] \
        if versions else []  # a deleted one is no rollback target
    keep = (lambda vs: vs) if policy.keep_versions is None else (lambda vs: vs[:policy.keep_versions])
    kept_v = set(keep(newest)) | set(keep(path)) | aliased
    protected_runs = {VersionTags.read(versions[v].tags).ray_run for v in kept_v}

    records = _run_records(paths, params.data.name)  # newest first
    # A training run is one MLflow run: a Tune trial's segments (a Ray folder each) count once.
    runs = list(dict.fromkeys(_run_of(rec) for rec in records))  # newest first
    kept_runs = set(runs if policy.keep_runs is None else runs[:policy.keep_runs])
    kept_r = {rec["name"] for rec in records
              if _run_of(rec) in kept_runs or rec["name"] in protected_runs
              or (not rec.get("trial") and rec.get("status", "finished") in UNFINISHED)}
    protected_mlflow = {versions[v].run_id for v in kept_v} | {rec.get("mlflow_run_id") for rec in records
                                                               if rec["name"] in kept_r}
    recorded_mlflow = {rec.get("mlflow_run_id") for rec in records}

    for v in (v for v in newest if v not in kept_v):
        mv = versions[v]
        folder = _local(_logged_model_uri(client, mv), paths)
        size = _size(folder)
        if not dry_run and not _delete_version(client, params.model_name, v, folder, paths):
            continue  # it took an alias meanwhile (a promotion): kept
        out.removed.append(Removal("version", f"{params.model_name}/{v}",
                                   "deleted from the registry with its weights and training state", size))
        if mv.run_id not in protected_mlflow | recorded_mlflow:
            # its training run left no folder here (registered by hand or elsewhere, or the run dir was reset)
            _delete_run(client, mv.run_id, ours, paths, dry_run, out, detail_of=f"{params.model_name}/{v}")

    for rec in records:
        if rec["name"] in kept_r:
            continue
        name = rec["name"]
        dirs = [paths.ray_results / name, paths.home / "runs" / name]
        out.removed.append(Removal("run", name, f"{rec.get('status', 'finished')}: checkpoints, pictures",
                                   sum(_size(d) for d in dirs)))
        if not dry_run:
            for d in dirs:
                _remove(d, paths)
        run_id = rec.get("mlflow_run_id")
        if run_id and run_id not in protected_mlflow:
            _delete_run(client, run_id, ours, paths, dry_run, out, detail_of=name)

    for folder in _all_but_newest(list((paths.ray_results / "tune").glob("tune-*"))):
        out.removed.append(Removal("tune", folder.name, "a finished search's trial folders", _size(folder)))
        if not dry_run:
            _remove(folder, paths)

    for folder in _old_ray_sessions(paths):
        out.removed.append(Removal("ray-session", folder.name, "an earlier local Ray runtime's logs", _size(folder)))
        if not dry_run:
            _remove(folder, paths)
    return out


def _versions(client, name: str) -> dict[str, object]:
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return {}  # no such model yet
    return {str(mv.version): mv for mv in found}


def _delete_version(client, name: str, version: str, folder: Path | None, paths: RunPaths) -> bool:
    """Delete one version (never one holding an alias, read again just before) and its logged model."""
    mv = client.get_model_version(name, version)
    if mv.aliases or version in {str(v) for v in client.get_registered_model(name).aliases.values()}:
        return False
    client.delete_model_version(name, version)
    model_id = _model_id(mv)
    if model_id:
        client.delete_logged_model(model_id)
    if folder is not None:
        _remove(folder, paths)
    return True


def _delete_run(client, run_id: str, ours: set[str], paths: RunPaths, dry_run: bool, out: Pruned,
                detail_of: str) -> None:
    """An MLflow run of the workspace's own experiment, and its artifact files when they are in the run dir."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        return  # gone already
    if run.info.experiment_id not in ours or run.info.lifecycle_stage == "deleted":
        return
    folder = _local(run.info.artifact_uri, paths)
    folder = folder.parent if folder is not None and folder.name == "artifacts" else folder
    out.removed.append(Removal("mlflow-run", run_id, f"the MLflow run of {detail_of} and its files",
                               _size(folder)))
    if not dry_run:
        client.delete_run(run_id)
        if folder is not None:
            _remove(folder, paths)


def _model_id(mv) -> str | None:
    """The logged model a version was registered from (MLflow 3); searches leave `model_id` empty on some
    stores, the source `models:/m-<id>` names it too."""
    source = mv.source or ""
    return getattr(mv, "model_id", None) or (source[len("models:/"):] if source.startswith("models:/m-") else None)


def _logged_model_uri(client, mv) -> str | None:
    model_id = _model_id(mv)
    if not model_id:
        return None
    try:
        return client.get_logged_model(model_id).artifact_location
    except Exception:  # noqa: BLE001 - deleted already: nothing of it to count or remove
        return None


def _local(uri: str | None, paths: RunPaths) -> Path | None:
    """The folder an artifact URI names when it is a local one inside the run dir (the logged model's
    folder, not just its `artifacts/`), else None: nothing outside the run dir is removed."""
    if not uri or urlparse(uri).scheme not in ("", "file"):
        return None
    path = Path(unquote(urlparse(uri).path)).resolve()
    if path.name == "artifacts" and path.parent.name.startswith("m-"):
        path = path.parent  # MLflow 3's logged model: models/m-<id>/artifacts
    return path if path.is_relative_to(paths.home.resolve()) and path != paths.home.resolve() else None


def _run_of(rec: dict) -> str:
    return rec.get("mlflow_run_id") or rec["name"]


def _run_records(paths: RunPaths, dataset: str) -> list[dict]:
    """The training runs of this dataset (Tune trials included; another dataset's runs belong to its own
    model's policy), newest first by when they were created, as their record keeps it (mtime moves with
    every status change, a copy or a backup restore)."""
    found = []
    for path in paths.ray_results.glob(f"{dataset}-*/{IDENTITY_FILE}"):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # not one of ours, or half written: left alone
        trained_on = rec.get("params", {}).get("data", {}).get("name", dataset)  # digits-x-... is not digits
        if rec.get("name") == path.parent.name and trained_on == dataset:
            # A record from before creation times were kept, never rewritten since: its mtime is all there is.
            found.append((rec.get("created") or path.stat().st_mtime, rec))
    return [rec for _, rec in sorted(found, key=lambda t: t[0], reverse=True)]


def _all_but_newest(folders: list[Path]) -> list[Path]:
    return sorted(folders, key=lambda p: p.stat().st_mtime)[:-1]


def _old_ray_sessions(paths: RunPaths) -> list[Path]:
    """The local Ray runtime's session folders but the latest (a cluster's are its own)."""
    if os.environ.get("RAY_ADDRESS") or not paths.ray_temp.is_dir():
        return []
    latest = paths.ray_temp / "session_latest"
    current = latest.resolve() if latest.is_symlink() else None
    return [p for p in sorted(paths.ray_temp.glob("session_2*"))
            if p.is_dir() and not p.is_symlink() and p.resolve() != current]


def _remove(path: Path, paths: RunPaths) -> None:
    roots = (paths.home.resolve(), paths.ray_temp.resolve())
    target = path.resolve()
    if not any(target.is_relative_to(r) and target != r for r in roots):
        raise RuntimeError(f"retention refused to remove {path}: outside the run dir")
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _size(path: Path | None) -> int:
    if path is None or not path.exists():
        return 0
    if path.is_file():
        return path.lstat().st_size
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, files in os.walk(path) for f in files)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
