"""Training-step speed (issue 26 item 2): images/s of the product's loop (gan_core.training.fit) for a
DCGAN (width 32, batch 32) with the default image recipe (images-ns-r1: non-saturating + R1, its Adam and
EMA), each speed option (a RunSpec field: precision bf16, channels_last, compile, r1_every) and
combination against eager fp32, all in one process on this machine's CPU:

    eager fp32 | bf16 autocast | channels_last | compile | lazy R1 (every 16 D steps) |
    bf16+channels_last+lazy R1 | channels_last+compile+lazy R1 | all four

Method. Each setting gets its own pair (same seed), optimisers and EMA (gan_core.training.build), and is
warmed up first (compilation happens there). Then `--rounds` rounds; in each, every setting in turn (the
order rotating from round to round) times a window of D+G steps between two windows of eager fp32 (one
baseline window between each two settings), each step on its own: fit over one epoch
of one batch, timed by fit (the epoch's epoch_time_s), the run's history passed on so that lazy R1's count
runs on as in a resumed run. A window starts on a step that takes R1 (global D step index a multiple of
r1_every; the steps before it train untimed) and runs `--steps` steps, or fewer once it has taken
`--round-s` seconds (never fewer than 2: one step with R1, one without). A round's images/s is
batch x r1_every / (the R1 step's time + (r1_every - 1) x the median step without R1), so a short window
still weighs R1 as the schedule does (r1_every = 1: batch / the median step). The table gives the median
over rounds, and the median of each window's ratio to the mean of the two eager fp32 windows around it:
the machine is shared and noisy (other jobs come and go within a minute), so a setting is compared with
the baseline seconds before and after it, never with a number taken minutes apart. A setting more than
`--slow` times slower than eager fp32 in round 1 is not timed again (its verdict does not need a median;
bf16 on a CPU without native bf16 is ~10x slower and would take minutes a round). Data are random images
already in memory: the numbers measure the training step, not a data pipeline.

A step that takes R1 runs D in fp32 and eagerly whatever the setting (the double backward; see
gan_core.steps): so bf16 alone only changes the G step, and compile alone only the G step and the
forwards without a penalty. That is what lazy R1 is for.

    .venv/bin/python -m bench.speed                         # 32 px, 3 channels (~8 min on 2 busy cores)
    .venv/bin/python -m bench.speed --size 64 --channels 1
    .venv/bin/python -m bench.speed --quick                 # smoke run (< 20 s; compile via aot_eager)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from bench.common import footer, table  # noqa: E402
from gan_core.sizes import NATIVE_SIZES  # noqa: E402

RECIPE = "images-ns-r1"  # the default image recipe: its loss (NS + R1 gamma) and Adam
LAZY = 16                # StyleGAN2's R1 interval


@dataclass(frozen=True)
class Setting:
    name: str
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    r1_every: int = 1


SETTINGS = (
    Setting("eager fp32"),
    Setting("bf16", bf16=True),
    Setting("channels_last", channels_last=True),
    Setting("compile", compile=True),
    Setting(f"lazy R1 ({LAZY})", r1_every=LAZY),
    Setting("bf16+channels_last+lazy R1", bf16=True, channels_last=True, r1_every=LAZY),
    Setting("channels_last+compile+lazy R1", channels_last=True, compile=True, r1_every=LAZY),
    Setting("all", bf16=True, channels_last=True, compile=True, r1_every=LAZY),
)
BASE = SETTINGS[0].name
QUICK_SKIPS = "channels_last+compile+lazy R1"  # --quick: "all" runs the same paths; each compile costs seconds


HORIZON = 1_000_000  # RunSpec.epochs: far beyond any run here, so the recipe's lr decay never starts


@dataclass
class Run:
    """One setting's RunSpec, parts (G, D, optimisers, EMA), fit's history so far and timings."""

    setting: Setting
    spec: Any = None
    parts: Any = None
    history: list[dict] = field(default_factory=list)  # one epoch (one D step) an entry
    warmup_s: float = 0.0
    rates: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    r1_ms: list[float] = field(default_factory=list)
    plain_ms: list[float] = field(default_factory=list)
    error: str | None = None


def run_spec(s: Setting, width: int, batch: int):
    """The product's RunSpec for RECIPE at this width and batch, with the setting's speed fields."""
    from bench.fitting import recipe_spec

    return recipe_spec(RECIPE, model={"width": width}, batch_size=batch, epochs=HORIZON, checkpoint_every=HORIZON,
                       precision="bf16" if s.bf16 else "fp32", channels_last=s.channels_last, compile=s.compile,
                       r1_every=s.r1_every)


def build(s: Setting, shape: tuple[int, int, int], width: int, batch: int, backend: str) -> Run:
    from gan_core.training import build as build_parts

    spec = run_spec(s, width, batch)
    parts = build_parts(spec, shape)
    if s.compile and backend != "inductor":
        # RunSpec.compile compiles with torch's default backend (inductor); another one replaces it in place,
        # before the first forward compiles anything.
        parts.G.compile(backend=backend)
        parts.D.compile(backend=backend)
    return Run(s, spec, parts)


def train(run: Run, data: list, n: int) -> list[tuple[float, bool]]:
    """`n` more D + G steps of `run` through fit, one batch an epoch: each one's (seconds, whether it took R1)."""
    from bench.fitting import EpochClock
    from gan_core.training import fit

    if n < 1:
        return []
    start = len(run.history)
    clock = EpochClock()
    out = fit(replace(run.spec, stop_epoch=start + n), run.parts, lambda epoch: [data[epoch % len(data)]], clock,
              start_epoch=start, history=run.history)
    run.history = out.history
    if out.diverged_at is not None:
        raise RuntimeError(f"{run.setting.name}: NaN/Inf at step {out.diverged_at}")
    return [(m["epoch_time_s"], "r1" in m) for m in clock.metrics]


