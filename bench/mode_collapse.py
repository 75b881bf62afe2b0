"""Mode collapse on 2-D Gaussian mixtures, PacGAN's protocol (Lin et al. 2018, Sec. 5 / Table 2-3).

ring8  : 8 Gaussians on the unit circle, std 0.01.     grid25 : 5x5 grid, spacing 2, std 0.05.
For each recipe x seed an MLP G/D pair (gan_core.models, arch "mlp") is trained on the mixture; then
2,500 samples are drawn from G (the EMA copy when the recipe keeps one) and scored with
gan_core.metrics.mode_metrics: modes captured (>= 20 high-quality samples), high-quality share
(within 3 std of the nearest mean) and reverse KL of the mode histogram vs uniform.

Training: the product's loop (gan_core.training.fit); every recipe here is a product recipe of
gan_core.recipes (`points-paper` with the loss's paper optimiser, or `points-ns-r1-wide`) plus the
explicit overrides it names (PacGAN's sizes: width 128, batch 128, no EMA; R1, lr, decay...).
Budget: every recipe gets the same number of *G steps* (--steps, default 2000; `best` and `ns-r1-fast`
4.5x that); critic recipes (n_critic 5) therefore see 5x more D steps and cost ~3x the wall time. fit
counts epochs: a run is ceil(G steps / chunk) epochs (chunk = G steps / 20, within 1..250), the G steps
spread evenly over them (so exactly --steps in all), each epoch's batches drawn with replacement from the
fixed training set (PacGAN's protocol, seeded by (seed, epoch)); the lr schedule is the product's,
progress(epoch, epochs), as it was per chunk before.

    .venv/bin/python -m bench.mode_collapse            # full: default recipes x 5 seeds x 2 datasets
    .venv/bin/python -m bench.mode_collapse --quick    # 1 seed, 300 G steps (~1 min)
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # `python bench/mode_collapse.py` as well as `python -m bench.mode_collapse`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from bench.common import footer, mean_std, one_thread, run_jobs, table  # noqa: E402
from bench.fitting import Variant  # noqa: E402

DATASETS = ("ring8", "grid25")
N_SAMPLES = 2500
TRAIN_POINTS = 100_000  # a fixed training set per seed, as PacGAN (batches drawn from it with replacement)

# Published numbers (Lin et al. 2018, PacGAN, Table 3 (2-D ring) and Table 2 (2-D grid)), quoted, not rerun:
# (modes, high-quality %, reverse KL).
PAPER = {
    "ring8": [("GAN (quoted from PacGAN paper)", 6.3, 98.2, 0.45),
              ("PacGAN2 (quoted from PacGAN paper)", 7.9, 95.6, 0.07)],
    "grid25": [("GAN (quoted from PacGAN paper)", 17.3, 94.8, 0.70),
               ("PacGAN4 (quoted from PacGAN paper)", 24.8, 93.6, 0.04)],
}


# PacGAN's 2-D sizes (the rows of bench/RESULTS.md section 1), laid over the product's point recipes.
_PACGAN_MODEL = {"width": 128}
_PACGAN_BATCH = 128


def _paper(name: str, loss: str, ema: bool = False, model: dict | None = None, batch_size: int = _PACGAN_BATCH,
           **over) -> Variant:
    """`points-paper` with `loss` (its paper optimiser) at PacGAN's sizes; its EMA only when asked."""
    fields = {"batch_size": batch_size, **({} if ema else {"ema_decay": 0.0})}
    return Variant(name, "points-paper", loss, model={**_PACGAN_MODEL, **(model or {})}, fields=fields, **over)


