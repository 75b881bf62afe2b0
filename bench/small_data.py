"""Small datasets: does differentiable augmentation (gan_core.augment) stop D from memorising them?

Data: gan_core.data.load_digits() in [-1, 1], split(x, y, 0.2, seed 0) -> 1,438 train / 359 holdout.
Class-balanced training subsets (n/10 images of each class, nested: the 100 are among the 150, ...)
drawn per seed, plus all 1,438; every policy of a (size, seed) trains on the same subset, batch order
and initial weights.
Training: the product's loop, gan_core.training.fit, with the product's `images-ns-r1` recipe
(gan_core.recipes: DCGAN G/D, non-saturating + R1, Adam, lr decay over the second half, EMA, batch), read
from there, with only augment.policy varied (and model.conditional as --conditional says).
Policies: off | diffaugment (translation, cutout, color at p = 1) | adaptive (ADA's p, gan_core.augment
defaults: target 0.6, speed 20k images, p_max 0.8, stepped once per epoch by fit; its trace is fit's
history's augment_p).
Budget: the same number of G steps for every size (--steps, default 3,000 ~ 68 epochs of all 1,438),
so a 100-image subset is seen ~960 times: the regime where D can memorise it. Fewer steps for small sets
would confound "less data" with "less training". fit counts epochs, not steps: a run is
ceil(steps / G steps per epoch) epochs, an epoch one pass over the subset (train.repeat 1, not the
recipe's repeat for small sets: the budget is in G steps here, and p steps once a pass, as before), so it
makes up to one epoch's G steps more than --steps (1,438 images: 3,036 for 3,000); the lr schedule is the
product's, over those epochs (it was over G steps before: the same but for the last epoch's granularity).
Judge (the same for every generator): gan_core.classifier trained on all 1,438 training images (30
epochs, Adam 1e-3, seed 0, as params.yaml's classifier), scored on the 359 holdout images:
  FD ratio   FD(holdout, 1,438 generated) / FD(holdout, the 1,438 training images): real-vs-real at
             the matched sample size, as flows/evaluate.py's Evaluator at 2,500 samples
  classes    classes with >= 1% of 2,500 generated digits (of 10)
  memorised  share of generated digits nearer (pixels) to a training image than 95% of holdout
             images are (gan_core.metrics.memorisation vs the subset the run trained on; ~0.05 = none)
Goal: at ~150 images, augmentation gives 10/10 classes and at most half the FD ratio of no augmentation.

    .venv/bin/python -m bench.small_data                      # full: 4 sizes x 3 policies x 3 seeds
    .venv/bin/python -m bench.small_data --quick              # 1 seed, sizes 150 and 1438, 600 G steps
    .venv/bin/python -m bench.small_data --seeds 1 --sizes 150,1438 --steps 2000 --procs 1
    .venv/bin/python -m bench.small_data --px 16 --sizes 150 --seeds 2     # larger images (upsampled digits)
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
from bench.fitting import recipe_spec  # noqa: E402

SIZES = (100, 150, 300, 1438)
POLICIES = ("off", "diffaugment", "adaptive")
GOAL_SIZE = 150
N_GEN = 2500  # as params.yaml eval.num_samples
CLASSIFIER = {"epochs": 30, "lr": 1e-3, "seed": 0}  # params.yaml's classifier section


RECIPE = "images-ns-r1"  # the product's image recipe for the non-saturating loss (gan_core.recipes)


def run_spec(policy: str, seed: int, steps: int, n: int, aug_extra: dict, conditional: bool):
    """The product's RunSpec for `RECIPE` with only the augmentation varied (and the conditioning as asked),
    `steps` G steps long: ceil(steps / G steps per epoch) epochs of one pass over the n images (repeat 1),
    so the lr schedule is the product's over those epochs."""
    import math

    from gan_core.augment import AugmentConfig

    spec = recipe_spec(RECIPE, seed=seed, augment=AugmentConfig(policy=policy, **aug_extra), repeat=1,
                       model={"conditional": conditional, "num_classes": 10 if conditional else None})
    per_epoch = (n // spec.batch_size) // spec.optim.n_critic  # the loader drops the ragged last batch
    epochs = math.ceil(steps / per_epoch)
    return replace(spec, epochs=epochs, checkpoint_every=epochs)


BATCH = recipe_spec(RECIPE).batch_size


def _data(px: int = 8):
    """x_tr, y_tr, x_ho, y_ho; px > 8 upsamples the 8x8 digits bilinearly (a stand-in for the larger
    images users bring, where a 1-pixel shift is a small part of the picture)."""
    import torch.nn.functional as F

    from gan_core.data import load_digits, split

    x, y = load_digits()
    if px != x.shape[-1]:
        x = F.interpolate(x, size=(px, px), mode="bilinear", align_corners=False).clamp(-1.0, 1.0)
    return split(x, y, 0.2, 0)


def subset(y, size: int, seed: int):
    """Indices of a class-balanced subset (size // classes of each; all when size >= len(y)), nested
    across sizes for one seed: the same per-class permutation, cut shorter."""
    import numpy as np

    labels = y.numpy()
    if size >= len(labels):
        return np.arange(len(labels))
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    per = size // len(classes)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per] for c in classes]))


def train_one(job: tuple[int, str, int, int, dict, int, bool]) -> dict:
    """Train one (size, policy, seed) with gan_core.training.fit for about `steps` G steps (whole epochs);
    return its generated digits and the per-epoch (G steps so far, p, D's sign on reals, D's accuracy on
    reals) trace. `aug_extra`: AugmentConfig fields laid over the policy's defaults (--ops, --p, ...)."""
    size, policy, seed, steps, aug_extra, px, conditional = job
    import torch

    from gan_core.sampling import stratified_labels
    from gan_core.training import build, fit, epoch_batches, prepare_data

    one_thread()
    t0 = time.time()
    x_tr, y_tr, _, _ = _data(px)
    idx = torch.from_numpy(subset(y_tr, size, seed))
    x, y = x_tr[idx], y_tr[idx]
    spec = run_spec(policy, seed, steps, len(x), aug_extra, conditional)
    tensors = prepare_data(spec, x, y if conditional else None)
    parts = build(spec, tuple(x.shape[1:]))
    # fit seeds each epoch's batch order by (seed, epoch): the same for every policy of a (size, seed)
    out = fit(spec, parts, epoch_batches(tensors, spec.batch_size))
    done, trace = 0, []
    for m in out.history:
        done += int(m["steps_g"])
        trace.append((done, m.get("augment_p", 0.0), m.get("d_sign_real", float("nan")), m["d_acc_real"]))
    g = parts.evaluated.eval()
    with torch.no_grad():
        draw = torch.Generator().manual_seed(10_000 + seed)
        z = g.sample_z(N_GEN, generator=draw)
        # classes in equal shares: the subsets are class-balanced, so this is the product's draw (the data's
        # class mix, gan_core.sampling) and the stratified holdout's
        fake = g(z, y=stratified_labels(N_GEN, 10, draw)) if conditional else g(z)
    return {"size": size, "n": len(x), "policy": policy, "seed": seed, "steps_g": done, "epochs": len(out.history),
            "nonfinite": out.diverged_at is not None or not bool(torch.isfinite(fake).all()),
            "train_s": time.time() - t0, "trace": trace, "fake": torch.nan_to_num(fake, 0.0).clamp(-1, 1)}


def _p_summary(trace: list) -> str:
    """The adaptive p at 25/50/75/100% of training (and how often D called its reals real)."""
    if not trace:
        return "-"
    picks = [trace[min(len(trace) - 1, max(0, round(q * len(trace)) - 1))] for q in (0.25, 0.5, 0.75, 1.0)]
    return "/".join(f"{p:.2f}" for _, p, _, _ in picks)


def _late_signal(trace: list) -> str:
    """Mean overfitting signal (d_sign_real) over the second half of training; '-' when off."""
    late = [t[2] for t in trace[len(trace) // 2 :] if t[2] == t[2]]
    return f"{sum(late) / len(late):.2f}" if late else "-"


def main(argv: list[str] | None = None) -> int:
    t0 = time.time()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, sizes 150 and 1438, 600 G steps")
    ap.add_argument("--sizes", default=None, help=f"comma list of training-set sizes (default {SIZES})")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3; 1 with --quick)")
    ap.add_argument("--steps", type=int, default=None, help="G steps per run, every size (default 3000)")
    ap.add_argument("--procs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--ops", default=None, help="augment.ops (default: gan_core.augment's)")
    ap.add_argument("--p", type=float, default=None, help="augment.p of diffaugment (default 1)")
    ap.add_argument("--target", type=float, default=None, help="augment.target of adaptive")
    ap.add_argument("--speed-images", type=int, default=None, help="augment.speed_images of adaptive")
    ap.add_argument("--p-max", type=float, default=None, help="augment.p_max of adaptive")
    ap.add_argument("--px", type=int, default=8, choices=(8, 16, 32),
                    help="image side: the 8x8 digits upsampled bilinearly (default 8: as they are)")
    ap.add_argument("--conditional", action="store_true",
                    help="class-conditional G and D, as the product trains labelled images (model.conditional: auto)")
    ap.add_argument("--json", default=None, help="also write every run's numbers and p/signal trace here")
    ap.add_argument("--classifier-epochs", type=int, default=CLASSIFIER["epochs"], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    sizes = [int(s) for s in (a.sizes or ("150,1438" if a.quick else ",".join(map(str, SIZES)))).split(",")]
    policies = [s.strip() for s in a.policies.split(",") if s.strip()]
    seeds = a.seeds if a.seeds is not None else (1 if a.quick else 3)
    steps = a.steps if a.steps is not None else (600 if a.quick else 3000)
    for pol in policies:
        if pol not in POLICIES:
            ap.error(f"unknown policy {pol!r}; known: {', '.join(POLICIES)}")
    if any(s < BATCH for s in sizes):
        ap.error(f"sizes must be >= the batch ({BATCH})")

    from gan_core.classifier import accuracy, predict_features, train_classifier
    from gan_core.metrics import class_coverage, frechet_distance

    try:  # pixel-space memorisation (flows/evaluate.py's); older checkouts lack it
        from gan_core.metrics import memorisation, pixel_space
    except ImportError:
        memorisation = pixel_space = None

    x_tr, y_tr, x_ho, y_ho = _data(a.px)
    print(f"small_data: sizes={sizes} policies={policies} seeds={seeds} G steps={steps} (every size), {a.px}x{a.px} px"
          f"{', class-conditional' if a.conditional else ''}\n"
          f"  recipe: {RECIPE} (gan_core.recipes) through gan_core.training.fit, only augment.policy varied\n"
          f"  judge: classifier on all {len(x_tr)} training images, "
          f"scored on the {len(x_ho)} holdout images", flush=True)
    one_thread()
    tc = time.time()  # the judge first, in this process: the pool then has the cores to itself
    clf = train_classifier(x_tr, y_tr, 10, epochs=a.classifier_epochs, lr=CLASSIFIER["lr"], seed=CLASSIFIER["seed"])
    f_tr, _ = predict_features(clf, x_tr)
    f_ho, _ = predict_features(clf, x_ho)
    m_fd = len(x_tr)  # generated samples cut to the training set's size: the baseline's sample size
    baseline = frechet_distance(f_ho, f_tr)
    print(f"  judge: holdout accuracy {100 * accuracy(clf, x_ho, y_ho):.1f}%, real-vs-real FD(holdout, "
          f"{m_fd} train) = {baseline:.2f} ({time.time() - tc:.0f} s)", flush=True)

    extra = {k: v for k, v in {"ops": a.ops, "p": a.p, "target": a.target, "speed_images": a.speed_images,
                               "p_max": a.p_max}.items() if v is not None}
    from gan_core.augment import AugmentConfig

    for pol in policies:  # fail here, not in every worker
        print(f"  {pol}: {AugmentConfig(policy=pol, **extra)!r}")
    jobs = [(s, pol, seed, steps, extra, a.px, a.conditional) for s in sizes for pol in policies for seed in range(seeds)]
    jobs.sort(key=lambda j: j[1] == "off")  # augmented runs are a little dearer: first

    def progress(r: dict) -> None:
        print(f"  trained n={r['n']:4d} {r['policy']:11s} seed {r['seed']}: {r['steps_g']} G steps "
              f"({r['epochs']} epochs) in {r['train_s']:.0f} s, p at 25/50/75/100%: {_p_summary(r['trace'])}, "
              f"D's sign on reals (2nd half): {_late_signal(r['trace'])}"
              f"{' NONFINITE' if r['nonfinite'] else ''}", flush=True)

    runs = run_jobs(train_one, jobs, a.procs, on_done=progress)
    for r in runs:
        fake = r.pop("fake")
        f_fake, pred = predict_features(clf, fake)
        r["classes"] = class_coverage(pred, 10)
        r["fd_ratio"] = frechet_distance(f_ho, f_fake[:m_fd]) / baseline
        if memorisation is not None:
            idx = subset(y_tr, r["size"], r["seed"])
            r["memorised"] = memorisation(pixel_space(x_tr[idx].numpy()), pixel_space(x_ho.numpy()),
                                          pixel_space(fake[:1000].numpy()))["memorisation"]
        print(f"  n={r['n']:4d} {r['policy']:11s} seed {r['seed']}: FD ratio {r['fd_ratio']:.2f}, classes "
              f"{r['classes']}/10" + (f", memorised {r['memorised']:.2f}" if "memorised" in r else ""), flush=True)

    rows, means = [], {}
    for s in sizes:
        for pol in policies:
            rs = [r for r in runs if r["size"] == s and r["policy"] == pol]
            fd, fd_s = mean_std(r["fd_ratio"] for r in rs)
            cl, _ = mean_std(r["classes"] for r in rs)
            mem = mean_std(r["memorised"] for r in rs)[0] if all("memorised" in r for r in rs) else None
            means[s, pol] = fd
            rows.append([str(rs[0]["n"]), pol, str(len(rs)), f"{fd:.2f} ± {fd_s:.2f}",
                         ", ".join(f"{r['fd_ratio']:.2f}" for r in rs),
                         f"{cl:.1f} (min {min(r['classes'] for r in rs)})",
                         "-" if mem is None else f"{mem:.2f}",
                         "; ".join(_p_summary(r["trace"]) for r in rs) if pol == "adaptive" else "-",
                         f"{rs[0]['steps_g']} ({rs[0]['epochs']} ep)", f"{mean_std(r['train_s'] for r in rs)[0]:.0f}",
                         str(sum(r["nonfinite"] for r in rs))])
    print(f"\n## digits subsets, {steps} G steps each (in whole epochs), batch {BATCH}\n")
    print(table(["train images", "augment", "seeds", "FD ratio", "per seed", "classes (of 10)", "memorised",
                 "adaptive p at 25/50/75/100%", "G steps (epochs)", "train s/run", "nonfinite"], rows))

    print()
    if "off" in policies:
        for s in sizes:
            for pol in (q for q in policies if q != "off"):
                print(f"  n={s}: {pol} / off FD ratio = {means[s, pol] / means[s, 'off']:.2f}")
        goal = min(sizes, key=lambda s: abs(s - GOAL_SIZE))
        for pol in (q for q in policies if q != "off"):
            rs = [r for r in runs if r["size"] == goal and r["policy"] == pol]
            ok = all(r["classes"] == 10 for r in rs) and means[goal, pol] <= 0.5 * means[goal, "off"]
            print(f"goal at n={goal} ({pol}: 10/10 classes in every seed and FD ratio <= half of off's "
                  f"{means[goal, 'off']:.2f}): {'MET' if ok else 'NOT MET'} ({means[goal, pol]:.2f})")
    if a.json:
        import json

        Path(a.json).write_text(json.dumps({"argv": sys.argv[1:], "augment": extra, "runs": runs}, indent=1) + "\n")
    print()
    print(footer(t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
