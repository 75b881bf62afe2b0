"""Untrusted image uploads: a "zoo" of broken, hostile and unusual files, as a folder and as a zip.

Every bad file is skipped with a short reason; every usable mode (CMYK, 16-bit, palette, alpha)
comes out with sensible values; nothing is written anywhere; nothing usable is one ValueError."""
from __future__ import annotations

import io
import os
import stat
import struct
import tempfile
import threading
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_core.data import MAX_PIXELS, load_images

SIZE = 8


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb_png() -> bytes:
    """A 100-byte PNG whose header claims 100000 x 100000 pixels."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))


def _palette(transparent: bool) -> bytes:
    img = Image.new("P", (20, 16), 1)
    img.putpalette([0, 0, 0, 0, 128, 255] + [0] * 762)  # index 1 = (0, 128, 255)
    return _save(img, "PNG", **({"transparency": 1} if transparent else {}))


def _noise(fmt: str) -> bytes:
    px = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return _save(Image.fromarray(px), fmt)


def v(level: float) -> float:
    """An 8-bit level as the loader's [-1, 1] value."""
    return level / 127.5 - 1.0


# Usable files: name -> (bytes, expected per-channel value for channels=3, tolerance).
# Alpha is composited on WHITE (gan_core/data.py _to_8bit).
USABLE = {
    "rgb.png": (_save(Image.new("RGB", (20, 16), (200, 100, 50)), "PNG"), (v(200), v(100), v(50)), 0.01),
    "cmyk.jpg": (_save(Image.new("CMYK", (20, 16), (0, 255, 255, 0)), "JPEG"), (1.0, -1.0, -1.0), 0.06),
    # 16-bit: 40000/65535 of full scale -> level 156, not clipped to white (PIL's convert("L") clips)
    "gray16.png": (_save(Image.fromarray(np.full((16, 20), 40000, np.uint16)), "PNG"), (v(156),) * 3, 0.01),
    "palette.png": (_palette(False), (-1.0, v(128), 1.0), 0.01),
    "palette_transparent.png": (_palette(True), (1.0, 1.0, 1.0), 0.01),  # was (0, 128, 255): tRNS ignored
    "rgba_clear.png": (_save(Image.new("RGBA", (20, 16), (0, 0, 0, 0)), "PNG"), (1.0, 1.0, 1.0), 0.01),
    "rgba_half.png": (_save(Image.new("RGBA", (20, 16), (255, 0, 0, 128)), "PNG"), (1.0, v(127), v(127)), 0.02),
    "la_clear.png": (_save(Image.new("LA", (20, 16), (0, 0)), "PNG"), (1.0, 1.0, 1.0), 0.01),
    "la_opaque.png": (_save(Image.new("LA", (20, 16), (50, 255)), "PNG"), (v(50),) * 3, 0.01),
}
GRAY = {"rgb.png": v(0.299 * 200 + 0.587 * 100 + 0.114 * 50), "gray16.png": v(156),
        "rgba_clear.png": 1.0, "la_opaque.png": v(50), "palette_transparent.png": 1.0}

# Bad files present in both forms: name -> (bytes, exact reason).
TRUNCATED = "cannot decode image: file is truncated"
BAD = {
    "zero.png": (b"", "empty file (0 bytes)"),
    "zero.jpg": (b"", "empty file (0 bytes)"),
    "truncated.png": (_noise("PNG")[:3000], TRUNCATED),
    "truncated.jpg": (_noise("JPEG")[:1500], TRUNCATED),
    "text.png": (b"this is not an image\n", "cannot decode image: not a PNG or JPEG file"),
    "gif.png": (_save(Image.new("P", (4, 4)), "GIF"), "not a PNG/JPEG image (format GIF)"),
    "bomb.png": (_bomb_png(), f"decompression bomb guard: image over {MAX_PIXELS} pixels"),
    "notes.txt": (b"hello", "not an image file (extension .txt)"),
}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture
def sealed(tmp_path: Path, monkeypatch):
    """Run in an empty cwd with an empty temp dir; afterwards nothing under tmp_path may have changed."""
    for d in ("cwd", "scratch", "outside"):
        (tmp_path / d).mkdir()
    (tmp_path / "outside" / "secret.png").write_bytes(USABLE["rgb.png"][0])  # what links point at
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))
    yield tmp_path


def _folder_zoo(root: Path) -> dict[str, str]:
    root.mkdir()
    for name, (raw, *_) in {**USABLE, **BAD}.items():
        (root / name).write_bytes(raw)
    outside = root.parent / "outside"
    os.symlink(outside / "secret.png", root / "link_out.png")
    os.symlink(outside, root / "linkdir")
    return {**{n: r for n, (_, r) in BAD.items()}, "link_out.png": "symlink", "linkdir": "symlink"}


