"""DVC plumbing: a workspace that DVC can run in, `dvc repro` one at a time on a run's parameters, and the
data version."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from filelock import FileLock

from flows import params as params_mod
from flows.data import importer
from flows.data.load import PROCESSED
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


def repro(paths: RunPaths, overrides: list[str] | None = None, push: bool = True) -> tuple[str, dict]:
    """Run the data stages on params.yaml with this run's `overrides` laid over it (params.run.yaml, which
    dvc.yaml's stages read; params.yaml is never written). A file lock queues concurrent pipelines: two
    `dvc repro` at once break. Returns the data version and the run's parameter values (its one reading)."""
    _check_reach(paths.workspace, overrides or [])
    importer.check_imports_present(paths.workspace)
    ensure_workspace(paths)
    with FileLock(str(paths.home / "dvc-repro.lock")):
        raw = params_mod.write_run_params(paths.workspace, overrides or [])
        proc = _dvc(paths, "repro")
        print(without_advice(proc.stdout, pushed=push).strip())
        if push:
            _dvc(paths, "push", "-q")
    return data_version(paths.workspace), raw


PUSH_ADVICE = "Use `dvc push` to send your updates to remote storage."


def without_advice(output: str, pushed: bool) -> str:
    """`dvc repro`'s output without the advice ganflow follows itself: it pushes right after (`pushed`)."""
    return "\n".join(line for line in output.splitlines() if not (pushed and line.strip() == PUSH_ADVICE))


def _check_reach(workspace: Path, overrides: list[str]) -> None:
    """A workspace made before one-off --set reads params.yaml in its dvc.yaml: a --set of a value DVC tracks
    there would never reach DVC, and the run would train on params.yaml's data under the override's name."""
    spec = yaml.safe_load((workspace / "dvc.yaml").read_text()) or {}
    tracked = set()
    for stage in (spec.get("stages") or {}).values():
        for entry in stage.get("params") or []:  # `key` (params.yaml) or `{file: [keys]}`
            if isinstance(entry, str):
                tracked.add(entry)
            elif isinstance(entry, dict):
                tracked.update(k for f, keys in entry.items() if f == params_mod.PARAMS_FILE for k in keys or [])
    missed = sorted(k for k in params_mod.parse_overrides(overrides)
                    if any(k == t or k.startswith(f"{t}.") or t.startswith(f"{k}.") for t in tracked))
    if missed:
        raise UserError(f"--set {', '.join(missed)}: this workspace's dvc.yaml reads those from "
                        f"{params_mod.PARAMS_FILE}, so a one-off value would not reach DVC. Use the current "
                        f"dvc.yaml (its stages read {params_mod.RUN_PARAMS_FILE}), or edit {params_mod.PARAMS_FILE}.")


def data_version(workspace: Path) -> str:
    """The md5 DVC recorded for data/processed: the data version every run is tagged with."""
    lock = workspace / "dvc.lock"
    if not lock.exists():
        raise UserError(f"{lock} is missing: run the data stages first (`dvc repro`)")
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for out in stages.get("prepare", {}).get("outs", []):
        if out.get("path") == PROCESSED.as_posix():
            return out["md5"].removesuffix(".dir")
    raise UserError(f"{lock} has no {PROCESSED} output: run `dvc repro`")
