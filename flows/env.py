"""Where every tool keeps its state: inside the workspace's run directory unless the user points
elsewhere (RAY_ADDRESS, MLFLOW_TRACKING_URI, PREFECT_API_URL, a DVC remote). Call `configure`
before importing Prefect or MLflow, since both read their settings at import."""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flows.errors import UserError

# Unix socket paths must stay under 107 bytes; the longest Ray makes adds ~67 to its temp dir
# (session_<date>_<time>_<pid>/sockets/dash_MetricsHead).
_RAY_TEMP_MAX = 36


RUN_DIR = ".ganflow"  # the run directory's name in a workspace (GANFLOW_HOME may put it elsewhere)


@dataclass(frozen=True)
class RunPaths:
    workspace: Path
    home: Path  # the run directory: RUN_DIR in the workspace unless GANFLOW_HOME says otherwise

    @property
    def last_pipeline(self) -> Path:
        """The last `ganflow pipeline`'s summary (JSON), for scripts and benchmarks."""
        return self.home / "last_pipeline.json"

    @property
    def ray_results(self) -> Path:
        return self.home / "ray_results"

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def dvc_remote(self) -> Path:
        return self.home / "dvc-remote"

    @property
    def ray_temp(self) -> Path:
        preferred = self.home / "ray"
        if len(str(preferred)) <= _RAY_TEMP_MAX:
            return preferred
        # Too long for Ray's sockets: a short, stable, per-run-dir folder under the system temp.
        digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"ganflow-ray-{digest}"


def configure(workspace: Path) -> RunPaths:
    workspace = workspace.resolve()
    home = Path(os.environ.get("GANFLOW_HOME") or workspace / RUN_DIR).resolve()
    home.mkdir(parents=True, exist_ok=True)
    paths = RunPaths(workspace, home)
    defaults = {
        "PREFECT_HOME": str(home / "prefect"),
        # The first ephemeral Prefect API in a fresh PREFECT_HOME migrates its database (>20 s).
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_TRACKING_URI": f"sqlite:///{paths.mlflow_db}",
        "RAY_USAGE_STATS_ENABLED": "0",
        # Ray Train V2 waits one health-check interval per report: 2 s by default.
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
        "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",  # the patch echoes each worker print twice
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # An MLflow server that dies mid-run is noticed in ~10 s (3 retries after 1, 2, 4 s), not after
        # MLflow's default ~4 minutes of retries (7, factor 2) and 120 s request timeout.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(home / "dvc-site-cache"),
        "GIT_PYTHON_REFRESH": "quiet",
    }
    if not sys.stdout.isatty():
        defaults["RAY_COLOR_PREFIX"] = "0"  # Ray's worker-line prefixes: no escape codes in a log file
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    if Path(os.environ["PREFECT_HOME"]).resolve().is_relative_to(home):  # a PREFECT_HOME of the user's: theirs
        _prefect_profile(Path(os.environ["PREFECT_HOME"]))
    if not os.environ.get("RAY_ADDRESS"):
        # A local Ray cluster's auth token lives in the run dir, not in ~/.ray (a cluster brings its own).
        os.environ.setdefault("RAY_AUTH_TOKEN_PATH", str(_ray_token(home)))
        # Ray's single-machine mode (its default on macOS and Windows): the node's address is 127.0.0.1 and
        # every Ray process (GCS, raylet, workers, agents, metrics) binds it; Ray reads it at import.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    elif os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        # Ray sends a token to an explicit address only with RAY_AUTH_MODE=token; without it a token
        # cluster just says "Failed to connect". A token the user gave means: use it.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ["GANFLOW_HOME"] = str(home)
    return paths


# Each process that uses the ephemeral API (a run, `serve`, an operator's `prefect` command with this
# PREFECT_HOME) runs its own temporary server on the one database. Prefect keeps concurrency leases in the
# server's memory by default, so one server revoked the deployment slot another had granted (seen: both of
# two overlapping runs cancelled). On disk in PREFECT_HOME they are shared. A profile, not only our own
# environment, so that the operator's `prefect` commands use it too.
LEASES = "prefect.server.concurrency.lease_storage.filesystem"


def _prefect_profile(prefect_home: Path) -> None:
    path = prefect_home / "profiles.toml"
    if not path.exists():
        prefect_home.mkdir(parents=True, exist_ok=True)
        # Prefect's default profile (ephemeral API) plus the shared leases.
        path.write_text('active = "ephemeral"\n\n[profiles.ephemeral]\nPREFECT_SERVER_EPHEMERAL_ENABLED = "true"\n'
                        f'PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE = "{LEASES}"\n')


