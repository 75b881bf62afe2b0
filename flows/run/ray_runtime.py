"""One Ray runtime per process: a local one under the run dir, or the cluster named by RAY_ADDRESS."""
from __future__ import annotations

import logging
import os
import threading

from flows.env import RunPaths, record_children

# Forwarded to every Ray worker, also on a remote cluster where the driver's environment is absent.
# Credentials too (an authenticated MLflow server); ganflow never prints them.
_FORWARD = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
            "MLFLOW_TRACKING_TOKEN", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
            "MLFLOW_HTTP_REQUEST_TIMEOUT", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
            "RAY_TRAIN_ENABLE_PRINT_PATCH", "RAY_USAGE_STATS_ENABLED", "GANFLOW_HOME")

# Set for every Ray worker unless the caller's environment sets them (then theirs is forwarded).
# Ray Train's preemption watcher is an actor with max_restarts=-1 whose constructor takes the
# training workers' actor handles; Ray core logs an "E ... core_worker.cc" line for any restartable
# actor with object references (actor handles too) in its arguments: a false alarm on every fit().
# The watcher only gives early notice of a node drain (spot preemption), which ganflow does not use:
# a worker lost with its node is still detected and restarted from the last checkpoint.
_DEFAULTS = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


_stopping: threading.Thread | None = None  # a shutdown(wait=False) still running


def init(paths: RunPaths) -> None:
    import ray

    _join_stopping()  # a background shutdown first, or this process would keep using a dying runtime
    if ray.is_initialized():
        return
    env_vars = {k: os.environ.get(k, v) for k, v in _DEFAULTS.items()}
    env_vars.update({k: os.environ[k] for k in _FORWARD if k in os.environ})
    address = os.environ.get("RAY_ADDRESS")
    kwargs: dict = {"runtime_env": {"env_vars": env_vars}, "log_to_driver": True}
    if address:
        print(f"Ray: connecting to the cluster at {address}")
        ray.init(address=address, **kwargs)
    else:
        paths.ray_temp.mkdir(parents=True, exist_ok=True)
        # Everything local binds the loopback interface; the dashboard also serves Ray's State API.
        ctx = ray.init(_temp_dir=str(paths.ray_temp), _node_ip_address="127.0.0.1", include_dashboard=True,
                       dashboard_host="127.0.0.1", logging_level=logging.WARNING, **kwargs)
        print(f"Ray: local runtime, dashboard at http://{ctx.dashboard_url}")
        node = ray._private.worker._global_node  # the head this process started: its processes are ours
        record_children(paths, [info.process.pid for infos in node.all_processes.values() for info in infos
                                if info.process is not None])


def gpus_available() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def shutdown(wait: bool = True) -> None:
    """Stop the local runtime (~2 s) or disconnect from the cluster. wait=False: in the background,
    while later stages that need no Ray run; a later shutdown() or init() waits for it."""
    global _stopping
    import ray

    if _stopping is None and ray.is_initialized():
        _stopping = threading.Thread(target=ray.shutdown, name="ray-shutdown", daemon=True)
        _stopping.start()
    if wait:
        _join_stopping()


def _join_stopping() -> None:
    global _stopping
    if _stopping is not None:
        _stopping.join()
        _stopping = None
