"""`ganflow prepare --source` on an image folder and a zip, under real DVC; push/pull round trip."""
from __future__ import annotations

import json
import shutil
import subprocess
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import BIN, clean_env, ganflow

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

    # dvc push happened: remove the outputs and the cache, pull them back from the local remote.
    shutil.rmtree(workspace / "data/processed")
    shutil.rmtree(workspace / ".dvc/cache")
    env = clean_env(workspace / ".ganflow")
    pull = subprocess.run([str(BIN / "dvc"), "pull", "-q"], cwd=workspace, env=env, capture_output=True, text=True)
    assert pull.returncode == 0, pull.stderr
    assert json.loads((workspace / "data/processed/manifest.json").read_text()) == manifest


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