def _ray_token(home: Path) -> Path:
    path = home / "ray_auth_token"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path


def local_mlflow() -> bool:
    return os.environ.get("MLFLOW_TRACKING_URI", "").startswith("sqlite:")


# One run at a time per workspace: a second pipeline or search would train into the same Ray run folder
# and register the same training twice. Held for the whole command (and by the flow itself, so scheduled
# runs of `ganflow serve` hold it too); re-entrant within a process, refused at once across processes.
_HELD: dict[Path, list] = {}


@contextmanager
def hold_workspace(paths: RunPaths, what: str):
    from filelock import FileLock, Timeout

    path = paths.home / "run.lock"
    if path in _HELD:  # the CLI took it already; the flow in the same process re-enters
        _HELD[path][1] += 1
        try:
            yield
        finally:
            _HELD[path][1] -= 1
        return
    paths.home.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    holder = paths.home / "run.lock.json"
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if _holder(holder).get("what") != WATCHDOG:
                raise
            lock.acquire(timeout=60)  # a finished run's watchdog, ending what that run started: seconds
    except Timeout:
        info = _holder(holder)
        who = f" ({info['what']}, pid {info['pid']}, since {info['since']})" if info else ""
        raise UserError(f"another ganflow run is using workspace {paths.workspace}{who}: wait for it to finish "
                        "(one run per workspace: two would train into one run folder)") from None
    _HELD[path] = [lock, 1]
    holder.write_text(json.dumps({"what": what, "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
    try:
        yield
    finally:
        del _HELD[path]
        holder.unlink(missing_ok=True)
        lock.release()


def _holder(path: Path) -> dict:
    try:
        info = json.loads(path.read_text())
        return info if {"what", "pid", "since"} <= info.keys() else {}
    except (OSError, ValueError, AttributeError):
        return {}


# Processes a run starts (the ephemeral Prefect server, the local Ray head's processes) are recorded by
# process id and start time. When the run ends, however it ends, its watchdog (flows/watchdog.py) ends
# exactly those; should the watchdog be killed too, the next run on the workspace does (never by name:
# another workspace's Ray or Prefect must survive).
CHILDREN = "children.json"
WATCHDOG = "ganflow watchdog"  # what the watchdog holds the workspace as


def record_children(paths: RunPaths, pids: list[int]) -> None:
    import psutil

    path = paths.home / CHILDREN
    entries = json.loads(path.read_text()) if path.exists() else []
    for pid in pids:
        try:
            entries.append({"pid": pid, "started": psutil.Process(pid).create_time()})
        except psutil.NoSuchProcess:
            pass
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries))
    tmp.replace(path)


def reap_children(paths: RunPaths) -> int:
    """End what an earlier run on this workspace left running (call holding the workspace lock, so that
    run is over); a process counts only if its id and start time both match. Returns how many ended."""
    import psutil

    path = paths.home / CHILDREN
    found = []
    for entry in json.loads(path.read_text()) if path.exists() else []:
        try:
            proc = psutil.Process(entry["pid"])
            if abs(proc.create_time() - entry["started"]) < 0.01:  # the same process, not a reused id
                found += [*proc.children(recursive=True), proc]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    # Ray's agents start after the head and outlive the raylet that spawned them; every process of this
    # workspace's local Ray names its session folder, which lives in this run dir's Ray temp dir.
    # Agents retitle themselves (`ray::DashboardAgent`): for those, their open log files name the folder.
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.pid == os.getpid() or proc in found:
            continue
        try:
            ours = any(_names_folder(arg, paths.ray_temp) for arg in cmdline) or (
                bool(cmdline) and cmdline[0].startswith("ray::")
                and any(_inside(f.path, paths.ray_temp) for f in proc.open_files()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if ours:
            found.append(proc)
    end(found)
    path.unlink(missing_ok=True)
    if found:
        print(f"Ended {len(found)} process(es) an earlier run on this workspace left running (it was killed)")
    return len(found)


def _names_folder(arg: str, folder: Path) -> bool:
    """Whether a command-line argument (`--session-dir=/x/ray/session_...`, or a bare path) names a path
    inside `folder`; a neighbour such as /x/ray2 or /x/ray-old merely starts with the same text."""
    return any(_inside(token.strip("'\",[]"), folder) for token in arg.replace("=", " ").split())


def _inside(path: str, folder: Path) -> bool:
    """`folder` itself or a path under it, compared by whole path components."""
    return path.startswith("/") and Path(os.path.normpath(path)).is_relative_to(folder)


def end(procs: list) -> None:
    """SIGTERM, then SIGKILL what is left after 10 s. psutil checks each is still the process it was
    (id and start time) before signalling it."""
    import psutil

    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
