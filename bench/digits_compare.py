"""GAN losses on scikit-learn's 8x8 digits, each with its paper optimiser recipe (gan_core.recipes).

Data: gan_core.data.load_digits() in [-1, 1], split 80/20 with gan_core.data.split(seed 0).
Training: the product's loop (gan_core.training.fit) with the product's `images-paper` recipe (DCGAN G/D,
width 32, z_dim 32, the loss's paper optimiser, no lr schedule) for each loss, with the benchmark's
explicit overrides: batch 64, no EMA (the paper recipes have none: the last iterate is evaluated),
unconditional, and spectral norm on D for hinge.
Budget: the same number of *epochs* (fit's epochs: passes over the train split, the recipe's repeat for
its size, i.e. 1) for every loss, the unit of the project's pipeline (train.epochs). Critic losses
(n_critic 5) therefore make 5x fewer G steps; wall time is roughly comparable (the GP's double backward
makes WGAN-GP D steps dearer).
Evaluation: the last G iterate. A CNN classifier (gan_core.classifier, 25 epochs, Adam 1e-3, seed 0)
trained on the train split gives
  coverage  classes that get >= 1% of 2,000 generated digits (of 10), and KL(class histogram || uniform)
  FD        Frechet distance of classifier features, train split vs n_holdout generated digits; the
            real-vs-real baseline is FD(train, holdout) at the same sample size
  KID       cubic-kernel KID of the same feature sets (unbiased: can be slightly negative)

    .venv/bin/python -m bench.digits_compare            # 5 losses x 1 seed x 60 epochs
    .venv/bin/python -m bench.digits_compare --quick    # 3 epochs
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from bench.common import footer, mean_std, one_thread, run_jobs, table  # noqa: E402
from bench.fitting import Variant  # noqa: E402

BATCH = 64  # the benchmark's batch (images-paper's is 32)
N_GEN = 2000
CLASSIFIER_EPOCHS = 25


def _paper(name: str, loss: str, **model) -> Variant:
    """`images-paper` with `loss` (its paper optimiser), batch 64, no EMA."""
    return Variant(name, "images-paper", loss, model=model, fields={"batch_size": BATCH, "ema_decay": 0.0})


RECIPES: dict[str, Variant] = {r.name: r for r in [
    _paper("saturating", "saturating"),           # minimax, DCGAN Adam
    _paper("non-saturating", "non-saturating"),   # DCGAN Adam
    _paper("wgan-clip", "wgan"),                  # WGAN: clip 0.01, RMSprop, n_critic 5
    _paper("wgan-gp", "wgan-gp"),                 # WGAN-GP: lambda 10, Adam (0, 0.9), n_critic 5
    _paper("hinge-sn", "hinge", spectral_norm=True),  # hinge + spectral norm D, TTUR Adam
]}


def _data():
    from gan_core.data import load_digits, split

    x, y = load_digits()
    return split(x, y, 0.2, 0)  # x_tr, y_tr, x_ho, y_ho


def train_one(job: tuple[str, int, int]) -> dict:
    """Train one (loss, seed) for `epochs` epochs with gan_core.training.fit; return N_GEN generated digits
    and timings."""
    name, seed, epochs = job
    import torch

    from gan_core.recipes import describe
    from gan_core.training import build, fit, epoch_batches, prepare_data

    one_thread()
    x_tr, _, _, _ = _data()
    spec = replace(RECIPES[name].spec(seed, n_train=len(x_tr)), epochs=epochs, checkpoint_every=epochs)
    parts = build(spec, tuple(x_tr.shape[1:]))
    t0 = time.time()
    out = fit(spec, parts, epoch_batches(prepare_data(spec, x_tr), spec.batch_size))
    train_s = time.time() - t0
    G = parts.evaluated.eval()  # no EMA: the last iterate
    with torch.no_grad():
        z = G.sample_z(N_GEN, generator=torch.Generator().manual_seed(10_000 + seed))
        fake = G(z)
    return {"recipe": name, "seed": seed, "epochs": epochs, "steps_g": int(sum(m["steps_g"] for m in out.history)),
            "n_critic": spec.optim.n_critic, "optim": describe(spec.optim),
            "nonfinite": out.diverged_at is not None or not bool(torch.isfinite(fake).all()),
            "train_s": train_s, "fake": torch.nan_to_num(fake, 0.0).clamp(-1, 1)}


def main(argv: list[str] | None = None) -> int:
    t0 = time.time()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 epochs, classifier 3 epochs")
    p.add_argument("--epochs", type=int, default=None, help="epochs per loss (default 60; 3 with --quick)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (default 1)")
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma list of {', '.join(RECIPES)}")
    p.add_argument("--classifier-epochs", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--procs", type=int, default=2, help="worker processes (default 2)")
    a = p.parse_args(argv)
    epochs = a.epochs if a.epochs is not None else (3 if a.quick else 60)
    cls_epochs = a.classifier_epochs if a.classifier_epochs is not None else (3 if a.quick else CLASSIFIER_EPOCHS)
    recipes = [s.strip() for s in a.recipes.split(",") if s.strip()]
    for n in recipes:
        if n not in RECIPES:
            p.error(f"unknown recipe {n!r}; known: {', '.join(RECIPES)}")

    import numpy as np

    from gan_core.classifier import predict_features, train_classifier
    from gan_core.metrics import class_coverage, class_histogram_kl, frechet_distance, kid

    x_tr, y_tr, x_ho, y_ho = _data()
    print(f"digits_compare: {len(x_tr)} train + {len(x_ho)} holdout, recipes={recipes} seeds={a.seeds} "
          f"epochs={epochs} batch={BATCH}", flush=True)
    for n in recipes:
        print(f"  {n}: {RECIPES[n].desc}")

    jobs = [(n, s, epochs) for n in recipes for s in range(a.seeds)]
    jobs.sort(key=lambda j: -("wgan" in j[0]))  # the dearer critic runs first

    def progress(x: dict) -> None:
        print(f"  trained {x['recipe']:15s} seed {x['seed']}: {x['steps_g']} G steps in {x['train_s']:.0f} s"
              f"{' NONFINITE' if x['nonfinite'] else ''}", flush=True)

    # The classifier first, in this process: the pool then has both cores to itself.
    one_thread()
    tc = time.time()
    clf = train_classifier(x_tr, y_tr, 10, epochs=cls_epochs, lr=1e-3, seed=0)
    f_tr, _ = predict_features(clf, x_tr)
    f_ho, p_ho = predict_features(clf, x_ho)
    acc = float((p_ho == y_ho.numpy()).mean())
    n_ho = len(x_ho)
    fd_real = frechet_distance(f_tr, f_ho)
    kid_real = kid(f_tr, f_ho)[0]
    print(f"  classifier: {cls_epochs} epochs, holdout accuracy {100 * acc:.1f}% ({time.time() - tc:.0f} s)",
          flush=True)

    runs = run_jobs(train_one, jobs, a.procs, on_done=progress)
    for x in runs:
        f_fake, pred = predict_features(clf, x.pop("fake"))
        x["coverage"] = class_coverage(pred, 10)
        x["class_kl"] = class_histogram_kl(pred, 10)
        x["fd"] = frechet_distance(f_tr, f_fake[:n_ho])
        x["kid"] = kid(f_tr, f_fake[:n_ho])[0]

    rows = []
    for n in recipes:
        rs = [x for x in runs if x["recipe"] == n]
        cov, cov_s = mean_std(x["coverage"] for x in rs)
        kl, kl_s = mean_std(x["class_kl"] for x in rs)
        fd, fd_s = mean_std(x["fd"] for x in rs)
        kd, kd_s = mean_std(x["kid"] for x in rs)
        ts, _ = mean_std(x["train_s"] for x in rs)
        rows.append([n, rs[0]["optim"], str(len(rs)), f"{rs[0]['steps_g']}", f"{cov:.1f} ± {cov_s:.1f}",
                     f"{kl:.3f} ± {kl_s:.3f}", f"{fd:.2f} ± {fd_s:.2f}", f"{kd:.3g} ± {kd_s:.2g}",
                     str(sum(x["nonfinite"] for x in rs)), f"{ts:.0f}"])
    rows.append(["real holdout (baseline)", "-", "-", "-", f"{class_coverage(p_ho, 10)}",
                 f"{class_histogram_kl(p_ho, 10):.3f}", f"{fd_real:.2f}", f"{kid_real:.3g}", "-", "-"])
    print()
    print(f"## digits, {epochs} epochs (batch {BATCH}, {len(x_tr) // BATCH} D steps/epoch), "
          f"FD/KID vs train features at n={n_ho}")
    print()
    print(table(["recipe", "optimiser (paper recipe)", "seeds", "G steps", "coverage (of 10)", "class KL",
                 "FD", "KID", "nonfinite", "train s/run"], rows))
    print()
    print(footer(t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
