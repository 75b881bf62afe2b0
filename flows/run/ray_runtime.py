"""One Ray runtime per process: a local one under the run dir, or the cluster named by RAY_ADDRESS."""
from __future__ import annotations

import importlib
import ipaddress
import logging
import os
import socket
import threading
from urllib.parse import urlsplit

from flows.env import RunPaths, record_children
from flows.errors import UserError
from flows.servers import redact

# Forwarded to every Ray worker, also on a remote cluster where the driver's environment is absent,
# unless the value carries a credential (below).
_FORWARD = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
            "MLFLOW_HTTP_REQUEST_TIMEOUT", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
            "RAY_TRAIN_ENABLE_PRINT_PATCH", "RAY_USAGE_STATS_ENABLED", "GANFLOW_HOME")
# Never in the runtime_env: Ray stores it in clear (GCS, the dashboard's job pages, the State API).
# The local runtime's workers inherit them with the rest of the driver's environment (its raylet is
# this process's child); a remote cluster's workers take them from the cluster's own environment.
_CREDENTIALS = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")

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
    address = os.environ.get("RAY_ADDRESS")
    if address:
        _connect(address)
    else:
        _start_local(paths)


def _connect(address: str) -> None:
    import ray

    print(f"Ray: connecting to the cluster at {address}")
    env_vars = worker_env_vars(dict(os.environ))
    withheld = sorted(k for k in (*_FORWARD, *_CREDENTIALS) if k in os.environ and k not in env_vars)
    if withheld:
        print(f"Ray: not sending {', '.join(withheld)} to the cluster (credentials): its workers take them "
              "from the cluster's own environment")
    ray.init(address=address, runtime_env={"env_vars": env_vars}, log_to_driver=True)
    _check_cluster_store()


def _start_local(paths: RunPaths) -> None:
    import ray

    env_vars = worker_env_vars(dict(os.environ))
    env_vars.update({k: os.environ.get(k, v) for k, v in _loopback_interfaces().items()})
    paths.ray_temp.mkdir(parents=True, exist_ok=True)
    # Every local process binds loopback: flows.env.configure turned Ray's single-machine mode on, which
    # also makes the node's address 127.0.0.1; the dashboard also serves Ray's State API.
    ctx = ray.init(_temp_dir=str(paths.ray_temp), _node_ip_address="127.0.0.1", include_dashboard=True,
                   dashboard_host="127.0.0.1", logging_level=logging.WARNING,
                   runtime_env={"env_vars": env_vars}, log_to_driver=True)
    node = ray._private.worker._global_node  # the head this process started: its processes are ours
    record_children(paths, [info.process.pid for infos in node.all_processes.values() for info in infos
                            if info.process is not None])
    if not is_loopback(node.node_ip_address):  # Ray read its settings at import, before configure set them
        ray.shutdown()
        raise RuntimeError(f"the local Ray runtime came up on {node.node_ip_address}, not loopback: "
                           "import ray only after flows.env.configure()")
    print(f"Ray: local runtime, dashboard at http://{ctx.dashboard_url}")


def worker_env_vars(environ: dict[str, str]) -> dict[str, str]:
    """What goes into the runtime_env's env_vars: the forwarded settings, none carrying a credential."""
    env_vars = {k: environ.get(k, v) for k, v in _DEFAULTS.items()}
    env_vars.update({k: environ[k] for k in _FORWARD if k in environ and redact(environ[k]) == environ[k]})
    return env_vars


def _loopback_interfaces() -> dict[str, str]:
    """Torch's gloo and NCCL listen on the interface these name (default: the hostname's address or the
    first network interface); the local runtime's training workers talk over loopback."""
    import psutil

    names = [name for name, addrs in psutil.net_if_addrs().items()
             if any(a.family == socket.AF_INET and is_loopback(a.address) for a in addrs)]
    return {"GLOO_SOCKET_IFNAME": names[0], "NCCL_SOCKET_IFNAME": names[0]} if names else {}


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, and IPv4-mapped loopback (`::ffff:127.0.0.1`, as Ray's gRPC servers report it)."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:  # a host name: not known to be loopback
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def torch_config():
    """Ray Train's torch backend for TorchTrainer, whose rank 0 hosts the process group's TCPStore on
    loopback when its address is loopback (the local runtime): torch binds that server to every
    interface whatever address it is given."""
    from ray.train.torch import TorchConfig
    from ray.train.torch.config import _TorchBackend

    class LoopbackBackend(_TorchBackend):
        def on_start(self, worker_group, backend_config):
            worker_group.execute(store_on_loopback)
            super().on_start(worker_group, backend_config)

    class LoopbackTorchConfig(TorchConfig):
        @property
        def backend_cls(self):
            return LoopbackBackend

    return LoopbackTorchConfig()


def store_on_loopback() -> None:
    """In a training worker, before its process group starts: the TCPStore server that rank 0 starts
    for a loopback master address listens on a socket bound to that address (torch's own binds `::`)."""
    from torch.distributed import TCPStore

    rendezvous = importlib.import_module("torch.distributed.rendezvous")  # the module, not its namesake function
    create = rendezvous._create_c10d_store
    if getattr(create, "loopback", False):
        return

    def create_store(hostname, port, rank, world_size, timeout, use_libuv=True):
        if rank != 0 or not is_loopback(hostname) or rendezvous._torchelastic_use_agent_store():
            return create(hostname, port, rank, world_size, timeout, use_libuv)
        listener = socket.create_server((hostname, port))
        return TCPStore(host_name=hostname, port=port, world_size=world_size, is_master=True, timeout=timeout,
                        multi_tenant=True, use_libuv=use_libuv, master_listen_fd=listener.detach())

    create_store.loopback = True
    rendezvous._create_c10d_store = create_store


# A file store is a path on the driver's machine; workers on other machines would write their own copy
# of it, or one SQLite file over a shared mount, which SQLite's locking does not survive.
_FILE_STORES = ("", "file", "sqlite")


def check_store_reaches(nodes: list[str], tracking_uri: str, local: set[str]) -> None:
    """Refuse an MLflow store that is a file on this machine when the cluster has nodes elsewhere.
    nodes: the cluster's node addresses; local: this machine's addresses."""
    if urlsplit(tracking_uri).scheme.lower() not in _FILE_STORES:
        return
    remote = sorted(n for n in nodes if n not in local and not is_loopback(n))
    if remote:
        raise UserError(f"MLFLOW_TRACKING_URI={redact(tracking_uri) or '(unset)'} is a file on this machine, but the "
                        f"Ray cluster has nodes on other machines ({', '.join(remote)}) that cannot write it: run "
                        "an MLflow server (`mlflow server`) and set MLFLOW_TRACKING_URI to its http:// address")


def _check_cluster_store() -> None:
    import psutil
    import ray

    nodes = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
    local = {a.address.split("%", 1)[0] for addrs in psutil.net_if_addrs().values() for a in addrs}
    try:
        check_store_reaches(nodes, os.environ.get("MLFLOW_TRACKING_URI", ""), local)
    except UserError:
        ray.shutdown()
        raise


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