def window(run: Run, data: list, steps: int, round_s: float) -> float:
    """One round of `run`: images/s with R1 weighed as its schedule does (module docstring)."""
    s = run.setting
    ahead = -len(run.history) % s.r1_every  # D steps until the next one that takes R1 (one D step an epoch)
    if ahead:
        train(run, data, ahead)  # untimed
    r1: list[float] = []
    plain: list[float] = []
    started = time.perf_counter()
    for i in range(steps):
        [(took, with_r1)] = train(run, data, 1)
        (r1 if with_r1 else plain).append(took)
        if i >= 1 and time.perf_counter() - started > round_s and (plain or s.r1_every == 1):
            break
    batch = data[0].shape[0]
    run.r1_ms.append(1e3 * statistics.median(r1))
    if s.r1_every == 1:
        return batch / statistics.median(r1)
    run.plain_ms.append(1e3 * statistics.median(plain))
    return batch * s.r1_every / (r1[0] + (s.r1_every - 1) * statistics.median(plain))


def _fail(exc: Exception) -> str:
    return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}"


def cpu_line() -> str:
    import torch

    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    bf16 = [f for f in ("avx512_bf16", "amx_bf16", "avx512f") if f in flags]
    return (f"CPU capability {torch.backends.cpu.get_cpu_capability()}, bf16 hardware: "
            f"{', '.join(bf16) if bf16 else 'none (no avx512_bf16 / amx_bf16)'}; {torch.get_num_threads()} threads")


