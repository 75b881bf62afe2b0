"""Datasets as tensors in [-1, 1]: sklearn digits (bundled) or user images from a folder / zip.

User uploads are untrusted: zips are read in memory (never extracted), members that would leave
the archive or are symlinks are refused, and oversized images are skipped rather than decoded.
"""
from __future__ import annotations

import io
import os
import stat
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg"}
MAX_PIXELS = 40_000_000  # ~ 8000x5000; anything bigger is a decompression bomb for our purposes
MAX_MEMBER_BYTES = 64 * 2**20  # uncompressed zip member cap: a zip bomb never reaches PIL
ROOT_CLASS = "all"


def load_digits() -> tuple[Tensor, Tensor]:
    """sklearn's 1797 8x8 digits (pixel values 0..16) as (N, 1, 8, 8) float32 in [-1, 1]."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = torch.from_numpy(d.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    return x, y


@contextmanager
def _pil_bomb_guard(max_pixels: int) -> Iterator[None]:
    # PIL only warns between MAX_IMAGE_PIXELS and twice that; make the warning an error so the
    # file is skipped, and restore PIL's global afterwards.
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


class _Unusable(ValueError):
    """A file we refuse, with the reason as the user should read it."""


SIXTEEN_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}  # 16-bit grayscale PNG opens as one of these


def _to_8bit(img: Image.Image, channels: int) -> Image.Image:
    """Any PNG/JPEG mode -> 8-bit L or RGB.

    16-bit grayscale: PIL's convert("L") clips at 255 (every pixel white), so scale 0..65535 down.
    Alpha (RGBA, LA, PA, palette or single-colour transparency) is composited on a WHITE background,
    the usual convention for sprites/scans with transparent margins (black would merge with dark ink)."""
    if img.mode in SIXTEEN_BIT_MODES:
        a = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("L" if channels == 1 else "RGB")


def _decode(raw: bytes, size: int, channels: int, max_pixels: int) -> np.ndarray:
    """Bytes -> (C, size, size) float32 in [-1, 1]. Raises on anything unusable."""
    if not raw:
        raise _Unusable("empty file (0 bytes)")
    try:
        opened = Image.open(io.BytesIO(raw))
    except Image.UnidentifiedImageError:  # its message names a BytesIO address: useless to a user
        raise _Unusable("cannot decode image: not a PNG or JPEG file") from None
    with opened as img:
        if img.format not in ("PNG", "JPEG"):
            raise _Unusable(f"not a PNG/JPEG image (format {img.format})")
        w, h = img.size
        if w * h > max_pixels:  # checked on the header, before any pixel is decoded
            raise Image.DecompressionBombError(f"image too large ({w}x{h} > {max_pixels} pixels)")
        try:
            img.load()  # decode now, so a truncated file is reported as such
        except OSError as e:
            if "truncated" not in str(e):
                raise
            raise _Unusable("cannot decode image: file is truncated") from None
        img = ImageOps.exif_transpose(img)  # phone photos: honour the orientation tag
        img = _to_8bit(img, channels)
        # Centre-crop to square then resize, so non-square photos are not squashed.
        img = ImageOps.fit(img, (size, size), method=Image.Resampling.LANCZOS)
        arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _class_of(rel: PurePosixPath) -> str:
    return rel.parent.name if len(rel.parts) > 1 else ROOT_CLASS


def _iter_folder(root: Path, skipped: list[tuple[str, str]]) -> Iterator[tuple[PurePosixPath, bytes]]:
    for dirpath, dirnames, filenames in os.walk(root):  # followlinks=False: no escaping via links
        dirnames.sort()
        for name in [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            dirnames.remove(name)  # os.walk would not descend anyway: say so instead of staying silent
            skipped.append((Path(dirpath, name).relative_to(root).as_posix(), "symlink"))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = PurePosixPath(path.relative_to(root).as_posix())
            if path.is_symlink():
                skipped.append((str(rel), "symlink"))
                continue
            try:
                regular = stat.S_ISREG(path.lstat().st_mode)
            except OSError as e:
                skipped.append((str(rel), f"unreadable: {e.strerror or e}"))
                continue
            if not regular:  # a FIFO named x.png would block read_bytes() forever
                skipped.append((str(rel), "not a regular file"))
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append((str(rel), f"not an image file (extension {path.suffix or 'none'})"))
                continue
            try:
                if path.stat().st_size > MAX_MEMBER_BYTES:
                    skipped.append((str(rel), f"file larger than {MAX_MEMBER_BYTES} bytes"))
                    continue
                raw = path.read_bytes()
            except OSError as e:
                skipped.append((str(rel), f"unreadable: {e}"))
                continue
            yield rel, raw


def _leaves_archive(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":")


def _iter_zip(source: Path, skipped: list[tuple[str, str]]) -> Iterator[tuple[PurePosixPath, bytes]]:
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{source} is not a readable zip archive: {e}") from None
    with archive as zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            name = info.filename
            if info.is_dir():
                continue
            if _leaves_archive(name):
                skipped.append((name, "path leaves the archive"))
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                skipped.append((name, "symlink"))
                continue
            rel = PurePosixPath(name.replace("\\", "/"))
            if rel.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append((name, f"not an image file (extension {rel.suffix or 'none'})"))
                continue
            if info.file_size > MAX_MEMBER_BYTES:
                skipped.append((name, f"member larger than {MAX_MEMBER_BYTES} bytes"))
                continue
            try:
                raw = zf.read(info)  # in memory only; nothing is extracted to disk
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as e:
                skipped.append((name, f"unreadable: {e}"))
                continue
            yield rel, raw


def load_images(
    source: Path, size: int, channels: int, max_pixels: int = MAX_PIXELS
) -> tuple[Tensor, Tensor, list[str], list[tuple[str, str]]]:
    """Images from a folder or .zip as ((N, C, size, size) in [-1, 1], labels, class names, skipped).
    The label is the image's immediate parent folder (sorted names); root-level images form 'all'."""
    source = Path(source)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if not source.exists():
        raise FileNotFoundError(f"image source {source} does not exist")

    skipped: list[tuple[str, str]] = []
    if source.is_dir():
        items = _iter_folder(source, skipped)
    elif zipfile.is_zipfile(source):
        items = _iter_zip(source, skipped)
    else:
        raise ValueError(f"{source} is neither a folder nor a zip archive")

    arrays: list[np.ndarray] = []
    names: list[str] = []
    with _pil_bomb_guard(max_pixels):
        for rel, raw in items:
            try:
                arrays.append(_decode(raw, size, channels, max_pixels))
            except _Unusable as e:
                skipped.append((str(rel), str(e)))
                continue
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                # PIL refuses at open (its message gives no dimensions); ours names the limit.
                skipped.append((str(rel), f"decompression bomb guard: image over {max_pixels} pixels"))
                continue
            except Exception as e:  # noqa: BLE001 - any decoder failure means "skip this file"
                skipped.append((str(rel), f"cannot decode image: {e}"))
                continue
            names.append(_class_of(rel))

    if not arrays:
        if not skipped:
            raise ValueError(f"no usable images in {source}: it contains no files")
        first = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        raise ValueError(f"no usable images in {source}: {len(skipped)} files skipped ({first}{more})")

    class_names = sorted(set(names))
    index = {c: i for i, c in enumerate(class_names)}
    x = torch.from_numpy(np.stack(arrays).astype(np.float32))
    y = torch.tensor([index[c] for c in names], dtype=torch.int64)
    return x, y, class_names, skipped


