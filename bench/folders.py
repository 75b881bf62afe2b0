"""Image folders as a user brings them, written from data that ships with installable packages (nothing is
downloaded: every image below is a file inside the scikit-learn or scikit-image wheel): the real-size
benchmarks point `ganflow prepare --source` at them.

    digits32   scikit-learn's 1,797 handwritten digits, upsampled to 32x32 grayscale (bicubic), with small
               random shifts (+-2 px) to make --count images; one sub-folder per class (a labelled folder).
               A stand-in for MNIST-like scans, not new data: every image is one of the 1,797, moved.
    photos32   --count random 32x32 RGB patches of the 7 colour photos bundled with scikit-image
               (astronaut, coffee, chelsea, rocket, the left motorcycle view) and scikit-learn (china,
               flower), all at the folder's root (an unlabelled folder). Each patch: a photo drawn
               uniformly, a square of random side in [32, 128] px at a random position, resized down to
               32 px (PIL LANCZOS), flipped left-right half the time; no two patches share a position
               in the same photo. 7 photos are few: the patches are varied textures and object parts of
               7 scenes, not a photo collection.
    photos64   the same at 64x64 (sides in [64, 256] px).
    lfw        scikit-image's LFW subset: its 100 faces (25x25 grayscale, the subset's own size) at the
               folder's root; the subset's other 100 images, background crops, are left out. Fixed:
               no --count, no --seed.

Left out of the photos, though bundled: the grayscale images (camera, textures such as brick, grass and
gravel, text, cell, coins, moon...), which would make a second, colourless population in an RGB set; the
synthetic colorwheel and logo; hubble_deep_field and retina (mostly black background); the
immunohistochemistry slide (microscopy, not a photo); the right motorcycle view (the left one's scene).

    .venv/bin/python -m bench.folders digits32 /tmp/digits32 [--count 4000] [--seed 0]
    .venv/bin/python -m bench.folders photos32 /tmp/photos32 [--count 4000] [--seed 0]
    .venv/bin/python -m bench.folders photos64 /tmp/photos64 [--count 4000] [--seed 0]
    .venv/bin/python -m bench.folders lfw /tmp/lfw

DIR must be new or empty: files left from another run would join an unlabelled folder unseen.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bench"

SHIFT = 2  # px at 32: a digit moves by at most ~1/16 of the side, as handwriting within a box does
COUNT = 4000
ZOOM = 4  # a photo patch's side is drawn from [size, ZOOM * size] px before it is resized to size
# scikit-image's bundled colour photos (skimage/data/*.png|jpg: each loader reads its file from the wheel;
# pooch, which the others need to download, is not installed) and scikit-learn's two (sklearn/datasets/images).
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle")
SKLEARN_PHOTOS = ("china", "flower")
LFW_FACES = 100  # lfw_subset(): "100 first images are faces and subsequent 100 are non-faces"


def digits32(out: Path, count: int = COUNT, seed: int = 0, size: int = 32) -> int:
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


def bundled_photos() -> dict[str, np.ndarray]:
    """The photos' (H, W, 3) uint8 arrays by name, read from the installed packages' files."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    loaders = {"motorcycle": lambda: data.stereo_motorcycle()[0]}
    photos = {name: np.asarray(loaders.get(name, getattr(data, name, None))()) for name in SKIMAGE_PHOTOS}
    sk = load_sample_images()
    photos.update({Path(f).stem: np.asarray(img) for f, img in zip(sk.filenames, sk.images)})
    assert set(photos) == set(SKIMAGE_PHOTOS) | set(SKLEARN_PHOTOS), sorted(photos)
    assert all(p.ndim == 3 and p.shape[2] == 3 and p.dtype == np.uint8 for p in photos.values())
    return photos


def photos(out: Path, count: int = COUNT, seed: int = 0, size: int = 32) -> int:
    """Write `count` size x size RGB patches of the bundled photos as out/NNNNN.png; returns how many."""
    from PIL import Image

    pics = [Image.fromarray(p) for p in bundled_photos().values()]
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    taken: set[tuple[int, int, int]] = set()
    for i in range(count):
        while True:  # a position already cut from that photo is drawn again (rare: ~10^5 per photo)
            k = int(rng.integers(len(pics)))
            w, h = pics[k].size
            side = int(rng.integers(size, min(ZOOM * size, w, h) + 1))
            x, y = int(rng.integers(w - side + 1)), int(rng.integers(h - side + 1))
            flip = bool(rng.random() < 0.5)
            if (k, x, y) not in taken:
                break
        taken.add((k, x, y))
        patch = pics[k].crop((x, y, x + side, y + side)).resize((size, size), Image.Resampling.LANCZOS)
        (patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else patch).save(out / f"{i:05d}.png")
    return count


def lfw(out: Path) -> int:
    """Write scikit-image's 100 LFW faces (25x25 grayscale) as out/NNN.png; returns how many."""
    from PIL import Image
    from skimage.data import lfw_subset

    faces = lfw_subset()[:LFW_FACES]  # float64 in [0, 1] (its docstring says uint8; it is not)
    out.mkdir(parents=True, exist_ok=True)
    for i, face in enumerate(faces):
        Image.fromarray(np.round(face * 255).astype(np.uint8), "L").save(out / f"{i:03d}.png")
    return len(faces)


class Folder(NamedTuple):
    write: Callable[[Path, int, int], int]  # (out, count, seed) -> images written
    what: str                               # the printed line's noun phrase
    fixed: bool = False                     # a fixed set: --count and --seed are refused


FOLDERS = {
    "digits32": Folder(digits32, "grayscale 32x32 digits (scikit-learn's 1,797, shifted) in 10 class folders"),
    "photos32": Folder(lambda out, n, seed: photos(out, n, seed, 32),
                       f"RGB 32x32 patches of {len(SKIMAGE_PHOTOS) + len(SKLEARN_PHOTOS)} bundled photos"),
    "photos64": Folder(lambda out, n, seed: photos(out, n, seed, 64),
                       f"RGB 64x64 patches of {len(SKIMAGE_PHOTOS) + len(SKLEARN_PHOTOS)} bundled photos"),
    "lfw": Folder(lambda out, n, seed: lfw(out), "grayscale 25x25 faces of scikit-image's LFW subset", fixed=True),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(FOLDERS))
    ap.add_argument("out", type=Path, help="a new or empty folder")
    ap.add_argument("--count", type=int, default=None, help=f"images to write (default {COUNT}; not for lfw)")
    ap.add_argument("--seed", type=int, default=None, help="default 0; not for lfw")
    a = ap.parse_args(argv)
    folder = FOLDERS[a.name]
    if folder.fixed and (a.count is not None or a.seed is not None):
        ap.error(f"{a.name} is a fixed set: it takes no --count or --seed")
    if a.count is not None and a.count < 1:
        ap.error(f"--count must be at least 1, got {a.count}")
    if a.out.exists() and (not a.out.is_dir() or any(a.out.iterdir())):
        ap.error(f"{a.out} is not an empty folder: files from before would join the new ones")
    n = folder.write(a.out, COUNT if a.count is None else a.count, 0 if a.seed is None else a.seed)
    print(f"wrote {n} {folder.what} to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
