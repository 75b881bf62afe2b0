"""flows.run.ray_runtime with a real local Ray, started once for the module as a pipeline starts it:
every socket its processes listen on is on loopback, the job API wants Ray's token, MLflow credentials
reach workers without entering the runtime_env Ray stores, and the pipeline's background shutdown.
Then the decisions that need no Ray, and the ephemeral Prefect API's address."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, clean_env
from flows.errors import UserError
from flows.run.ray_runtime import check_store_reaches, is_loopback, worker_env_vars

PASSWORD, URI_PASSWORD = "hunter2-secret", "pw-secret"
TRACKING_URI = f"http://u:{URI_PASSWORD}@127.0.0.1:1/"  # nothing contacts it here
# Processes of the local runtime that listen (by command line): Ray's GCS, raylet, dashboard (with the
# State and job API), autoscaler monitor (its metrics), the agents, a worker.
LISTENERS = ["gcs_server", "raylet", "dashboard.py", "monitor.py", "ray::DashboardAgent", "ray::RuntimeEnvAgent",
             "ray::IDLE"]

# In its own process: Ray reads its settings at import, which must follow flows.env.configure.
SCRIPT = """
import json, os, socket, sys, time
from pathlib import Path

from flows.env import configure

paths = configure(Path(sys.argv[1]))
from flows.run import ray_runtime

ray_runtime.init(paths)
import psutil
import ray
import requests
from ray.util.state import list_jobs


def listening(proc):
    return [[c.laddr.ip, c.laddr.port] for c in proc.net_connections("inet") if c.status == psutil.CONN_LISTEN]


def all_sockets():
    found = []
    for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            found += [[proc.pid, " ".join(proc.cmdline())[:200], *s] for s in listening(proc)]
        except psutil.NoSuchProcess:
            pass
    return found


