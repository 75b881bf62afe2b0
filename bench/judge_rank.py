"""Does the judge of an unlabelled folder rank flawed photos as it ranks flawed digits (issue 27)?

tests/test_judge.py shows the self-supervised judge (gan_core.classifier.SelfSupervisedJudge) ranking
real < noised < blurred digits at 8x8. This does the same on 32x32 RGB photo patches, through the product's
own path for a user's folder without class sub-folders: `ganflow prepare`'s stage (gan_core.data.load_images,
then the train / validation / holdout split) and the classifier stage, which trains the self-supervised judge
on the train split (gan_core.classifier.train_self_supervised); then flows.evaluate.Evaluator scores image
sets against the holdout split exactly as it scores a generator's samples: its fd_ratio is FD(set, holdout)
over FD(as many real training images, holdout), the mean over 10 random training subsets.

The sets, each of n = holdout-size images (a random subset of the TRAIN split, never the holdout they are
compared with; a new subset and new noise in each of --draws draws):

    real             the subset itself: a perfect generator's replay; its ratio is ~1 by construction
    noised s=0.1/0.2 plus Gaussian noise of that sigma in the images' [-1, 1] units (0.1 = 12.75 of 255
                     grey levels), clipped to [-1, 1]
    blurred 1/2 px   a Gaussian blur of sigma 1 or 2 px (scipy.ndimage, edges replicated)

It exits 0 if the mean ratios rank real < noised 0.1 < noised 0.2 < blurred 1 < blurred 2: noised before
blurred is the order the judge gives on digits (tests/test_judge.py), and within each kind the stronger flaw
must score worse. Two weaker claims are printed whatever the ranking: real below every flawed set (per draw),
and the within-kind order alone. A last column scores the same sets with the same network untrained (seeded
random init, loaded as the stage's judge): what the judge's training adds. The judge trains for --epochs
(default 5, as the digits test; the classifier stage's default, classifier.epochs, is 30: ~10-20 min on 2
busy cores, --epochs 30). bench/RESULTS.md section 10 has the numbers: on photos the order does NOT hold.

    .venv/bin/python -m bench.judge_rank                            # 2,000 patches, ~2 min on 2 busy cores
    .venv/bin/python -m bench.judge_rank --folder /tmp/photos32     # a folder from bench.folders photos32
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from bench.common import footer, mean_std, table  # noqa: E402

SIZE = 32
NOISE = (0.1, 0.2)  # sigma in [-1, 1] units
BLUR = (1.0, 2.0)   # sigma in px
ORDER = ("real", *(f"noised s={s}" for s in NOISE), *(f"blurred {b:g} px" for b in BLUR))


def flawed_sets(real, generator) -> dict:
    """The sets of ORDER, from one real batch (N, C, H, W) in [-1, 1]."""
    import torch
    from scipy.ndimage import gaussian_filter

    sets = {"real": real}
    for s in NOISE:
        sets[f"noised s={s}"] = (real + s * torch.randn(real.shape, generator=generator)).clamp(-1, 1)
    for b in BLUR:
        sets[f"blurred {b:g} px"] = torch.from_numpy(gaussian_filter(real.numpy(), sigma=(0, 0, b, b), mode="nearest"))
    return sets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", type=Path, help="an unlabelled folder of 32x32 RGB images (default: bench.folders "
                    "photos32 writes --count patches to a temporary folder)")
    ap.add_argument("--count", type=int, default=2000, help="patches written when no --folder is given")
    ap.add_argument("--epochs", type=int, default=5, help="the judge's training epochs (classifier.epochs)")
    ap.add_argument("--draws", type=int, default=5, help="random real subsets (each with its own flaws)")
    ap.add_argument("--seed", type=int, default=0, help="patches, split, judge and draws")
    a = ap.parse_args(argv)
    t0 = time.time()

    import torch

    from bench.folders import photos
    from flows.data import stages
    from flows.data.load import CLASSIFIER_WEIGHTS, load_split
    from flows.evaluate import Evaluator
    from flows.params import Params
    from gan_core.classifier import SelfSupervisedJudge

    with tempfile.TemporaryDirectory(prefix="judge_rank-") as tmp:
        folder = a.folder
        if folder is None:
            folder = Path(tmp) / "photos32"
            photos(folder, a.count, a.seed, SIZE)
        ws = Path(tmp) / "ws"
        params = Params(data={"name": "photos32", "source": str(folder.resolve()), "image_size": SIZE,
                              "channels": 3, "seed": a.seed},
                        classifier={"epochs": a.epochs, "seed": a.seed})
        manifest = stages.prepare(params, ws)
        if len(manifest["classes"]) != 1:
            sys.exit(f"{folder} has class sub-folders ({len(manifest['classes'])} classes): the classifier stage "
                     "would train a labelled classifier, not the self-supervised judge")
        t_judge = time.time()
        info = stages.train_classifier(params, ws)
        t_judge = time.time() - t_judge
        ev = Evaluator(ws, "holdout")
        # The same network untrained (seeded random init), loaded as the stage's judge would be: what the
        # training adds. Its weights replace the trained ones on disk, so a second Evaluator scores with it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(a.seed)
            torch.save(SelfSupervisedJudge((3, SIZE, SIZE)).state_dict(), ws / CLASSIFIER_WEIGHTS)
        ev_random = Evaluator(ws, "holdout")
        x_tr, _ = load_split(ws, "train")
        n = len(ev.ref_features)
        g = torch.Generator().manual_seed(a.seed)
        ratios: dict[str, list[float]] = {k: [] for k in ORDER}
        random: dict[str, list[float]] = {k: [] for k in ORDER}
        for _ in range(a.draws):
            real = x_tr[torch.randperm(len(x_tr), generator=g)[:n]]
            for name, images in flawed_sets(real, g).items():
                ratios[name].append(ev.measure_samples(images, full=False)["fd_ratio"])
                random[name].append(ev_random.measure_samples(images, full=False)["fd_ratio"])

    means = {k: mean_std(v)[0] for k, v in ratios.items()}
    in_order = sum(all(ratios[p][d] < ratios[q][d] for p, q in zip(ORDER, ORDER[1:])) for d in range(a.draws))
    print(f"\n## judge ranking: {manifest['counts']['train']} train / {n} holdout {SIZE}x{SIZE} RGB patches, "
          f"self-supervised judge ({a.epochs} epochs, {t_judge:.0f} s), holdout rotation accuracy "
          f"{info['holdout_rotation_accuracy']:.3f} (chance 0.25)\n")
    print(table(["set", f"FD ratio (mean ± sd, {a.draws} draws of {n})", "FD (mean)", "untrained judge: FD ratio"],
                [[k, "{:.2f} ± {:.2f}".format(*mean_std(v)), f"{means[k] * ev.baseline(n):.2f}",
                  "{:.2f} ± {:.2f}".format(*mean_std(random[k]))] for k, v in ratios.items()]))
    holds = list(ORDER) == sorted(means, key=means.get)
    print(f"\nreal-vs-real FD (the ratio's denominator, {n} training images): {ev.baseline(n):.2f}")
    print(f"ranking {' < '.join(ORDER)}: {'HOLDS' if holds else 'DOES NOT HOLD'} on the means "
          f"({' < '.join(sorted(means, key=means.get))}); in order in {in_order}/{a.draws} single draws")
    # Weaker claims, reported whatever the ranking: each flaw is seen, and a stronger flaw of a kind scores worse.
    seen = sum(all(ratios["real"][d] < ratios[k][d] for k in ORDER[1:]) for d in range(a.draws))
    kinds = [ORDER[1:1 + len(NOISE)], ORDER[1 + len(NOISE):]]
    graded = all(means[p] < means[q] for kind in kinds for p, q in zip(kind, kind[1:]))
    print(f"real below every flawed set: {seen}/{a.draws} draws; a stronger flaw of a kind scores worse (means): "
          f"{'yes' if graded else 'no'}")
    print(footer(t0))
    return 0 if holds else 1


if __name__ == "__main__":
    sys.exit(main())