def main(argv: list[str] | None = None) -> int:
    t0 = time.time()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=32, choices=NATIVE_SIZES)
    ap.add_argument("--channels", type=int, default=3, choices=(1, 3))
    ap.add_argument("--width", type=int, default=32, help="DCGAN base channels")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=2,
                    help="warm-up steps per setting (the first with R1, the rest without when lazy)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6, help="most timed steps per setting and round")
    ap.add_argument("--round-s", type=float, default=8.0,
                    help="a window stops after this many seconds (>= 2 steps): slow settings get fewer steps")
    ap.add_argument("--settings", default=None,
                    help=f"comma list of: {', '.join(s.name for s in SETTINGS)} (default: all; --quick: all but "
                         f"{QUICK_SKIPS})")
    ap.add_argument("--compile-backend", default="inductor",
                    help="torch.compile backend (--quick: aot_eager, which checks the plumbing, not the speed)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (--quick: 1, for its tiny tensors)")
    ap.add_argument("--slow", type=float, default=4.0,
                    help="a setting this many times slower than eager fp32 in round 1 is not timed again")
    ap.add_argument("--quick", action="store_true",
                    help="8 px, width 8, batch 8, 1 thread, no warm-up, 1 round of 2 steps, compile via aot_eager: "
                         "a smoke run of every code path")
    a = ap.parse_args(argv)
    import torch

    if a.quick:
        a.size, a.width, a.batch, a.warmup, a.rounds, a.steps, a.threads = 8, 8, 8, 0, 1, 2, 1
        a.compile_backend = "aot_eager"
    torch.set_num_threads(a.threads)
    by_name = {s.name: s for s in SETTINGS}
    if a.settings is None:
        a.settings = ",".join(s.name for s in SETTINGS if not (a.quick and s.name == QUICK_SKIPS))
    names = [n.strip() for n in a.settings.split(",") if n.strip()]
    for n in names:
        if n not in by_name:
            ap.error(f"unknown setting {n!r}; known: {', '.join(by_name)}")
    if a.steps < 2:
        ap.error("--steps must be >= 2 (a lazy window needs a step with R1 and one without)")
    if BASE not in names:
        names.insert(0, BASE)  # every ratio is to eager fp32 in the same round
    base = run_spec(by_name[BASE], a.width, a.batch)
    loss_cfg, optim = base.loss, base.optim
    shape = (a.channels, a.size, a.size)
    print(f"speed bench: DCGAN {a.channels}x{a.size}x{a.size}, width {a.width}, batch {a.batch}, {RECIPE} "
          f"({loss_cfg.name}, R1 gamma {loss_cfg.r1_gamma}, Adam {optim.lr_d} {optim.betas}); {a.warmup} warm-up "
          f"steps, {a.rounds} rounds of <= {a.steps} steps; torch {torch.__version__}; {cpu_line()}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    gen = torch.Generator().manual_seed(0)
    data = [torch.rand(a.batch, *shape, generator=gen) * 2 - 1 for _ in range(4)]
    runs: list[Run] = []
    for n in names:
        s = by_name[n]
        started = time.perf_counter()
        try:
            run = build(s, shape, a.width, a.batch, a.compile_backend)
            train(run, data, a.warmup)  # step 0 takes R1, the next ones not (when lazy)
            run.warmup_s = time.perf_counter() - started
        except Exception as exc:  # noqa: BLE001 - e.g. no C++ compiler for inductor: report, go on
            run = Run(s, error=_fail(exc))
        runs.append(run)
        print(f"  warm-up {n}: {run.error or f'{time.perf_counter() - started:.1f} s'}", flush=True)

    base_run, others = runs[0], runs[1:]
    if base_run.error:
        sys.exit(f"eager fp32, the baseline, {base_run.error}")
    slow: set[str] = set()
    for r in range(a.rounds):
        todo = [run for run in others if not run.error and run.setting.name not in slow]
        order = todo[r % len(todo):] + todo[: r % len(todo)] if todo else []
        before = window(base_run, data, a.steps, a.round_s)
        base_run.rates.append(before)
        shown = [f"{BASE} {before:.0f}"]
        for run in order:
            try:
                rate = window(run, data, a.steps, a.round_s)
            except Exception as exc:  # noqa: BLE001
                run.error = _fail(exc)
                continue
            after = window(base_run, data, a.steps, a.round_s)
            base_run.rates.append(after)
            run.rates.append(rate)
            run.ratios.append(rate / ((before + after) / 2))
            shown += [f"{run.setting.name} {rate:.0f}", f"{BASE} {after:.0f}"]
            if r == 0 and a.rounds > 1 and run.ratios[-1] * a.slow < 1:
                slow.add(run.setting.name)
            before = after
        base_run.ratios = [1.0]
        print(f"  round {r + 1}: " + ", ".join(shown) + f" images/s (load average {os.getloadavg()[0]:.1f})",
              flush=True)

    rows = []
    for run in runs:
        s = run.setting
        if run.error or not run.rates:
            rows.append([s.name, run.error or "no rounds", "-", "-", "-", "-", "-"])
            continue
        rows.append([
            s.name,
            f"{statistics.median(run.rates):.0f}",
            f"round 1 only (> {a.slow:g}x slower)" if s.name in slow else f"{min(run.rates):.0f}-{max(run.rates):.0f}",
            f"{statistics.median(run.ratios):.2f}" if run.ratios else "-",
            f"{statistics.median(run.r1_ms):.0f}",
            f"{statistics.median(run.plain_ms):.0f}" if run.plain_ms else "-",
            f"{run.warmup_s:.1f}",
        ])
    print(f"\n## {a.channels}x{a.size}x{a.size}, batch {a.batch}\n")
    print(table(["setting", "images/s (median)", "range (windows)", f"vs {BASE} around it (median)",
                 "step with R1 (ms)", "step without R1 (ms)", "warm-up (s)"], rows))
    print("\nimages/s counts real images through D (one D and one G step per batch of real images); a lazy "
          f"setting's rate is batch x {LAZY} / (R1 step + {LAZY - 1} steps without R1).")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}\n" + footer(t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
