"""Mode collapse on 2-D Gaussian mixtures, PacGAN's protocol (Lin et al. 2018, Sec. 5 / Table 2-3).

ring8  : 8 Gaussians on the unit circle, std 0.01.     grid25 : 5x5 grid, spacing 2, std 0.05.
For each recipe x seed an MLP G/D pair (gan_core.models, arch "mlp") is trained on the mixture; then
2,500 samples are drawn from G (the EMA copy when the recipe keeps one) and scored with
gan_core.metrics.mode_metrics: modes captured (>= 20 high-quality samples), high-quality share
(within 3 std of the nearest mean) and reverse KL of the mode histogram vs uniform.

Budget: every recipe gets the same number of *G steps* (--steps, default 2000); critic recipes
(n_critic 5) therefore see 5x more D steps and cost ~3x the wall time.

    .venv/bin/python -m bench.mode_collapse            # full: default recipes x 5 seeds x 2 datasets
    .venv/bin/python -m bench.mode_collapse --quick    # 1 seed, 300 G steps (~1 min)
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

if __package__ in (None, ""):  # `python bench/mode_collapse.py` as well as `python -m bench.mode_collapse`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from bench.common import footer, mean_std, one_thread, run_jobs, table  # noqa: E402

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


@dataclass(frozen=True)
class Recipe:
    name: str
    desc: str
    loss: dict = field(default_factory=dict)      # LossConfig fields
    optim: dict = field(default_factory=dict)     # OptimConfig fields laid over the paper recipe
    width: int = 128
    depth: int = 3
    z_dim: int = 2                                # PacGAN's 2-D experiments use a 2-D latent
    spectral_norm: bool = False
    batch: int = 128
    ema: float = 0.0                              # EMA decay of G; 0 = off (evaluate the last iterate)
    steps_scale: float = 1.0                      # G steps = round(scale * --steps)


_FAST = Recipe("ns-r1-fast", "non-saturating + R1 0.01 + TTUR Adam 1e-3 / 2e-3 (0.5, 0.9) + EMA 0.999 + lr decay, "
               "batch 256, 4.5x the G steps",
               {"name": "non-saturating", "r1_gamma": 0.01},
               {"lr_g": 1e-3, "lr_d": 2e-3, "betas": (0.5, 0.9), "lr_decay_start": 0.5}, ema=0.999, batch=256,
               steps_scale=4.5)
RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("gan", "vanilla GAN: non-saturating, DCGAN Adam 2e-4 (0.5, 0.999), no reg., no EMA",
           {"name": "non-saturating"}),
    Recipe("minimax", "saturating minimax, DCGAN Adam", {"name": "saturating"}),
    Recipe("wgan-gp", "WGAN-GP paper recipe: lambda 10, Adam 1e-4 (0, 0.9), n_critic 5", {"name": "wgan-gp"}),
    Recipe("hinge-sn", "hinge + spectral norm, TTUR Adam 1e-4 / 4e-4 (0, 0.9)", {"name": "hinge"},
           spectral_norm=True),
    # --- search candidates (run with --recipes) ---
    Recipe("ns-ema", "non-saturating + EMA 0.999", {"name": "non-saturating"}, ema=0.999),
    Recipe("ns-r1", "non-saturating + R1 gamma 0.1 + EMA 0.999", {"name": "non-saturating", "r1_gamma": 0.1},
           ema=0.999),
    Recipe("ns-r1-decay", "non-saturating + R1 0.1 + EMA 0.999 + lr decay",
           {"name": "non-saturating", "r1_gamma": 0.1}, {"lr_decay_start": 0.5}, ema=0.999),
    Recipe("wgan-gp-ema", "WGAN-GP paper recipe + EMA 0.999 + lr decay", {"name": "wgan-gp"},
           {"lr_decay_start": 0.5}, ema=0.999),
    Recipe("ns-r1-ttur", "non-saturating + R1 0.01 + TTUR Adam 5e-4 / 1e-3 (0.5, 0.9) + EMA 0.999, batch 256",
           {"name": "non-saturating", "r1_gamma": 0.01},
           {"lr_g": 5e-4, "lr_d": 1e-3, "betas": (0.5, 0.9)}, ema=0.999, batch=256),
    _FAST,
]}
DEFAULT_RECIPES = ("gan", "minimax", "wgan-gp", "hinge-sn", "best")
BEST = "points-ns-r1-wide"  # the product's recipe for 2-D points (gan_core/recipes.py); "best" is an alias


def _product(name: str) -> Recipe:
    """A recipe of the product (gan_core.recipes) in this benchmark's terms, at 4.5x the G-step budget."""
    from gan_core.recipes import RECIPES as PRODUCT

    r = PRODUCT[name]
    v = r.values
    optim = {k.removeprefix("optim."): tuple(x) if isinstance(x, list) else x
             for k, x in v.items() if k.startswith("optim.")}
    return Recipe(name, r.summary, {"name": r.loss, "r1_gamma": v.get("loss.r1_gamma", 0.0)}, optim,
                  width=v["model.width"], depth=v["model.depth"], z_dim=v["model.z_dim"],
                  spectral_norm=v["model.spectral_norm"], batch=v["train.batch_size"], ema=v["train.ema_decay"],
                  steps_scale=4.5)