BEST = "points-ns-r1-wide"  # the product's recipe for 2-D points (gan_core/recipes.py); "best" is an alias
_FAST_STEPS = 4.5           # the G-step multiple the fast recipes were tuned at (RESULTS section 1)
RECIPES: dict[str, Variant] = {r.name: r for r in [
    _paper("gan", "non-saturating"),                    # vanilla GAN: DCGAN Adam, no reg., no EMA
    _paper("minimax", "saturating"),
    _paper("wgan-gp", "wgan-gp"),                       # WGAN-GP paper recipe: lambda 10, n_critic 5
    _paper("hinge-sn", "hinge", model={"spectral_norm": True}),  # with its TTUR Adam
    # --- search candidates (run with --recipes) ---
    _paper("ns-ema", "non-saturating", ema=True),
    _paper("ns-r1", "non-saturating", ema=True, loss_extras={"r1_gamma": 0.1}),
    _paper("ns-r1-decay", "non-saturating", ema=True, loss_extras={"r1_gamma": 0.1}, optim={"lr_decay_start": 0.5}),
    _paper("wgan-gp-ema", "wgan-gp", ema=True, optim={"lr_decay_start": 0.5}),
    _paper("ns-r1-ttur", "non-saturating", ema=True, batch_size=256, loss_extras={"r1_gamma": 0.01},
           optim={"lr_g": 5e-4, "lr_d": 1e-3, "betas": (0.5, 0.9)}),
    # the earlier best: the product's recipe at 128 units, batch 256 and R1 0.01
    Variant("ns-r1-fast", BEST, model=_PACGAN_MODEL, loss_extras={"r1_gamma": 0.01}, fields={"batch_size": 256},
           steps_scale=_FAST_STEPS),
]}
DEFAULT_RECIPES = ("gan", "minimax", "wgan-gp", "hinge-sn", "best")


def _recipe(name: str) -> Variant:
    if name == "best":  # the product's recipe as it is, at the fast recipes' G-step budget
        return Variant(f"best ({BEST})", BEST, steps_scale=_FAST_STEPS)
    return RECIPES[name]


def _cost(r: Variant) -> float:
    """Rough relative cost of a run (for scheduling only): critic steps, batch and width."""
    spec = r.spec()
    critic = 3.0 if spec.optim.n_critic > 1 else 1.0
    return critic * r.steps_scale * (spec.batch_size / 128) ** 0.5 * (spec.model.width / 128) ** 1.5


