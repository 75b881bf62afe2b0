"""Shared plumbing for the bench scripts: thread pinning, a 2-process pool, stats, tables, footer, and the
product's RunSpec for a recipe (every benchmark trains through gan_core.training.fit)."""
from __future__ import annotations

import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
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


def recipe_spec(recipe: str, loss: str | None = None, *, seed: int = 0, n_train: int | None = None,
                model: dict | None = None, loss_extras: dict | None = None, optim: dict | None = None,
                **fields: Any):
    """The RunSpec the product trains for gan_core.recipes' `recipe` (filled as params.yaml's null fields
    are: recipes.fill, its repeat sized to `n_train` items) with `loss` (default: the recipe's own), then a
    benchmark's explicit overrides: `model` (ModelConfig fields; conditioning is off unless given, as
    `auto` needs the data), `loss_extras` (LossConfig fields), `optim` (OptimConfig fields, laid over the
    filled optimiser through recipes.resolve) and any RunSpec field (`fields`, via dataclasses.replace)."""
    from dataclasses import replace

    from gan_core.augment import AugmentConfig
    from gan_core.config import LossConfig, ModelConfig, OptimConfig
    from gan_core.recipes import RECIPES, fill, resolve
    from gan_core.training import RunSpec

    r = RECIPES[recipe]
    values = fill({}, r, loss or r.loss, n_train)

    def section(name: str) -> dict[str, Any]:
        return {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(f"{name}.")}

    loss_cfg = LossConfig(**{"name": loss or r.loss, **section("loss"), **(loss_extras or {})})
    train = section("train")
    spec = RunSpec(model=ModelConfig(**{**section("model"), "conditional": False, **(model or {})}),
                   loss=loss_cfg, optim=resolve(loss_cfg, OptimConfig(**{**section("optim"), **(optim or {})})),
                   augment=AugmentConfig(**section("augment")), epochs=train["epochs"],
                   batch_size=train["batch_size"], seed=seed, ema_decay=train["ema_decay"], repeat=train["repeat"])
    return replace(spec, **fields)


def spec_line(spec) -> str:
    """A RunSpec in one line: model, loss and extras, optimiser, batch, EMA, augmentation, speed options."""
    from gan_core.losses import GanLoss
    from gan_core.recipes import describe

    m, loss = spec.model, GanLoss(spec.loss)  # the loss's own GP weight and clip when not overridden
    extras = [f"{k} {v:g}" for k, v in (("R1", spec.loss.r1_gamma), ("GP", loss.gp_weight), ("clip", loss.clip))
              if v]
    depth = f"x{m.depth}" if m.arch == "mlp" else ""
    out = (f"{m.arch} {m.width}{depth} z{m.z_dim}{' +SN' if m.spectral_norm else ''}"
           f"{' conditional' if m.conditional else ''}, {spec.loss.name}{' + ' + ', '.join(extras) if extras else ''}, "
           f"{describe(spec.optim)}, batch {spec.batch_size}, "
           f"{f'EMA {spec.ema_decay:g}' if spec.ema_decay else 'no EMA'}")
    if spec.augment.policy != "off":
        out += f", {spec.augment.policy} augmentation"
    fast = [o for o, on in ((spec.precision, spec.precision != "fp32"), ("channels_last", spec.channels_last),
                            ("compiled", spec.compile), (f"R1 every {spec.r1_every}", spec.r1_every > 1)) if on]
    return out + (f", {', '.join(fast)}" if fast else "")


@dataclass(frozen=True)
class Variant:
    """One compared setting of a benchmark: a product recipe (gan_core.recipes) with a loss and the explicit
    overrides it names, made a RunSpec by recipe_spec."""

    name: str
    base: str                                        # the product recipe it starts from
    loss: str | None = None                          # None: the base recipe's
    model: dict = field(default_factory=dict)        # ModelConfig fields
    loss_extras: dict = field(default_factory=dict)  # LossConfig fields
    optim: dict = field(default_factory=dict)        # OptimConfig fields laid over the base's optimiser
    fields: dict = field(default_factory=dict)       # RunSpec fields (batch_size, ema_decay, ...)
    steps_scale: float = 1.0                         # a step-budgeted benchmark's multiple of its budget

    def spec(self, seed: int = 0, n_train: int | None = None):
        return recipe_spec(self.base, self.loss, seed=seed, n_train=n_train, model=self.model,
                           loss_extras=self.loss_extras, optim=self.optim, **self.fields)

    @property
    def desc(self) -> str:
        """The base, what is overridden, and the whole spec in one line."""
        changed = {**self.model, **self.loss_extras, **self.optim, **self.fields}
        over = ", ".join(f"{k} {v}" for k, v in changed.items())
        scale = f", {self.steps_scale:g}x the G steps" if self.steps_scale != 1 else ""
        return (f"{self.base}{f' ({self.loss})' if self.loss else ''}{f' with {over}' if over else ''}{scale}: "
                f"{spec_line(self.spec())}")


def on_device(parts, spec, device) -> None:
    """Parts built by gan_core.training.build (on the CPU) moved to `device` in place, as the Ray worker
    does: the optimisers keep the same parameters; channels_last stays channels_last."""
    import torch

    fmt = {"memory_format": torch.channels_last} if spec.channels_last and len(parts.data_shape) == 3 else {}
    for m in (parts.G, parts.D, *([parts.ema.module] if parts.ema is not None else [])):
        m.to(device, **fmt)


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
    (ws / ".gitignore").write_text("/data/processed\n/data/classifier\n.ganflow/\n/params.run.yaml\n")
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
                          cwd=ws, env=clean_env(ws / ".ganflow"), capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"ganflow {command} {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.time() - started


def last_pipeline(ws: Path) -> tuple[dict, list[dict]]:
    """The last `ganflow pipeline` of `ws`: its summary, and its run's per-epoch history (from the run's
    latest checkpoint)."""
    import json

    import torch

    summary = json.loads((ws / ".ganflow" / "last_pipeline.json").read_text())
    ckpt = sorted((ws / ".ganflow" / "ray_results" / summary["ray_run"]).glob("epoch_*"))[-1] / "state.pt"
    return summary, torch.load(ckpt, weights_only=True)["history"]