def _recipe(name: str) -> Recipe:
    if name == "best":
        return replace(_product(BEST), name=f"best ({BEST})")
    return RECIPES[name]


def _cost(r: Recipe) -> float:
    """Rough relative cost of a run (for scheduling only): critic steps, batch and width."""
    critic = 3.0 if r.loss.get("name") in ("wgan", "wgan-gp") else 1.0
    return critic * r.steps_scale * (r.batch / 128) ** 0.5 * (r.width / 128) ** 1.5


def train_one(job: tuple[str, str, int, int]) -> dict:
    """Train one (dataset, recipe, seed) for `steps` G steps; return its mode metrics."""
    dataset, recipe_name, seed, steps = job
    import numpy as np
    import torch

    from gan_core.config import LossConfig, ModelConfig, OptimConfig
    from gan_core.ema import EMA
    from gan_core.losses import GanLoss
    from gan_core.metrics import mode_metrics
    from gan_core.models import build_discriminator, build_generator
    from gan_core.recipes import resolve
    from gan_core.schedules import lr_scale, set_hyperparams
    from gan_core.steps import build_optimizers, train_epoch
    from gan_core.toy_data import sample_toy, toy_modes

    one_thread()
    t0 = time.time()
    r = _recipe(recipe_name)
    steps = max(1, round(steps * r.steps_scale))
    torch.manual_seed(seed)
    cfg = ModelConfig(arch="mlp", z_dim=r.z_dim, width=r.width, depth=r.depth, spectral_norm=r.spectral_norm)
    G, D = build_generator(cfg, (2,)), build_discriminator(cfg, (2,))
    loss_cfg = LossConfig.model_validate(r.loss)
    ro = resolve(loss_cfg, OptimConfig(**r.optim))
    opt_g, opt_d = build_optimizers(G, D, ro)
    loss = GanLoss(loss_cfg)
    ema = EMA(G, r.ema) if r.ema > 0 else None
    gen = torch.Generator().manual_seed(seed)
    data, _ = sample_toy(dataset, TRAIN_POINTS, seed=seed)

    chunk = max(1, min(250, steps // 20 or 1))  # G steps per train_epoch call (lr schedule granularity)
    done, nonfinite = 0, False
    while done < steps:
        n_g = min(chunk, steps - done)
        set_hyperparams(opt_g, opt_d, ro, lr_scale(ro, done / steps))  # the recipe's lr schedule, if any
        idx = torch.randint(TRAIN_POINTS, (n_g * ro.n_critic, r.batch), generator=gen)
        m = train_epoch(G, D, data[idx], opt_g, opt_d, loss, ro.n_critic, gen, False, ema)
        done += n_g
        if m["nonfinite"]:
            nonfinite = True
            break

    g_eval = ema.module if ema is not None else G
    g_eval.eval()
    with torch.no_grad():
        z = g_eval.sample_z(N_SAMPLES, generator=torch.Generator().manual_seed(10_000 + seed))
        x = g_eval(z).double().numpy()
    means, std = toy_modes(dataset)
    if not np.isfinite(x).all():
        nonfinite = True
        x = np.nan_to_num(x, nan=1e6, posinf=1e6, neginf=-1e6)
    mm = mode_metrics(x, means, std)
    return {"dataset": dataset, "recipe": r.name, "seed": seed, "steps": steps, "n_critic": ro.n_critic,
            "nonfinite": nonfinite, "seconds": time.time() - t0, **mm}


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
