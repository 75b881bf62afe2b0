"""The registered pyfunc over HTTP (issue 15): `mlflow models serve` against the registry answers the
request form a non-Python client sends and raw latents, and its requirements name no package `ganflow`."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from test_promote import empty_store, open_store, ring8_params  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration


def _conditional_state():
    import torch

    from gan_core.config import ModelConfig
    from gan_core.models import build_generator

    torch.manual_seed(0)
    cfg = ModelConfig(arch="mlp", z_dim=2, width=8, depth=2, conditional=True, num_classes=3)
    return {"generator": build_generator(cfg, (2,)).state_dict(), "ema": None, "model": cfg.model_dump(),
            "data_shape": [2]}


def _post(port: int, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_mlflow_models_serve_answers_requests_and_latents(tmp_path, empty_store, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows.registry.versions import VersionTags, register

    open_store(tmp_path / "ws", tmp_path / "home", empty_store, monkeypatch)
    params = ring8_params()
    client = MlflowClient()
    exp = client.create_experiment("serve", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(exp)
    version = register(run.info.run_id, params, _conditional_state(), VersionTags(data_version="dv"),
                       class_names=["north", "east", "south"])
    uri = f"models:/{params.model_name}/{version}"

    requirements = Path(mlflow.artifacts.download_artifacts(f"{uri}/requirements.txt")).read_text()
    assert "ganflow" not in requirements and "torch==" in requirements and "pydantic==" in requirements
    local = Path(mlflow.artifacts.download_artifacts(uri))
    assert (local / "code" / "gan_core" / "sampling.py").exists()  # the model's code ships with it

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # As with an activated venv: MLflow's server execs `uvicorn` from PATH.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", uri,
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read()[-3000:]
                assert time.time() < deadline, "mlflow models serve did not come up"
                time.sleep(1)
        # The request form: what a curl user sends (README).
        code, body = _post(port, {"dataframe_records": [{"n": 4, "seed": 1, "class": "south"}]})
        assert code == 200, body
        points = body["predictions"]
        assert len(points) == 4 and len(points[0]) == 2
        code, again = _post(port, {"dataframe_records": [{"n": 4, "seed": 1, "class": "south"}]})
        assert again["predictions"] == points  # seeded
        # Raw latents, the class id in the last column (existing callers).
        code, body = _post(port, {"inputs": [[0.0, 0.0, 2], [1.0, -1.0, 0]]})
        assert code == 200 and len(body["predictions"]) == 2, body
        # A mistake is a 400 naming it, not a 500.
        code, body = _post(port, {"dataframe_records": [{"n": 2, "class": "west"}]})
        assert code == 400 and "unknown class 'west'" in body.get("message", ""), body
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
