"""Shared plumbing for the bench scripts: thread pinning, a 2-process pool, stats, tables, footer."""
from __future__ import annotations

import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


def one_thread() -> None:
    """Small MLPs / 8x8 convs: intra-op threads only add sync overhead on a 2-core box, so every
    worker runs single-threaded and parallelism comes from processes instead."""
    import torch

    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # noqa: BLE001 - best effort only
        pass


def _init_worker() -> None:
    one_thread()


def run_jobs(fn: Callable[[Any], Any], jobs: Sequence[Any], procs: int,
             on_done: Callable[[Any], None] | None = None) -> list[Any]:
    """fn over jobs (results in job order); a `procs`-process pool (spawn: no forked torch state)
    when procs > 1. `on_done(result)` is called as each job finishes (progress lines)."""
    results: list[Any] = [None] * len(jobs)
    if procs <= 1 or len(jobs) <= 1:
        one_thread()
        for i, j in enumerate(jobs):
            results[i] = fn(j)
            if on_done:
                on_done(results[i])
        return results
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(min(procs, len(jobs)), initializer=_init_worker) as pool:
        for i, res in pool.imap_unordered(_Indexed(fn), list(enumerate(jobs)), chunksize=1):
            results[i] = res
            if on_done:
                on_done(res)
    return results


class _Indexed:
    """Picklable wrapper: (i, job) -> (i, fn(job)), so unordered results can be put back in order."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, item: tuple[int, Any]) -> tuple[int, Any]:
        i, job = item
        return i, self.fn(job)


def mean_std(xs: Iterable[float]) -> tuple[float, float]:
    v = [float(x) for x in xs]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, s


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-markdown table (also readable on a terminal)."""
    cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"

    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def footer(t0: float) -> str:
    argv0 = os.path.relpath(sys.argv[0]) if sys.argv and os.path.isabs(sys.argv[0]) else sys.argv[0]
    cmd = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable), argv0, *sys.argv[1:]])
    return f"command: {cmd}\nwall time: {time.time() - t0:.1f} s"


ROOT = Path(__file__).resolve().parents[1]


def run_paths(ws: Path):
    """The run directory of a bench workspace, where the product keeps it (bench runs each `ganflow` with
    GANFLOW_HOME there: clean_env)."""
    from flows.env import RUN_DIR, RunPaths

    return RunPaths(ws, ws / RUN_DIR)


def clean_env(home: Path) -> dict[str, str]:
    """The environment of a fresh shell for a `ganflow` subprocess: no tool state leaking in from the
    caller's session (nor from a configured workspace in this process), its run dir at `home`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "PREFECT_", "RAY_", "DVC_", "GANFLOW_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["GANFLOW_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def make_workspace(ws: Path) -> Path:
    """A throwaway ganflow workspace: the repo's params.yaml/dvc.yaml in a fresh git repo of its own
    (DVC needs one), its run dir ignored. Tests and benchmarks both start from this."""
    import shutil
    import subprocess

    (ws / "data" / "raw").mkdir(parents=True)
    for name in ("params.yaml", "dvc.yaml", ".dvcignore", "data/raw/README.md"):
        shutil.copy(ROOT / name, ws / name)
    from flows.data.load import CLASSIFIER, PROCESSED
    from flows.env import RUN_DIR

    (ws / ".gitignore").write_text(f"/{PROCESSED}\n/{CLASSIFIER}\n{RUN_DIR}/\n/params.run.yaml\n")
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q"], cwd=ws, check=True)
    subprocess.run(git + ["add", "-A"], cwd=ws, check=True)
    subprocess.run(git + ["commit", "-qm", "workspace"], cwd=ws, check=True)
    return ws


def run_ganflow(ws: Path, command: str, *args: str) -> float:
    """`ganflow COMMAND ARGS` on workspace `ws` in a fresh shell's environment (clean_env); ends the
    benchmark with the output's tail if it fails. Returns the wall time in seconds."""
    import subprocess

    started = time.time()
    proc = subprocess.run([str(Path(sys.executable).parent / "ganflow"), command, "--workspace", str(ws), *args],
                          cwd=ws, env=clean_env(run_paths(ws).home), capture_output=True, text=True)
    with open(ws / f"ganflow-{command}.log", "a") as log:  # the run's own lines (schedule, ETA), to read later
        log.write(proc.stdout + proc.stderr)
    if proc.returncode:
        sys.exit(f"ganflow {command} {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.time() - started


def last_pipeline(ws: Path) -> tuple[dict, list[dict]]:
    """The last `ganflow pipeline` of `ws`: its summary, and its run's per-epoch history (from the run's
    latest checkpoint)."""
    import json

    import torch

    from flows.conventions import STATE_FILE

    paths = run_paths(ws)
    summary = json.loads(paths.last_pipeline.read_text())
    ckpt = sorted((paths.ray_results / summary["ray_run"]).glob("epoch_*"))[-1] / STATE_FILE
    return summary, torch.load(ckpt, weights_only=True)["history"]
