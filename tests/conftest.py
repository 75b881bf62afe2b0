"""Shared fixtures: a throwaway ganflow workspace (its own git repo, DVC, run dir) per test."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.common import clean_env, make_workspace  # noqa: F401 - clean_env: tests import it from here

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def one_thread():
    # Tiny tensors: intra-op threads only add sync overhead, and on a loaded 2-core box
    # oversubscription makes this test 20x slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "ws")


def ganflow(ws: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ganflow"), *args, "--workspace", str(ws)], cwd=ws,
                          env=clean_env(ws / ".ganflow"), capture_output=True, text=True, timeout=timeout)
