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


def _decode(raw: bytes, size: int, channels: int, max_pixels: int) -> np.ndarray:
    """Bytes -> (C, size, size) float32 in [-1, 1]. Raises on anything unusable."""
    with Image.open(io.BytesIO(raw)) as img:
        if img.format not in ("PNG", "JPEG"):
            raise ValueError(f"not a PNG/JPEG image (format {img.format})")
        w, h = img.size
        if w * h > max_pixels:  # checked on the header, before any pixel is decoded
            raise Image.DecompressionBombError(f"image too large ({w}x{h} > {max_pixels} pixels)")
        img = ImageOps.exif_transpose(img)  # phone photos: honour the orientation tag
        img = img.convert("L" if channels == 1 else "RGB")
        # Centre-crop to square then resize, so non-square photos are not squashed.
        img = ImageOps.fit(img, (size, size), method=Image.Resampling.LANCZOS)
        arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _class_of(rel: PurePosixPath) -> str:
    return rel.parent.name if len(rel.parts) > 1 else ROOT_CLASS


def _iter_folder(root: Path, skipped: list[tuple[str, str]]) -> Iterator[tuple[PurePosixPath, bytes]]:
    for dirpath, dirnames, filenames in os.walk(root):  # followlinks=False: no escaping via links
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = PurePosixPath(path.relative_to(root).as_posix())
            if path.is_symlink():
                skipped.append((str(rel), "symlink"))
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
    with zipfile.ZipFile(source) as zf:
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
            except Exception as e:  # noqa: BLE001 - any decoder failure means "skip this file"
                reason = "decompression bomb guard" if isinstance(
                    e, (Image.DecompressionBombError, Image.DecompressionBombWarning)
                ) else "cannot decode image"
                skipped.append((str(rel), f"{reason}: {e}"))
                continue
            names.append(_class_of(rel))

    if not arrays:
        first = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
        raise ValueError(f"no usable images in {source}: {len(skipped)} files skipped" + (f" ({first})" if first else ""))

    class_names = sorted(set(names))
    index = {c: i for i, c in enumerate(class_names)}
    x = torch.from_numpy(np.stack(arrays).astype(np.float32))
    y = torch.tensor([index[c] for c in names], dtype=torch.int64)
    return x, y, class_names, skipped


def split(x: Tensor, y: Tensor, holdout_fraction: float, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
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
