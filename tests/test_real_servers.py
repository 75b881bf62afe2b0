"""Configuration only, no code change: the same `ganflow pipeline` against real servers.

scripts/real_servers.sh starts, on 127.0.0.1 with state in tmp_path: a 2-node Ray cluster (1 CPU per
node, token auth), an `mlflow server` and a `prefect server start`. ONE pipeline runs with RAY_ADDRESS,
MLFLOW_TRACKING_URI and PREFECT_API_URL set; then we check what each server recorded, serve the
deployment against the Prefect server, and move the data through a second DVC remote into a clone."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import BIN, ROOT, clean_env

pytestmark = [pytest.mark.integration, pytest.mark.servers]

SCRIPT = ROOT / "scripts" / "real_servers.sh"
TINY = ["--set", "train.epochs=2", "--set", "classifier.epochs=2", "--set", "eval.num_samples=200",
        "--set", "train.checkpoint_every=1", "--set", "train.num_workers=2", "--set", "train.cpus_per_worker=1"]
GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session(sid: int) -> list[int]:
    """Every live process in session `sid` (one we started with start_new_session=True)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def _stop(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the session leader (it stops what it started), then SIGKILL whatever is left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    for _ in range(3):
        left = _session(proc.pid)
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    if proc.poll() is None:
        proc.wait(timeout=10)


def _tail(path: Path, n: int = 3000) -> str:
    return f"\n--- {path.name} ---\n{path.read_text(errors='replace')[-n:]}" if path.exists() else ""


@pytest.fixture
def servers(tmp_path: Path):
    """The servers of scripts/real_servers.sh; yields the client variables it prints and its ports."""
    state = tmp_path / "servers"
    ray_tmp = Path(tempfile.mkdtemp(prefix="gfr", dir="/tmp"))  # short: Ray's socket paths
    ports = {name: _free_port() for name in ("RAY_PORT", "RAY_DASHBOARD_PORT", "MLFLOW_PORT", "PREFECT_PORT")}
    env = clean_env(tmp_path / "server-home")
    env.update({k: str(v) for k, v in ports.items()}, GANFLOW_RAY_TMP=str(ray_tmp), GANFLOW_BIN=str(BIN))
    log = tmp_path / "real_servers.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", str(SCRIPT), str(state)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    logs = lambda: "".join(_tail(p) for p in [log, *sorted(state.glob("*.log"))])  # noqa: E731
    try:
        deadline = time.time() + 300
        while not (state / "env.sh").exists():
            assert proc.poll() is None, f"real_servers.sh exited {proc.returncode}{logs()}"
            assert time.time() < deadline, f"servers not up after 300 s{logs()}"
            time.sleep(1)
        variables = {}
        for line in (state / "env.sh").read_text().splitlines():
            for assignment in line.removeprefix("export ").split():
                key, value = assignment.split("=", 1)
                variables[key] = value
        yield {"vars": variables, "ports": ports, "state": state, "logs": logs}
    finally:
        _stop(proc, grace=60)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _run(args: list[str], env: dict, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_pipeline_on_real_servers(fresh_workspace: Path, servers, tmp_path: Path):
    workspace = fresh_workspace  # no run dir: what it holds afterwards is checked below
    v, ports = servers["vars"], servers["ports"]
    assert v["RAY_ADDRESS"] == f"127.0.0.1:{ports['RAY_PORT']}"
    assert v["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{ports['MLFLOW_PORT']}"
    assert v["PREFECT_API_URL"] == f"http://127.0.0.1:{ports['PREFECT_PORT']}/api"
    home = workspace / ".ganflow"

    # The Ray CLI needs the cluster's token and RAY_AUTH_MODE=token (Ray 2.60 token authentication).
    ray_env = {**clean_env(tmp_path / "ray-cli"), **{k: v[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}}
    dashboard = f"http://127.0.0.1:{ports['RAY_DASHBOARD_PORT']}"

    def ray_list(*what: str) -> list[dict]:
        proc = _run([str(BIN / "ray"), "list", *what, "--address", dashboard, "--format", "json"], ray_env, tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout)

    # 1. A 2-node cluster, 1 CPU each; the second node carries its own resource.
    nodes = ray_list("nodes")
    alive = [n for n in nodes if n["state"] == "ALIVE"]
    assert len(alive) == 2, nodes
    assert [n["resources_total"].get("CPU") for n in alive] == [1.0, 1.0]
    assert sum("node2" in n["resources_total"] for n in alive) == 1

    # ONE pipeline, configured only by the environment. RAY_AUTH_MODE is left out on purpose: a token
    # path next to RAY_ADDRESS is enough for ganflow (flows/env.py turns token mode on).
    env = clean_env(home)
    env.update({k: val for k, val in v.items() if k != "RAY_AUTH_MODE"})
    started = time.perf_counter()
    proc = _run([str(BIN / "ganflow"), "pipeline", *TINY, "--workspace", str(workspace)], env, workspace, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:] + servers["logs"]()
    print(f"pipeline against the servers: {time.perf_counter() - started:.0f} s")
    assert f"Ray: connecting to the cluster at {v['RAY_ADDRESS']}" in out
    assert "Registered ganflow-digits version 1: models:/ganflow-digits/1" in proc.stdout
    assert "epoch 2/2" in out
    summary = json.loads((home / "last_pipeline.json").read_text())
    # Nothing embedded was used: no SQLite MLflow store, no ephemeral Prefect database, no local Ray.
    assert not (home / "mlflow.db").exists()
    assert not list(home.glob("prefect/*.db"))
    assert not (home / "ray").exists() and not (home / "ray_auth_token").exists()

    # 1 (cont.). Two training workers of 1 CPU each: one ran on each node.
    workers = ray_list("actors", "--detail", "--filter", "class_name=RayTrainWorker")
    assert {w["node_id"] for w in workers} == {n["node_id"] for n in alive}, workers

    # 2. MLflow server: the version with its tags, per-epoch metrics logged by the rank-0 Ray worker
    # (it got MLFLOW_TRACKING_URI through flows/run/ray_runtime.py), artifacts proxied into the server's store.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=v["MLFLOW_TRACKING_URI"], registry_uri=v["MLFLOW_TRACKING_URI"])
    mv = client.get_model_version("ganflow-digits", "1")
    assert mv.tags["data_version"] == summary["data_version"]
    assert mv.tags["ray_run"] == summary["ray_run"] and "eval.fd" in mv.tags
    assert client.get_registered_model("ganflow-digits").aliases.get("champion") == "1"
    run = client.get_run(mv.run_id)
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert {"ganflow.data_version", "ganflow.git_sha", "ganflow.config_hash"} <= set(run.data.tags)
    assert [m.step for m in client.get_metric_history(mv.run_id, "loss_d")] == [0, 1]
    images = {a.path for a in client.list_artifacts(mv.run_id, "images")}
    assert {"images/samples.png", "images/training_curves.png"} <= images
    # The worker on the cluster logged a sample grid at each checkpoint (every epoch here) to the server.
    assert {p.split("+step+")[1].split("+")[0] for p in images if p.startswith("images/training_samples+step+")
            and p.endswith(".png")} == {"1", "2"}, images
    assert any(p.name == "generator.pt" for p in (servers["state"] / "mlflow" / "artifacts").rglob("*"))

    # ... and the registered version loads in a new process, elsewhere, from the server alone.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sample_env = {**clean_env(elsewhere / ".ganflow"), "MLFLOW_TRACKING_URI": v["MLFLOW_TRACKING_URI"]}
    npy = elsewhere / "s.npy"
    proc = _run([str(BIN / "ganflow"), "sample", "--model", "models:/ganflow-digits/1", "-n", "16",
                 "--out", str(npy), "--workspace", str(elsewhere)], sample_env, elsewhere)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    arr = np.load(npy)
    assert arr.shape == (16, 1, 8, 8) and arr.min() >= -1 and arr.max() <= 1 and arr.std() > 0

    # 3. Prefect server: the flow run is recorded there, Completed. (`prefect flow-run ls` of Prefect
    # 3.8.8 sends limit=null, which this server rejects: the client with explicit limit and sort.)
    prefect_env = {**clean_env(tmp_path / "prefect-cli"), "PREFECT_API_URL": v["PREFECT_API_URL"],
                   "PREFECT_HOME": str(tmp_path / "prefect-cli")}
    code = ("import json\n"
            "from prefect.client.orchestration import get_client\n"
            "from prefect.client.schemas.filters import FlowFilter, FlowFilterName\n"
            "from prefect.client.schemas.sorting import FlowRunSort\n"
            "with get_client(sync_client=True) as c:\n"
            "    runs = c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=['ganflow-pipeline'])),\n"
            "                            limit=50, sort=FlowRunSort.START_TIME_DESC)\n"
            "    print(json.dumps([{'state': r.state_type.value, 'flow_id': str(r.flow_id)} for r in runs]))\n")
    proc = _run([str(BIN / "python"), "-c", code], prefect_env, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["state"] for r in runs] == ["COMPLETED"], runs

    # 3 (cont.). `ganflow serve` against the server: the deployment appears there with its cron.
    serve_log = tmp_path / "serve.log"
    with open(serve_log, "w") as fh:
        serve = subprocess.Popen([str(BIN / "ganflow"), "serve", "--cron", "0 3 * * *", "--workspace", str(workspace)],
                                 cwd=workspace, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, found = time.time() + 180, None
        while time.time() < deadline and serve.poll() is None:
            time.sleep(3)
            proc = _run([str(BIN / "prefect"), "--no-prompt", "deployment", "inspect",
                         "ganflow-pipeline/ganflow-retrain", "--output", "json"], prefect_env, tmp_path, timeout=120)
            if proc.returncode == 0:
                found = json.loads(proc.stdout)
                break
        assert found, f"no deployment on the server; serve said:{_tail(serve_log)}"
        assert [s["schedule"].get("cron") for s in found["schedules"]] == ["0 3 * * *"]
        assert found["parameters"] == {"workspace": str(workspace)}
        assert found["flow_id"] == runs[0]["flow_id"]  # the same flow the pipeline run belongs to
    finally:
        _stop(serve, grace=30)
    assert f"PREFECT_API_URL={v['PREFECT_API_URL']}" in serve_log.read_text()

    # 4. A second DVC remote: push to it, then a fresh clone pulls the data back from it alone.
    dvc_env = {**clean_env(home), "DVC_NO_ANALYTICS": "1"}
    remote2 = tmp_path / "remote2"
    for args in (["remote", "add", "second", str(remote2)], ["push", "-r", "second"]):
        proc = _run([str(BIN / "dvc"), *args], dvc_env, workspace)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert any(p.is_file() for p in remote2.rglob("*"))
    subprocess.run(GIT + ["add", "-A"], cwd=workspace, check=True)  # dvc.lock, .dvc/config (not config.local)
    subprocess.run(GIT + ["commit", "-qm", "data version"], cwd=workspace, check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(workspace), str(clone)], check=True)
    assert not (clone / "data" / "processed").exists() and not (clone / ".dvc" / "config.local").exists()
    proc = _run([str(BIN / "dvc"), "pull", "-r", "second"], {**dvc_env, "GANFLOW_HOME": str(clone / ".ganflow")}, clone)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((workspace / "data" / "processed" / "manifest.json").read_text())
    pulled = hashlib.md5((clone / "data" / "processed" / "train.pt").read_bytes()).hexdigest()
    assert pulled == manifest["md5"]["train.pt"]
    assert json.loads((clone / "data" / "processed" / "manifest.json").read_text()) == manifest

    # 5. Two machines, one champion: promoters in the workspace and in the clone (own run dirs, same data)
    # queue on the Prefect server's concurrency limit and end with the better of the two as champion.
    _two_promoters(workspace, clone, env, {**clean_env(clone / ".ganflow"), **v}, client)


# Registers two noised copies of version 1 (a wreck, made champion by hand, and a mildly noised one).
_NOISED = """
import sys, mlflow, torch
from flows import params
from flows.registry import versions
c = mlflow.MlflowClient()
p = params.load(__import__("pathlib").Path(sys.argv[1]))
tags = versions.VersionTags.read(c.get_model_version(p.model_name, "1").tags)
exp = mlflow.set_experiment(p.experiment).experiment_id
torch.manual_seed(0)
for scale in (3.0, 0.3):
    state = versions.load_training_state(f"models:/{p.model_name}/1")
    weights = state["ema"]["module"] if state.get("ema") else state["generator"]  # what is registered
    for t in weights.values():
        if t.is_floating_point() and t.numel() > 1:
            t.add_(torch.randn_like(t) * scale * t.std())
    print("registered", versions.register(c.create_run(exp).info.run_id, p, state, tags))
"""


def _two_promoters(ws_a: Path, ws_b: Path, env_a: dict, env_b: dict, client) -> None:
    name = "ganflow-digits"
    proc = _run([str(BIN / "python"), "-c", _NOISED, str(ws_a)], env_a, ws_a)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wreck, mid = (ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("registered "))
    client.set_registered_model_alias(name, "champion", wreck)  # both challengers beat it: a race would show
    # The slot both promoters need, held from outside for a while: neither may decide until it is released.
    hold = ("import sys, time\nfrom pathlib import Path\nfrom flows.env import configure\n"
            "from flows.registry.promote import serialised\n"
            "with serialised(configure(Path(sys.argv[1])), 'ganflow-digits'):\n"
            "    print('held', flush=True); time.sleep(float(sys.argv[2]))\n")
    holder = subprocess.Popen([str(BIN / "python"), "-c", hold, str(ws_a), "40"], cwd=ws_a, env=env_a,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert holder.stdout.readline().strip() == "held", holder.stdout.read()
    promoters = [subprocess.Popen([str(BIN / "ganflow"), "promote", "--version", version, "--workspace", str(ws)],
                                  cwd=ws, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for version, ws, e in ((mid, ws_a, env_a), ("1", ws_b, env_b))]
    time.sleep(25)  # both started and queued (imports take ~10 s)
    assert [p.poll() for p in promoters] == [None, None]
    assert "reeval.at" not in client.get_model_version(name, mid).tags  # nothing measured while the slot is held
    holder.wait(timeout=120)
    assert holder.returncode == 0, holder.stdout.read()
    outs = [p.communicate(timeout=300)[0] for p in promoters]
    assert [p.returncode for p in promoters] == [0, 0], outs
    tags = {v: client.get_model_version(name, v).tags for v in (mid, "1")}
    fd = {v: float(tags[v]["reeval.fd"]) for v in (mid, "1")}
    best, other = sorted(fd, key=fd.get)
    assert client.get_registered_model(name).aliases["champion"] == best, (fd, outs)
    # Serial: the second decision saw the first one's outcome (racing, both would have seen the wreck).
    saw = {v: tags[v]["promotion.champion_version"] for v in (mid, "1")}
    first = next(v for v in saw if saw[v] == wreck)
    second = mid if first == "1" else "1"
    assert tags[first]["promotion.decision"] == "promoted" and saw[second] == first, (tags, outs)
    changes = [json.loads(v) for k, v in sorted(client.get_registered_model(name).tags.items())
               if k.startswith("champion.history.")]
    assert changes[-1]["version"] == best and changes[-1]["kind"] == "promoted"
