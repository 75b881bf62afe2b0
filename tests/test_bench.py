"""Smoke tests of the science benchmarks (bench/): each script's --quick path at even smaller
settings, in-process and single-process, checking the printed tables' rows and value ranges."""
from __future__ import annotations

import re

import pytest

from bench import digits_compare, mode_collapse


def _rows(out: str, section: str) -> dict[str, list[str]]:
    """Markdown-table rows (first cell -> cells) under the '## section' heading."""
    block = out.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in block.splitlines():
        if line.startswith("| ") and not line.startswith("|--"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def _mean(cell: str) -> float:
    return float(cell.split("±")[0])


def test_mode_collapse_quick(capsys, one_thread):
    rc = mode_collapse.main(["--quick", "--steps", "20", "--procs", "1", "--recipes", "gan,wgan-gp,best"])
    out = capsys.readouterr().out
    assert rc == 0
    for dataset, k in (("ring8", 8), ("grid25", 25)):
        rows = _rows(out, dataset)
        assert {"gan", "wgan-gp", f"best ({mode_collapse.BEST})"} <= set(rows), rows.keys()
        assert any("quoted from PacGAN paper" in r for r in rows)
        for name, cells in rows.items():
            if "quoted" in name or name == "recipe":
                continue
            assert 0 <= _mean(cells[2]) <= k
            assert 0 <= int(cells[3]) <= k
            assert 0.0 <= _mean(cells[4]) <= 100.0
            assert 0.0 <= _mean(cells[6]) <= 1.01 * __import__("math").log(k)
        assert rows["wgan-gp"][8] == "20x5"  # same G steps, 5 critic steps each
    assert re.search(r"^goals: ring8=(MET|NOT MET), grid25=(MET|NOT MET)$", out, re.M)
    assert "wall time:" in out


def test_mode_collapse_rejects_unknown_recipe(capsys):
    with pytest.raises(SystemExit):
        mode_collapse.main(["--recipes", "nope"])


def test_digits_compare_quick(capsys, one_thread):
    rc = digits_compare.main(["--quick", "--epochs", "1", "--classifier-epochs", "1", "--procs", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    rows = _rows(out, "digits")
    assert set(digits_compare.RECIPES) | {"real holdout (baseline)"} <= set(rows), rows.keys()
    for name in digits_compare.RECIPES:
        cells = rows[name]
        assert 0 <= _mean(cells[4]) <= 10
        assert _mean(cells[6]) >= 0.0  # FD
        assert int(cells[3]) == (4 if "wgan" in name else 22)  # 1 epoch of 22 D steps
    base = rows["real holdout (baseline)"]
    assert int(base[4]) == 10  # the holdout itself covers every class
    # A real-vs-real FD must beat 1 epoch of any GAN.
    assert float(base[6]) < min(_mean(rows[n][6]) for n in digits_compare.RECIPES)
    assert "wall time:" in out


def test_gpu_bench_runs_on_cpu(capsys, one_thread):
    """bench/gpu.py is for a lent GPU; its settings (autocast, channels_last) must also run on CPU."""
    from bench import gpu

    assert gpu.main(["--quick", "--device", "cpu", "--no-ray", "--settings", "fp32,bf16,channels_last"]) == 0
    out = capsys.readouterr().out
    rows = {r.split("|")[1].strip(): r.split("|")[2:4] for r in out.splitlines() if r.startswith("| ")
            and not r.startswith("| setting")}
    assert set(rows) == {"fp32", "bf16", "channels_last"}, out
    assert rows["fp32"][1].strip() == "1.00"
    assert all(float(v[0]) > 0 for v in rows.values())


def test_speed_bench_quick(capsys, one_thread):
    """bench/speed.py: every speed setting trains through the product's loop and is compared with eager fp32."""
    from bench import speed

    assert speed.main(["--quick", "--settings", "eager fp32,lazy R1 (16),channels_last"]) == 0
    out = capsys.readouterr().out
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in out.splitlines()
            if r.startswith("| ") and not r.startswith("| setting")}
    assert {"eager fp32", "lazy R1 (16)", "channels_last"} <= set(rows), out
    assert rows["eager fp32"][2] == "1.00"
    assert all(float(v[0]) > 0 for k, v in rows.items() if k in ("lazy R1 (16)", "channels_last"))


def test_folders_photos32_writes_an_unlabelled_rgb_folder(tmp_path, capsys):
    """bench/folders.py photos32: --count distinct RGB 32x32 PNGs at the folder's root, no class sub-folders."""
    from PIL import Image

    from bench import folders

    out = tmp_path / "photos32"
    assert folders.main(["photos32", str(out), "--count", "50"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 50 RGB 32x32 patches of 7 bundled photos to {out}"
    files = sorted(out.iterdir())
    assert len(files) == 50 and all(f.is_file() and f.suffix == ".png" for f in files)
    pixels = set()
    for f in files:
        with Image.open(f) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "RGB", (32, 32))
            pixels.add(im.tobytes())
    assert len(pixels) == 50  # no patch written twice
    with pytest.raises(SystemExit):  # a folder already written is not written into again
        folders.main(["photos32", str(out), "--count", "5"])


def test_folders_lfw_writes_its_100_faces_at_25_px(tmp_path, capsys):
    from PIL import Image

    from bench import folders

    out = tmp_path / "lfw"
    assert folders.main(["lfw", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 100 grayscale 25x25 faces of scikit-image's LFW subset to {out}"
    files = sorted(out.iterdir())
    assert len(files) == 100 and all(f.is_file() and f.suffix == ".png" for f in files)
    for f in files:
        with Image.open(f) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "L", (25, 25))
    with pytest.raises(SystemExit):  # a fixed set: no --count
        folders.main(["lfw", str(tmp_path / "more"), "--count", "10"])
