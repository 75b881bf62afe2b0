"""`ganflow serve --cron`: a real Prefect deployment with that schedule, served until stopped."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from conftest import BIN, clean_env, ganflow

pytestmark = pytest.mark.integration


def test_serve_creates_a_deployment_with_the_cron(workspace):
    env = clean_env(workspace / ".ganflow")
    env["PREFECT_HOME"] = str(workspace / ".ganflow" / "prefect")
    server = subprocess.Popen([str(BIN / "ganflow"), "serve", "--cron", "15 4 * * 1", "--workspace", str(workspace)],
                              cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, found = time.time() + 240, None
        while time.time() < deadline and server.poll() is None:
            time.sleep(5)
            proc = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deployment", "inspect",
                                   "ganflow-pipeline/ganflow-retrain", "--output", "json"],
                                  cwd=workspace, env=env, capture_output=True, text=True, timeout=120)
            if proc.returncode == 0:
                found = json.loads(proc.stdout)
                break
        assert found, f"no deployment appeared; serve said: {server.stdout.read() if server.poll() is not None else ''}"
        crons = [s["schedule"].get("cron") for s in found["schedules"]]
        assert crons == ["15 4 * * 1"]
        assert found["parameters"] == {"workspace": str(workspace)}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def test_serve_rejects_a_bad_cron(workspace):
    proc = ganflow(workspace, "serve", "--cron", "every night")
    assert proc.returncode == 2 and "not a valid cron" in proc.stderr and "Traceback" not in proc.stderr
