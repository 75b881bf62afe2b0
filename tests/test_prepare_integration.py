"""`ganflow prepare --source` on an image folder and a zip, under real DVC; push/pull round trip of the
prepared data and the raw imports; prepare refused while a run holds the workspace."""
from __future__ import annotations

import json
import shutil
import subprocess
import zipfile

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import BIN, clean_env, ganflow
from flows.env import RunPaths, hold_workspace

pytestmark = pytest.mark.integration


def _image_folder(root, per_class=12):
    rng = np.random.default_rng(0)
    for cls, level in (("dark", 40), ("light", 200)):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            px = np.clip(rng.normal(level, 20, (20, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / cls / f"{i}.png")
    (root / "light" / "notes.png").write_text("not an image")  # skipped with a reason
    return root


def test_prepare_image_folder_then_zip_versions_data_and_pushes_it(workspace, tmp_path):
    images = _image_folder(tmp_path / "shapes")
    proc = ganflow(workspace, "prepare", "--source", str(images), "--image-size", "16", "--channels", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((workspace / "data/processed/manifest.json").read_text())
    assert manifest["name"] == "shapes" and manifest["shape"] == [3, 16, 16]
    assert manifest["classes"] == ["dark", "light"]
    assert sum(manifest["counts"].values()) == 24 and min(manifest["counts"].values()) >= 1  # train/val/holdout
    assert [s["file"] for s in manifest["skipped"]] == ["light/notes.png"]
    assert (workspace / "data/raw/shapes/dark/0.png").exists()  # imported, so DVC hashes it
    # A DVC data source of its own, completed by `dvc repro` and committed with dvc.lock.
    tracked = yaml.safe_load((workspace / "data/raw/shapes.dvc").read_text())["outs"][0]
    assert tracked["path"] == "shapes" and tracked["md5"].endswith(".dir") and tracked["nfiles"] == 25
    assert "/shapes" in (workspace / "data/raw/.gitignore").read_text().split()
    imported = {p.relative_to(images): p.read_bytes() for p in images.rglob("*") if p.is_file()}
    first = (workspace / "dvc.lock").read_text()

    # The same images as a zip with one more image: a new data version.
    (images / "dark" / "extra.png").write_bytes((images / "dark" / "0.png").read_bytes())
    archive = tmp_path / "shapes2.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in images.rglob("*.png"):
            zf.write(f, f.relative_to(images).as_posix())
    proc = ganflow(workspace, "prepare", "--source", str(archive), "--name", "shapes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((workspace / "data/processed/manifest.json").read_text())
    assert sum(manifest["counts"].values()) == 25
    assert (workspace / "dvc.lock").read_text() != first

    # dvc push happened: remove the outputs, the raw imports and the cache, pull them back from the local
    # remote (as a clone of the workspace's git would).
    for gone in ("data/processed", "data/raw/shapes", ".dvc/cache"):
        shutil.rmtree(workspace / gone)
    (workspace / "data/raw/shapes2.zip").unlink()
    env = clean_env(workspace / ".ganflow")
    pull = subprocess.run([str(BIN / "dvc"), "pull", "-q"], cwd=workspace, env=env, capture_output=True, text=True)
    assert pull.returncode == 0, pull.stderr
    assert json.loads((workspace / "data/processed/manifest.json").read_text()) == manifest
    raw = workspace / "data/raw/shapes"
    assert {p.relative_to(raw): p.read_bytes() for p in raw.rglob("*") if p.is_file()} == imported
    assert (workspace / "data/raw/shapes2.zip").read_bytes() == archive.read_bytes()


def test_prepare_is_refused_while_a_run_holds_the_workspace(workspace, tmp_path):
    images = _image_folder(tmp_path / "shapes", per_class=2)
    before = (workspace / "params.yaml").read_text()
    with hold_workspace(RunPaths(workspace, workspace / ".ganflow"), "ganflow pipeline"):
        proc = ganflow(workspace, "prepare", "--source", str(images))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("ganflow: error: another ganflow run is using workspace")
    assert "(ganflow pipeline, pid" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stdout + proc.stderr
    # Refused before anything changed: nothing imported, params.yaml and data/ as they were.
    assert not (workspace / "data/raw/shapes").exists() and (workspace / "params.yaml").read_text() == before
    assert not (workspace / "data/processed").exists()


def test_prepare_rejects_a_missing_source_cleanly(workspace):
    proc = ganflow(workspace, "prepare", "--source", str(workspace / "nope"))
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_a_generator_that_replays_real_images_scores_a_frechet_ratio_near_one_at_any_sample_size(workspace):
    """fd_ratio compares equal sample sizes: FD is biased upwards by small samples, and a ratio of a
    500-sample FD over the 1,438-image baseline would call a perfect generator ~2x worse than real."""
    import torch

    from flows.evaluate import Evaluator
    from flows.data.load import load_split

    assert ganflow(workspace, "prepare").returncode == 0
    real, _ = load_split(workspace, "train")

    class Replay(torch.nn.Module):  # "generates" distinct random training images (an iid sample) first
        def sample_z(self, n, generator):
            order = torch.randperm(len(real), generator=generator)
            return torch.cat([order, torch.randint(len(real), (max(0, n - len(real)),), generator=generator)])[:n]

        def forward(self, idx):
            return real[idx]

    evaluator = Evaluator(workspace)
    for n in (500, 1000, 2500):
        metrics, _ = evaluator.measure(Replay(), n, seed=0, full=False)
        assert metrics["fd_ratio_samples"] == min(n, len(real))
        assert 0.5 < metrics["fd_ratio"] < 1.5, (n, metrics)