@ray.remote
def in_worker():
    import torch.distributed as dist

    ray_runtime.store_on_loopback()  # what torch_config()'s backend runs in each training worker
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR=ray.util.get_node_ip_address(), MASTER_PORT=str(port))
    dist.init_process_group("gloo", init_method="env://", rank=0, world_size=1)  # as Ray Train's does
    sockets = listening(psutil.Process())
    dist.destroy_process_group()
    return {"env": {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI")},
            "sockets": sockets, "store_port": port, "runtime_env": ray.get_runtime_context().runtime_env}


out = {"worker": ray.get(in_worker.remote())}
deadline = time.monotonic() + 30  # the metrics endpoints open a while after ray.init returns
sockets = all_sockets()
while not all(any(p in s[1] for s in sockets) for p in json.loads(sys.argv[2])) and time.monotonic() < deadline:
    time.sleep(0.5)
    sockets = all_sockets()
out["sockets"] = sockets
dashboard = "http://" + ray._private.worker._global_node.webui_url
token = Path(os.environ["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
out["status"] = [requests.get(f"{dashboard}/api/jobs/", headers=h, timeout=30).status_code
                 for h in ({}, {"Authorization": f"Bearer {token}"})]
out["stored"] = repr(list_jobs(address=dashboard, detail=True)) + repr(ray.get_runtime_context().runtime_env)

first = ray.get_runtime_context().get_node_id()
ray_runtime.init(paths)  # again, as fit() inside a Tune trial does: the running runtime is kept
out["kept"] = ray.get(ray.remote(lambda: 1).remote()) == 1 and ray.get_runtime_context().get_node_id() == first
started = time.perf_counter()
ray_runtime.shutdown(wait=False)
out["returned_s"] = time.perf_counter() - started
# A stage that needs Ray again (a second training in the same process) must get a live runtime,
# not the one being stopped.
ray_runtime.init(paths)
out["fresh"] = ray.get(ray.remote(lambda: 41 + 1).remote()) == 42 and ray.get_runtime_context().get_node_id() != first
ray_runtime.shutdown()
out["still_up"] = ray.is_initialized()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> dict:
    """What SCRIPT saw, run with MLflow credentials in the environment."""
    home = tmp_path_factory.mktemp("runtime") / ".ganflow"
    env = {**clean_env(home), "MLFLOW_TRACKING_PASSWORD": PASSWORD, "MLFLOW_TRACKING_URI": TRACKING_URI}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(home.parent), json.dumps(LISTENERS)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_socket_of_the_local_runtime_is_on_loopback(runtime):
    sockets = runtime["sockets"]
    names = " ".join(name for _, name, _, _ in sockets)
    assert [p for p in LISTENERS if p not in names] == [], sockets  # each listens: the check below sees it
    assert [s for s in sockets if not is_loopback(s[2])] == []
    worker = runtime["worker"]  # a worker with a process group up: its TCPStore and gloo's listener
    assert runtime["worker"]["store_port"] in [port for _, port in worker["sockets"]] and len(worker["sockets"]) >= 3
    assert [s for s in worker["sockets"] if not is_loopback(s[0])] == []


def test_the_job_api_refuses_a_request_without_the_token(runtime):
    assert runtime["status"][0] in (401, 403) and runtime["status"][1] == 200


def test_credentials_reach_workers_but_not_the_runtime_env_ray_stores(runtime):
    assert runtime["worker"]["env"] == {"MLFLOW_TRACKING_PASSWORD": PASSWORD, "MLFLOW_TRACKING_URI": TRACKING_URI}
    stored = runtime["stored"] + json.dumps(runtime["worker"]["runtime_env"])
    assert "GANFLOW_HOME" in stored  # the forwarded settings are there to be seen
    assert PASSWORD not in stored and URI_PASSWORD not in stored


def test_a_background_shutdown_returns_at_once_and_a_later_init_gets_a_fresh_runtime(runtime):
    assert runtime["kept"]
    assert runtime["returned_s"] < 1.0  # the stop itself (~2 s) went on in the background
    assert runtime["fresh"] and not runtime["still_up"]


@pytest.mark.parametrize("ip, loopback", [("127.0.0.1", True), ("127.3.0.1", True), ("::1", True),
                                          ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("::", False),
                                          ("192.0.2.2", False), ("::ffff:192.0.2.2", False), ("localhost", False)])
def test_is_loopback(ip, loopback):
    assert is_loopback(ip) is loopback


def test_the_runtime_env_carries_no_credential():
    environ = {"MLFLOW_TRACKING_URI": TRACKING_URI, "MLFLOW_REGISTRY_URI": "https://h/reg?token=t0k",
               "MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": PASSWORD,
               "MLFLOW_TRACKING_TOKEN": "tok-secret", "GANFLOW_HOME": "/w/.ganflow"}
    assert worker_env_vars(environ) == {"MLFLOW_TRACKING_USERNAME": "u", "GANFLOW_HOME": "/w/.ganflow",
                                        "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
    plain = {"MLFLOW_TRACKING_URI": "http://mlflow.example:5000"}
    assert worker_env_vars(plain)["MLFLOW_TRACKING_URI"] == "http://mlflow.example:5000"  # a server is still named


LOCAL = {"127.0.0.1", "::1", "192.0.2.2"}


@pytest.mark.parametrize("uri", ["sqlite:////w/.ganflow/mlflow.db", "/w/mlruns", "file:///w/mlruns", "./mlruns", ""])
def test_a_file_store_with_nodes_on_other_machines_is_refused(uri):
    with pytest.raises(UserError) as err:
        check_store_reaches(["192.0.2.2", "198.51.100.7"], uri, LOCAL)
    message = str(err.value)
    assert "\n" not in message and "198.51.100.7" in message and "192.0.2.2" not in message
    assert "MLflow server" in message and "MLFLOW_TRACKING_URI" in message


@pytest.mark.parametrize("nodes, uri", [
    (["192.0.2.2", "127.0.0.1"], "sqlite:////w/.ganflow/mlflow.db"),  # every node on this machine
    (["198.51.100.7"], "http://mlflow.example:5000"),  # a server every node reaches
    (["198.51.100.7"], "postgresql://u:pw@db/mlflow"),
])
def test_a_store_every_node_reaches_is_accepted(nodes, uri):
    check_store_reaches(nodes, uri, LOCAL)


def test_the_refusal_masks_credentials():
    with pytest.raises(UserError) as err:
        check_store_reaches(["198.51.100.7"], "sqlite:////w/mlflow.db?password=sw0rdfish", LOCAL)
    assert "sw0rdfish" not in str(err.value)


def test_the_ephemeral_prefect_api_listens_on_loopback(monkeypatch):
    """The temporary Prefect server a run starts (flows.cli._boot_ephemeral_prefect): its uvicorn command,
    captured instead of started (starting it costs a test ~10 s on 2 cores)."""
    from prefect.server.api import server

    started = []
    monkeypatch.setattr(server.subprocess, "Popen", lambda args, **kw: started.append(args))
    server.SubprocessASGIServer(8999)._run_uvicorn_command()
    [args] = started
    assert args[args.index("--host") + 1] == "127.0.0.1" and "prefect.server.api.server:create_app" in args