def _zip_zoo(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path, "w") as zf:
        for name, (raw, *_) in {**USABLE, **BAD}.items():
            zf.writestr(name, raw)
        zf.writestr("../escape.png", USABLE["rgb.png"][0])
        zf.writestr("/abs.png", USABLE["rgb.png"][0])
        zf.writestr("..\\win.png", USABLE["rgb.png"][0])
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("crc.png", b"\x00" * 64)
    data = bytearray(path.read_bytes())  # corrupt crc.png's stored bytes: its CRC no longer matches
    at = data.index(b"crc.png") + len("crc.png")
    data[at:at + 8] = b"\x01" * 8
    path.write_bytes(bytes(data))
    return {**{n: r for n, (_, r) in BAD.items()},
            "../escape.png": "path leaves the archive", "/abs.png": "path leaves the archive",
            "..\\win.png": "path leaves the archive", "link.png": "symlink",
            "crc.png": "unreadable: Bad CRC-32 for file 'crc.png'"}


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_zoo_skips_each_bad_file_with_its_reason(sealed: Path, form: str):
    src = sealed / ("zoo" if form == "folder" else "zoo.zip")
    expected = _folder_zoo(src) if form == "folder" else _zip_zoo(src)
    before = _snapshot(sealed)
    pil_limit = Image.MAX_IMAGE_PIXELS

    x, y, names, skipped = load_images(src, size=SIZE, channels=3)

    assert dict(skipped) == expected and len(skipped) == len(expected)
    assert names == ["all"] and y.tolist() == [0] * len(USABLE)
    assert x.shape == (len(USABLE), 3, SIZE, SIZE) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.min() >= -1.0 and x.max() <= 1.0
    for row, name in zip(x, sorted(USABLE)):  # both forms yield files in sorted name order
        _, want, tol = USABLE[name]
        got = row.mean(dim=(1, 2)).tolist()
        assert np.allclose(got, want, atol=tol), (name, got, want)
        assert float(row.flatten(1).std(dim=1).max()) < 0.02, name  # flat colours stay flat

    gray, *_ = load_images(src, size=SIZE, channels=1)
    means = dict(zip(sorted(USABLE), gray.mean(dim=(1, 2, 3)).tolist()))
    for name, want in GRAY.items():
        assert means[name] == pytest.approx(want, abs=0.01), name

    assert _snapshot(sealed) == before  # nothing extracted, written or touched anywhere
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # PIL's global restored


def test_a_fifo_is_skipped_not_read(tmp_path: Path):
    (tmp_path / "ok.png").write_bytes(USABLE["rgb.png"][0])
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)  # reading it blocks until a writer comes: the loader must not try
    result: list = []
    worker = threading.Thread(target=lambda: result.append(load_images(tmp_path, size=SIZE, channels=3)),
                              daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # unblock the stuck reader (a writer that closes at once = EOF), then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=10)
        pytest.fail("load_images blocked reading a FIFO")
    x, _, _, skipped = result[0]
    assert x.shape[0] == 1 and skipped == [("fifo.png", "not a regular file")]


def test_sixteen_bit_png_uses_the_full_range(tmp_path: Path):
    ramp = np.repeat(np.array([0, 1000, 32768, 65535], np.uint16), 4)[None].repeat(4, 0)  # 4x16
    for i, level in enumerate((0, 1000, 32768, 65535)):
        Image.fromarray(np.full((4, 4), level, np.uint16)).save(tmp_path / f"{i}.png")
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    x, _, _, skipped = load_images(tmp_path, size=4, channels=1)
    assert skipped == []
    flat = x[:4].mean(dim=(1, 2, 3)).tolist()
    assert flat == pytest.approx([v(0), v(4), v(128), v(255)], abs=1e-5)  # 65535 -> 255, 1000 -> 4


def test_empty_sources_raise_one_clear_error(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"^no usable images in .*empty: it contains no files$"):
        load_images(tmp_path / "empty", size=SIZE, channels=1)
    with zipfile.ZipFile(tmp_path / "empty.zip", "w"):
        pass
    with pytest.raises(ValueError, match=r"no usable images in .*empty\.zip: it contains no files"):
        load_images(tmp_path / "empty.zip", size=SIZE, channels=1)


def test_all_bad_raises_naming_the_first_reasons(tmp_path: Path):
    for name, (raw, _) in BAD.items():
        (tmp_path / name).write_bytes(raw)
    with pytest.raises(ValueError) as err:
        load_images(tmp_path, size=SIZE, channels=3)
    msg = str(err.value)
    assert msg == (f"no usable images in {tmp_path}: {len(BAD)} files skipped ("
                   f"bomb.png: {BAD['bomb.png'][1]}; gif.png: {BAD['gif.png'][1]}; "
                   f"notes.txt: {BAD['notes.txt'][1]}; and {len(BAD) - 3} more)")


def test_corrupt_zip_is_one_clear_error(tmp_path: Path):
    archive = tmp_path / "broken.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.png", USABLE["rgb.png"][0])
    archive.write_bytes(archive.read_bytes().replace(b"PK\x01\x02", b"XX\x01\x02"))  # central directory
    assert zipfile.is_zipfile(archive)  # the end record is intact: it looks like a zip
    with pytest.raises(ValueError, match=r"broken\.zip is not a readable zip archive"):
        load_images(archive, size=SIZE, channels=1)


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_a_single_image_is_returned(tmp_path: Path, form: str):
    raw = USABLE["palette.png"][0]
    if form == "folder":
        src = tmp_path / "one"
        src.mkdir()
        (src / "only.png").write_bytes(raw)
    else:
        src = tmp_path / "one.zip"
        with zipfile.ZipFile(src, "w") as zf:
            zf.writestr("cls/only.png", raw)
    x, y, names, skipped = load_images(src, size=SIZE, channels=3)
    assert x.shape == (1, 3, SIZE, SIZE) and y.tolist() == [0] and skipped == []
    assert names == (["all"] if form == "folder" else ["cls"])