def train_one(job: tuple[str, str, int, int]) -> dict:
    """Train one (dataset, recipe, seed) for `steps` G steps with gan_core.training.fit; return its mode
    metrics."""
    dataset, recipe_name, seed, steps = job
    import math

    import numpy as np
    import torch

    from gan_core.metrics import mode_metrics
    from gan_core.toy_data import sample_toy, toy_modes
    from gan_core.training import build, fit

    one_thread()
    t0 = time.time()
    r = _recipe(recipe_name)
    steps = max(1, round(steps * r.steps_scale))
    epochs = math.ceil(steps / max(1, min(250, steps // 20 or 1)))
    spec = replace(r.spec(seed), epochs=epochs, checkpoint_every=epochs)
    data, _ = sample_toy(dataset, TRAIN_POINTS, seed=seed)

    def batches(epoch: int):
        """This epoch's share of the G steps, n_critic batches each, drawn with replacement."""
        n_g = steps * (epoch + 1) // epochs - steps * epoch // epochs
        draw = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        return data[torch.randint(TRAIN_POINTS, (n_g * spec.optim.n_critic, spec.batch_size), generator=draw)]

    parts = build(spec, (2,))
    out = fit(spec, parts, batches)
    g_eval = parts.evaluated.eval()  # the EMA copy when the recipe keeps one
    with torch.no_grad():
        z = g_eval.sample_z(N_SAMPLES, generator=torch.Generator().manual_seed(10_000 + seed))
        x = g_eval(z).double().numpy()
    means, std = toy_modes(dataset)
    nonfinite = out.diverged_at is not None
    if not np.isfinite(x).all():
        nonfinite = True
        x = np.nan_to_num(x, nan=1e6, posinf=1e6, neginf=-1e6)
    mm = mode_metrics(x, means, std)
    return {"dataset": dataset, "recipe": r.name, "seed": seed, "steps": int(sum(m["steps_g"] for m in out.history)),
            "n_critic": spec.optim.n_critic, "nonfinite": nonfinite, "seconds": time.time() - t0, **mm}


def goals(dataset: str, runs: list[dict]) -> tuple[bool, str]:
    if dataset == "ring8":
        ok = all(x["modes"] == 8 and x["high_quality"] >= 0.97 for x in runs)
        return ok, "8/8 modes and >= 97% high quality in every seed"
    if dataset == "grid25":
        _, hq, kl = (mean_std(x[k] for x in runs)[0] for k in ("modes", "high_quality", "reverse_kl"))
        ok = all(x["modes"] == 25 for x in runs) and hq >= 0.95 and kl <= 0.03
        return ok, "25/25 modes in every seed, mean high quality >= 95%, mean reverse KL <= 0.03"
    return False, "no goal"


def report(dataset: str, runs: list[dict], recipes: list[str]) -> str:
    k = 8 if dataset == "ring8" else 25
    rows = []
    for name in recipes:
        rs = [x for x in runs if x["recipe"] == _recipe(name).name]
        if not rs:
            continue
        mo, mo_s = mean_std(x["modes"] for x in rs)
        hq, hq_s = mean_std(100 * x["high_quality"] for x in rs)
        kl, kl_s = mean_std(x["reverse_kl"] for x in rs)
        rows.append([rs[0]["recipe"], str(len(rs)), f"{mo:.1f} ± {mo_s:.1f}", f"{min(x['modes'] for x in rs)}",
                     f"{hq:.1f} ± {hq_s:.1f}", f"{min(100 * x['high_quality'] for x in rs):.1f}",
                     f"{kl:.3f} ± {kl_s:.3f}", str(sum(x["nonfinite"] for x in rs)),
                     f"{rs[0]['steps']}x{rs[0]['n_critic']}", f"{mean_std(x['seconds'] for x in rs)[0]:.0f}"])
    for label, mo, hq, kl in PAPER[dataset]:
        rows.append([label, "-", f"{mo:.1f}", "-", f"{hq:.1f}", "-", f"{kl:.2f}", "-", "-", "-"])
    head = ["recipe", "seeds", f"modes (of {k})", "min modes", "high quality %", "min HQ %", "reverse KL",
            "nonfinite", "G steps x n_critic", "s/run"]
    return f"## {dataset}\n\n" + table(head, rows)


def main(argv: list[str] | None = None) -> int:
    t0 = time.time()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 seed, 300 G steps")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 5; 1 with --quick)")
    p.add_argument("--recipes", default=",".join(DEFAULT_RECIPES),
                   help=f"comma list of {', '.join(['best', *RECIPES])}")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--steps", type=int, default=None, help="G steps per run (default 2000; 300 with --quick)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed+N-1")
    p.add_argument("--procs", type=int, default=2, help="worker processes (default 2)")
    a = p.parse_args(argv)
    seeds = a.seeds if a.seeds is not None else (1 if a.quick else 5)
    steps = a.steps if a.steps is not None else (300 if a.quick else 2000)
    recipes = [s.strip() for s in a.recipes.split(",") if s.strip()]
    datasets = [s.strip() for s in a.datasets.split(",") if s.strip()]
    for n in recipes:
        if n != "best" and n not in RECIPES:
            p.error(f"unknown recipe {n!r}; known: best, {', '.join(RECIPES)}")
    for d in datasets:
        if d not in DATASETS:
            p.error(f"unknown dataset {d!r}; known: {', '.join(DATASETS)}")

    print(f"mode_collapse: datasets={datasets} recipes={recipes} seeds={seeds} G steps={steps} "
          f"samples={N_SAMPLES}", flush=True)
    for n in recipes:
        print(f"  {_recipe(n).name}: {_recipe(n).desc}")
    jobs = [(d, n, s, steps) for d in datasets for n in recipes for s in range(a.first_seed, a.first_seed + seeds)]
    # Slow (critic) jobs first so the 2-process pool does not end on one long straggler.
    jobs.sort(key=lambda j: -_cost(_recipe(j[1])))

    def progress(x: dict) -> None:
        print(f"  {x['dataset']:6s} {x['recipe']:28s} seed {x['seed']}: modes {x['modes']:2d} "
              f"HQ {100 * x['high_quality']:5.1f}% revKL {x['reverse_kl']:.3f}"
              f"{' NONFINITE' if x['nonfinite'] else ''} ({x['seconds']:.0f} s)", flush=True)

    runs = run_jobs(train_one, jobs, a.procs, on_done=progress)
    verdicts = []
    for d in datasets:
        print()
        print(report(d, [x for x in runs if x["dataset"] == d], recipes))
        if "best" in recipes:
            ok, what = goals(d, [x for x in runs if x["dataset"] == d and x["recipe"] == _recipe("best").name])
            print(f"\ngoal {d} ({what}): {'MET' if ok else 'NOT MET'}")
            verdicts.append(f"{d}={'MET' if ok else 'NOT MET'}")
    print()
    print(footer(t0))
    print("goals: " + (", ".join(verdicts) if verdicts else "not evaluated (recipe 'best' not run)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
