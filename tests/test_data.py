import io
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_core.data import load_digits, load_images, split


def png_bytes(value: int, size=(12, 10), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (value,) * len(mode) if mode != "L" else value).save(buf, format="PNG")
    return buf.getvalue()


def test_digits():
    x, y = load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.int64
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert set(y.tolist()) == set(range(10))


def test_folder_with_classes_and_junk(tmp_path: Path):
    for cls, value in (("cats", 255), ("dogs", 0)):
        (tmp_path / cls).mkdir()
        for i in range(3):
            (tmp_path / cls / f"{i}.png").write_bytes(png_bytes(value))
    (tmp_path / "dogs" / "x.png").write_text("this is not an image")
    (tmp_path / "notes.txt").write_text("hello")

    x, y, names, skipped = load_images(tmp_path, size=8, channels=3)
    assert names == ["cats", "dogs"]
    assert x.shape == (6, 3, 8, 8) and x.dtype == torch.float32
    assert y.tolist().count(0) == 3 and y.tolist().count(1) == 3
    assert torch.all(x[y == 0] == 1.0) and torch.all(x[y == 1] == -1.0)
    reasons = dict(skipped)
    assert set(reasons) == {"dogs/x.png", "notes.txt"}
    assert "decode" in reasons["dogs/x.png"]

    gray, *_ = load_images(tmp_path, size=16, channels=1)
    assert gray.shape == (6, 1, 16, 16)


def test_root_images_form_one_class_and_bombs_are_skipped(tmp_path: Path):
    (tmp_path / "a.png").write_bytes(png_bytes(128))
    (tmp_path / "big.png").write_bytes(png_bytes(10, size=(200, 200)))
    # 40000 px: over 2x the limit (PIL raises) and between 1x and 2x (PIL only warns)
    for limit in (1000, 30000):
        x, y, names, skipped = load_images(tmp_path, size=8, channels=1, max_pixels=limit)
        assert names == ["all"] and x.shape == (1, 1, 8, 8) and y.tolist() == [0]
        assert len(skipped) == 1 and skipped[0][0] == "big.png"
        assert "decompression bomb" in skipped[0][1]
    x, *_ = load_images(tmp_path, size=8, channels=1)
    assert x.shape[0] == 2


def test_zip_is_read_in_memory_and_traversal_refused(tmp_path: Path):
    archive = tmp_path / "up" / "data.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("set/one/a.png", png_bytes(255))
        zf.writestr("set/two/b.png", png_bytes(0))
        zf.writestr("../evil.png", png_bytes(1))
        zf.writestr("/abs.png", png_bytes(1))
        link = zipfile.ZipInfo("set/one/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    before = sorted(p for p in tmp_path.rglob("*"))

    x, y, names, skipped = load_images(archive, size=8, channels=1)
    assert names == ["one", "two"] and x.shape == (2, 1, 8, 8) and y.tolist() == [0, 1]
    reasons = dict(skipped)
    assert reasons["../evil.png"] == "path leaves the archive"
    assert reasons["/abs.png"] == "path leaves the archive"
    assert reasons["set/one/link.png"] == "symlink"
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing extracted anywhere
    assert not (tmp_path / "evil.png").exists()


def test_nothing_usable_raises(tmp_path: Path):
    with pytest.raises(ValueError, match="no usable images"):
        load_images(tmp_path, size=8, channels=1)
    (tmp_path / "bad.png").write_text("nope")
    with pytest.raises(ValueError, match="1 files skipped"):
        load_images(tmp_path, size=8, channels=1)


def test_split_is_deterministic_and_stratified():
    x, y = load_digits()
    a = split(x, y, 0.2, seed=3)
    b = split(x, y, 0.2, seed=3)
    c = split(x, y, 0.2, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[3], c[3])
    xt, yt, xh, yh = a
    assert len(yt) + len(yh) == 1797 and abs(len(yh) - 0.2 * 1797) < 10
    share = np.bincount(yh.numpy(), minlength=10) / np.bincount(y.numpy(), minlength=10)
    assert np.all(np.abs(share - 0.2) < 0.02)
    # disjoint: no holdout image appears in train
    flat_t = {tuple(r) for r in xt.flatten(1).tolist()}
    assert sum(tuple(r) in flat_t for r in xh.flatten(1).tolist()) < 5  # digits has a few exact duplicates


def test_dvc_advice_that_ganflow_follows_is_not_repeated():
    from flows.data.dvc import PUSH_ADVICE, without_advice

    out = "Running stage 'prepare':\nUpdating lock file 'dvc.lock'\n" + PUSH_ADVICE + "\n"
    assert PUSH_ADVICE not in without_advice(out, pushed=True) and "Updating lock file" in without_advice(out, True)
    assert PUSH_ADVICE in without_advice(out, pushed=False)  # not pushed: the advice stands
