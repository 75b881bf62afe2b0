"""MLflow on PostgreSQL, configuration only: a throwaway PostgreSQL cluster (Debian's server binaries,
127.0.0.1, trust auth, state in a temp dir), an `mlflow server` whose backend store is that database,
and one `ganflow pipeline` with MLFLOW_TRACKING_URI pointing at the server, which is killed mid-training
and started again (the outage of issue 16). Skipped where PostgreSQL's server binaries are not installed."""
from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BIN, clean_env

pytestmark = [pytest.mark.integration, pytest.mark.servers]

PG_BIN = next((p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
               if (p / "initdb").exists()), None) if Path("/usr/lib/postgresql").exists() else None
TINY = ["--set", "train.epochs=12", "--set", "train.checkpoint_every=1", "--set", "classifier.epochs=2",
        "--set", "eval.num_samples=200", "--set", "train.num_workers=1"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_pg(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root: use its own account then.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@pytest.fixture
def postgres():
    if PG_BIN is None:
        pytest.skip("PostgreSQL server binaries not installed (Debian: apt-get install postgresql)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a `postgres` account to run PostgreSQL as")
    root = Path(tempfile.mkdtemp(prefix="ganflow-pg-"))
    root.chmod(0o777)  # the postgres account writes its cluster and socket here
    data, port = root / "data", _free_port()
    subprocess.run(_as_pg([str(PG_BIN / "initdb"), "-D", str(data), "-U", "ganflow", "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True)
    start = _as_pg([str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "pg.log"), "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"])
    subprocess.run(start, check=True, capture_output=True)
    try:
        subprocess.run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "ganflow", "mlflow"],
                       check=True, capture_output=True)
        yield f"postgresql://ganflow@127.0.0.1:{port}/mlflow", root
    finally:
        subprocess.run(_as_pg([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _mlflow_server(store: str, port: int, env: dict, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", store,
                             "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                            stdout=open(tmp_path / "mlflow.log", "a"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(server: subprocess.Popen, signals=((signal.SIGTERM, 20), (signal.SIGKILL, 5))) -> None:
    for sig, grace in signals:
        try:
            os.killpg(server.pid, sig)
            server.wait(timeout=grace)
            break
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue


def test_mlflow_server_on_postgresql_runs_the_pipeline_and_survives_its_outage(workspace: Path, postgres,
                                                                                 tmp_path: Path):
    db_uri, _ = postgres
    port = _free_port()
    env = clean_env(workspace / ".ganflow")
    # SQLAlchemy 2's default PostgreSQL driver is psycopg 3: name psycopg2 (what we install) explicitly.
    store = db_uri.replace("postgresql://", "postgresql+psycopg2://", 1)
    uri = f"http://127.0.0.1:{port}"
    command = [str(BIN / "ganflow"), "pipeline", "--workspace", str(workspace), *TINY]
    server = _mlflow_server(store, port, env, tmp_path)
    try:
        _wait_http(f"{uri}/health", server)
        # The MLflow server dies mid-training: one clear message within a minute (MLflow's client retries are
        # bounded), no version registered; the same command, once it is back, resumes from the checkpoint.
        run = subprocess.Popen(command, cwd=workspace, env={**env, "MLFLOW_TRACKING_URI": uri}, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, killed = [], None
        for line in run.stdout:
            out.append(line)
            if "[ganflow] epoch 2/" in line:
                _stop(server, ((signal.SIGKILL, 5),))
                killed = time.monotonic()
                break
        out.append(run.communicate(timeout=300)[0])
        out = "".join(out)
        assert killed is not None and run.returncode == 2 and time.monotonic() - killed < 90, out[-4000:]
        assert f"ganflow: error: MLflow at MLFLOW_TRACKING_URI={uri} stopped answering while run digits-" in out
        assert "the same command resumes it" in out and "Traceback" not in out.split("ganflow: error:")[1]
        server = _mlflow_server(store, port, env, tmp_path)
        _wait_http(f"{uri}/health", server)
        proc = subprocess.run(command, cwd=workspace, env={**env, "MLFLOW_TRACKING_URI": uri}, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "Registered ganflow-digits version 1" in proc.stdout
        assert re.search(r"\d+ epochs \(resumed from [1-9]\d*\)", proc.stdout), proc.stdout[-3000:]
        assert not (workspace / ".ganflow" / "mlflow.db").exists()  # nothing embedded was used

        # What the pipeline wrote is in PostgreSQL itself, not only behind the server.
        import psycopg2

        with psycopg2.connect(db_uri) as conn, conn.cursor() as cur:
            cur.execute("select version, tags.key from model_versions join model_version_tags tags "
                        "using (name, version) where name = 'ganflow-digits'")
            rows = cur.fetchall()
            cur.execute("select count(*) from metrics where key = 'loss_d'")
            (loss_points,) = cur.fetchone()
        assert {k for v, k in rows if v == 1} >= {"data_version", "config_hash", "evaluator_version"}
        assert loss_points >= 1  # logged per epoch from the Ray worker, through the server
    finally:
        _stop(server)
