"""Image sizes (issue 27): the nets build NATIVE_SIZES (28, MNIST's own, among them); any side from 8 to
256 px is accepted and prepared at the nearest native size, with one line saying so."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.data import stages
from flows.data.load import PROCESSED
from flows.errors import UserError
from flows.params import Params
from gan_core.sizes import ACCEPTED_SIZES, NATIVE_SIZES, base_side, native_size


def test_native_sizes_and_their_base():
    # 8..64 keep the 4x4 base every earlier checkpoint has; 28 halves twice to a 7x7 base.
    assert NATIVE_SIZES == (8, 16, 28, 32, 64)
    assert {n: base_side(n) for n in NATIVE_SIZES} == {8: (4, 1), 16: (4, 2), 28: (7, 2), 32: (4, 3), 64: (4, 4)}
    with pytest.raises(ValueError):
        base_side(24)


@pytest.mark.parametrize("size, native", [
    (8, 8), (28, 28), (64, 64),            # native: itself
    (25, 28), (9, 8), (20, 16), (30, 32),  # the nearest
    (12, 16), (22, 28), (48, 64),          # ties (|12-8| = |16-12|, ...) go to the larger: an upscale keeps every pixel
    (100, 64), (256, 64),                  # above 64: 64
])
def test_a_size_maps_to_the_nearest_native_size_ties_to_the_larger(size, native):
    assert native_size(size) == native


@pytest.mark.parametrize("size", [ACCEPTED_SIZES[0] - 1, ACCEPTED_SIZES[1] + 1, 0, True, 28.0])
def test_sizes_outside_the_accepted_range_are_refused(size):
    with pytest.raises(ValueError, match="from 8 to 256 px"):
        native_size(size)


def _faces(root: Path, n: int = 6, side: int = 25) -> Path:
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8), "L").save(root / f"{i}.png")
    return root


def _params(source: Path, size: int) -> Params:
    return Params.model_validate({"data": {"name": "faces", "source": str(source), "image_size": size},
                                  "registry": {"model_name": "ganflow-faces", "experiment": "ganflow-faces"}})


def test_prepare_resizes_a_non_native_size_to_the_nearest_native_one_and_says_so(tmp_path, capsys):
    params = _params(_faces(tmp_path / "faces"), 25)
    manifest = stages.prepare(params, tmp_path)
    assert manifest["shape"] == [1, 28, 28]
    assert json.loads((tmp_path / PROCESSED / "manifest.json").read_text())["shape"] == [1, 28, 28]
    out = capsys.readouterr().out
    line = ("data.image_size 25 is not one the models build (8, 16, 28, 32, 64): images are resized to 28x28 "
            "(centre crop)\n")
    assert out.count(line) == 1 and out.count("resized") == 1


def test_prepare_at_a_native_size_says_nothing_about_resizing(tmp_path, capsys):
    manifest = stages.prepare(_params(_faces(tmp_path / "faces"), 28), tmp_path)
    assert manifest["shape"] == [1, 28, 28]
    assert "resized" not in capsys.readouterr().out


def test_digits_still_need_8_px(tmp_path):
    with pytest.raises(UserError, match="digits are 8x8"):
        stages.prepare(Params.model_validate({"data": {"name": "digits", "image_size": 12}}), tmp_path)
