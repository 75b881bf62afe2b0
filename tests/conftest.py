"""Shared fixtures: a throwaway ganflow workspace (its own git repo, DVC, run dir) per test."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.common import clean_env, make_workspace  # noqa: F401 - clean_env: tests import it from here

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FIXTURE = ROOT / "tests" / "fixtures" / "registered_2026_11_29"


@pytest.fixture
def one_thread():
    # Tiny tensors: intra-op threads only add sync overhead, and on a loaded 2-core box
    # oversubscription makes this test 20x slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def prefect_db(tmp_path_factory) -> Path:
    """A Prefect database migrated once per session. Migrating a fresh one costs every first run in a
    workspace ~8 s (a user pays it once); tests start ~30 workspaces. `fresh_workspace` skips it."""
    home = tmp_path_factory.mktemp("prefect-template")
    env = {**clean_env(home), "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    subprocess.run([str(BIN / "prefect"), "server", "database", "upgrade", "-y"], env=env, check=True,
                   capture_output=True, timeout=300)
    return home / "prefect.db"


@pytest.fixture
def fresh_workspace(tmp_path: Path) -> Path:
    """A workspace as a user's first run finds it: no run dir at all."""
    return make_workspace(tmp_path / "ws")


@pytest.fixture
def workspace(tmp_path: Path, prefect_db: Path) -> Path:
    """A workspace whose run dir holds an already migrated Prefect database (as after its first run)."""
    ws = make_workspace(tmp_path / "ws")
    (ws / ".ganflow" / "prefect").mkdir(parents=True)
    shutil.copy(prefect_db, ws / ".ganflow" / "prefect" / "prefect.db")
    return ws


def ganflow(ws: Path, *args: str, timeout: int = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ganflow"), *args, "--workspace", str(ws)], cwd=ws,
                          env={**clean_env(ws / ".ganflow"), **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


class Receiver:
    """A webhook on 127.0.0.1 that records the JSON bodies POSTed to it (alerts)."""

    def __init__(self):
        import http.server
        import json
        import threading

        bodies = self.bodies = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                bodies.append({"path": self.path, "auth": self.headers.get("Authorization"),
                               **json.loads(self.rfile.read(int(self.headers["Content-Length"])))})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, secret: str = "s3cret-t0ken") -> str:
        return f"http://alerts:{secret}@127.0.0.1:{self.port}/hook?token={secret}"

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def registered_bundle() -> dict:
    """The generator bundle the fixture version was registered with on 2026-11-29."""
    from gan_core.config import ModelConfig
    from gan_core.models import build_generator

    torch.manual_seed(0)
    cfg = ModelConfig(arch="dcgan", z_dim=8, width=4, conditional=True, num_classes=3)
    G = build_generator(cfg, (1, 8, 8))
    with torch.no_grad():
        for p in G.parameters():
            p.normal_(0, 0.5)
    return {"generator": G.state_dict(), "model": cfg.model_dump(), "data_shape": [1, 8, 8]}


@pytest.fixture
def registered(tmp_path) -> Path:
    """A copy of the 2026-11-29 fixture version (tests/test_registered_fixture.py) with its weights."""
    folder = tmp_path / "registered_2026_11_29"
    shutil.copytree(FIXTURE, folder)
    (folder / "artifacts").mkdir(exist_ok=True)  # git keeps no empty folder
    torch.save(registered_bundle(), folder / "artifacts" / "generator.pt")
    return folder
