"""DVC plumbing: a workspace that DVC can run in, `dvc repro` one at a time, and the data version."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from filelock import FileLock

from flows.env import RunPaths
from flows.errors import UserError


def _dvc(paths: RunPaths, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # Stage commands call `ganflow`: make the one beside this interpreter win, venv activated or not.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=paths.workspace, env=env,
                          text=True, capture_output=True)
    if check and proc.returncode != 0:
        out = f"{proc.stdout}{proc.stderr}"
        # A stage that stopped on a user's mistake said so in one `ganflow: error:` line: show that alone.
        lines = out.splitlines()
        start = next((i for i, ln in enumerate(lines) if ln.startswith("ganflow: error: ")), None)
        if start is not None:
            block = [lines[start].removeprefix("ganflow: error: ")]
            block += [ln for ln in lines[start + 1:] if ln.startswith("  ")]  # multi-line messages indent
            raise UserError("\n".join(block))
        raise UserError(f"dvc {' '.join(args)} failed (exit {proc.returncode}):\n{out}".rstrip())
    return proc


def ensure_workspace(paths: RunPaths) -> None:
    """DVC needs a repo (git, or --no-scm) and a remote; add a local one under the run dir if none."""
    ws = paths.workspace
    if not (ws / ".dvc").is_dir():
        scm = (ws / ".git").exists()
        _dvc(paths, "init", *([] if scm else ["--no-scm"]))
    remotes = _dvc(paths, "remote", "list").stdout.strip()
    if not remotes:
        paths.dvc_remote.mkdir(parents=True, exist_ok=True)
        # --local: goes to .dvc/config.local (not committed), so a team's shared remote stays in charge.
        _dvc(paths, "remote", "add", "--local", "-d", "local", str(paths.dvc_remote))


def repro(paths: RunPaths, push: bool = True) -> str:
    """Run the data stages (a file lock queues concurrent pipelines: two `dvc repro` at once break)."""
    ensure_workspace(paths)
    with FileLock(str(paths.home / "dvc-repro.lock")):
        proc = _dvc(paths, "repro")
        print(proc.stdout.strip())
        if push:
            _dvc(paths, "push", "-q")
    return data_version(paths.workspace)


def data_version(workspace: Path) -> str:
    """The md5 DVC recorded for data/processed: the data version every run is tagged with."""
    lock = workspace / "dvc.lock"
    if not lock.exists():
        raise UserError(f"{lock} is missing: run the data stages first (`dvc repro`)")
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for out in stages.get("prepare", {}).get("outs", []):
        if out.get("path") == "data/processed":
            return out["md5"].removesuffix(".dir")
    raise UserError(f"{lock} has no data/processed output: run `dvc repro`")
