import math

import numpy as np
import pytest
import torch

from gan_core.toy_data import TOY_DATASETS, sample_toy, toy_modes


def test_mode_layouts():
    expected_k = {"ring8": 8, "grid25": 25, "gauss8": 8, "gauss25": 25}
    assert set(TOY_DATASETS) == set(expected_k)
    for name in TOY_DATASETS:
        means, std = toy_modes(name)
        assert means.shape == (expected_k[name], 2) and std > 0
        assert len(np.unique(means.round(9), axis=0)) == expected_k[name]  # no duplicated modes

    ring, std = toy_modes("ring8")
    assert np.allclose(np.linalg.norm(ring, axis=1), 1.0) and std == 0.01
    assert np.allclose(np.sort(np.arctan2(ring[:, 1], ring[:, 0]) % (2 * np.pi)), np.arange(8) * np.pi / 4)

    grid, std = toy_modes("grid25")
    assert std == 0.05
    assert {tuple(m) for m in grid} == {(x, y) for x in (-4, -2, 0, 2, 4) for y in (-4, -2, 0, 2, 4)}

    # WGAN-GP: scale-2 unit directions and N(0, 0.02^2) noise, all divided by 1.414
    g8, std = toy_modes("gauss8")
    assert std == pytest.approx(0.02 / 1.414)
    assert np.allclose(np.linalg.norm(g8, axis=1), 2 / 1.414)
    assert any(np.allclose(m, [2 / math.sqrt(2) / 1.414] * 2) for m in g8)
    assert any(np.allclose(m, [0, -2 / 1.414]) for m in g8)

    # WGAN-GP: grid 2*{-2..2}, N(0, 0.05^2) noise, all divided by 2.828
    g25, std = toy_modes("gauss25")
    assert std == pytest.approx(0.05 / 2.828)
    assert np.allclose(np.unique(g25[:, 0]), np.array([-4, -2, 0, 2, 4]) / 2.828)


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_samples_match_modes(name):
    means, std = toy_modes(name)
    k = means.shape[0]
    x, mode = sample_toy(name, 200 * k, seed=0)
    assert x.shape == (200 * k, 2) and x.dtype == torch.float32
    assert mode.shape == (200 * k,) and mode.dtype == torch.int64
    x, mode = x.double().numpy(), mode.numpy()
    counts = np.bincount(mode, minlength=k)
    assert counts.min() > 140 and counts.max() < 260  # uniform over modes (200 +- ~4 sd)
    for j in range(k):
        pts = x[mode == j]
        assert np.abs(pts.mean(0) - means[j]).max() < 5 * std / math.sqrt(len(pts))
        assert pts.std(0, ddof=1) == pytest.approx([std, std], rel=0.2)


def test_seeding_and_errors():
    a, ma = sample_toy("ring8", 100, seed=3)
    b, mb = sample_toy("ring8", 100, seed=3)
    c, _ = sample_toy("ring8", 100, seed=4)
    assert torch.equal(a, b) and torch.equal(ma, mb) and not torch.equal(a, c)
    assert sample_toy("grid25", 0, seed=0)[0].shape == (0, 2)
    with pytest.raises(ValueError, match="ring8, grid25, gauss8, gauss25"):
        toy_modes("swissroll")
    with pytest.raises(ValueError, match="valid names"):
        sample_toy("ring9", 10, seed=0)