def split(
    x: Tensor, y: Tensor, holdout_fraction: float, seed: int | tuple[int, ...]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Deterministic stratified split: each class sends round(fraction * n_c) samples to holdout
    (at least one when it has two or more), so small classes are represented on both sides."""
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    rng = np.random.default_rng(seed)
    labels = y.cpu().numpy()
    hold: list[np.ndarray] = []
    train: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(holdout_fraction * len(idx)))
        if holdout_fraction > 0 and k == 0 and len(idx) >= 2:
            k = 1
        hold.append(idx[:k])
        train.append(idx[k:])
    # Shuffle across classes too: class-sorted order would bias any unshuffled consumer.
    tr = torch.from_numpy(rng.permutation(np.concatenate(train)) if train else np.zeros(0, np.int64))
    ho = torch.from_numpy(rng.permutation(np.concatenate(hold)) if hold else np.zeros(0, np.int64))
    return x[tr], y[tr], x[ho], y[ho]


VAL_MIN = 50  # items: a smaller validation split makes the per-epoch probe mostly noise
VAL_MAX_SHARE = 0.5  # ... but it never takes more than half of what the holdout leaves


def train_val_holdout(
    x: Tensor, y: Tensor, holdout_fraction: float, val_fraction: float, seed: int
) -> dict[str, tuple[Tensor, Tensor]]:
    """Three disjoint stratified splits: "train" (fit), "val" (selection: probes, kept checkpoints,
    Tune) and "holdout" (the final report and the promotion gate).

    The holdout is exactly `split(x, y, holdout_fraction, seed)`'s, so scores stay comparable with
    runs made before the validation split existed. Validation is carved out of the rest: val_fraction
    of ALL items, raised to min(VAL_MIN, a quarter of the rest) and at least 1 item (small sets still
    get a usable one without losing most of their training data), at most VAL_MAX_SHARE of the rest."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    x_rest, y_rest, x_ho, y_ho = split(x, y, holdout_fraction, seed)
    n_rest = len(x_rest)
    target = max(round(val_fraction * len(x)), min(VAL_MIN, n_rest // 4), 1)
    share = min(target / max(n_rest, 1), VAL_MAX_SHARE)
    # Its own random stream: the holdout's draws above stay exactly what they were.
    x_tr, y_tr, x_va, y_va = split(x_rest, y_rest, share, (seed, 1))
    return {"train": (x_tr, y_tr), "val": (x_va, y_va), "holdout": (x_ho, y_ho)}
