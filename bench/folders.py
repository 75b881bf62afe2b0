"""Image folders as a user brings them, written from data that ships with installable packages (nothing is
downloaded): the real-size benchmarks point `ganflow prepare --source` at them.

    digits32   scikit-learn's 1,797 handwritten digits, upsampled to 32x32 grayscale (bicubic), with small
               random shifts (+-2 px) to make --count images; one sub-folder per class (a labelled folder).
               A stand-in for MNIST-like scans, not new data: every image is one of the 1,797, moved.

    .venv/bin/python -m bench.folders digits32 /tmp/digits32 [--count 4000] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bench"

SHIFT = 2  # px at 32: a digit moves by at most ~1/16 of the side, as handwriting within a box does


def digits32(out: Path, count: int = 4000, seed: int = 0, size: int = 32) -> int:
    """Write `count` PNGs under out/<digit>/; returns how many were written."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    # Every digit once, then random repeats: each class keeps its share of the 1,797.
    order = np.concatenate([rng.permutation(len(d.images)),
                            rng.integers(0, len(d.images), max(0, count - len(d.images)))])[:count]
    for c in range(10):
        (out / str(c)).mkdir(parents=True, exist_ok=True)
    for i, k in enumerate(order):
        img = Image.fromarray((d.images[k] * (255 / 16)).astype(np.uint8)).resize((size, size), Image.BICUBIC)
        dx, dy = rng.integers(-SHIFT, SHIFT + 1, 2)
        moved = Image.new("L", (size, size), 0)
        moved.paste(img, (int(dx), int(dy)))
        moved.save(out / str(d.target[k]) / f"{i:05d}.png")
    return len(order)


FOLDERS = {"digits32": digits32}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(FOLDERS))
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    n = FOLDERS[a.name](a.out, a.count, a.seed)
    print(f"wrote {n} images under {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
