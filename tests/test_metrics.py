import math

import numpy as np
import pytest

from gan_core.metrics import class_coverage, class_histogram, class_histogram_kl, frechet_distance


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    b = rng.normal(size=(500, 8))
    small = frechet_distance(a, b)
    shifted = frechet_distance(a, b + 1.0)
    far = frechet_distance(a, b + 3.0)
    assert small < 0.5
    # shift by 1 in 8 dims adds ~8, by 3 adds ~72
    assert shifted == pytest.approx(8.0 + small, abs=0.8)
    assert far == pytest.approx(72.0 + small, abs=2.0)
    assert frechet_distance(a, 2.0 * b) > 5.0  # scale differences count too


def test_frechet_distance_singular_covariance():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 20))  # fewer samples than dims -> singular covariances
    fd = frechet_distance(a, a + 0.5)
    assert np.isfinite(fd) and fd == pytest.approx(20 * 0.25, rel=0.05)
    assert frechet_distance(np.zeros((10, 3)), np.zeros((10, 3))) == pytest.approx(0.0, abs=1e-6)


def test_histogram_coverage_kl():
    uniform = np.repeat(np.arange(10), 30)
    collapsed = np.full(300, 4)
    h = class_histogram(uniform, 10)
    assert h.sum() == pytest.approx(1.0) and np.allclose(h, 0.1)
    assert class_histogram(collapsed, 10)[4] == 1.0
    assert class_coverage(uniform, 10) == 10
    assert class_coverage(collapsed, 10) == 1
    assert class_coverage(np.array([0] * 995 + [1] * 5), 2, min_share=0.01) == 1
    assert class_histogram_kl(uniform, 10) == pytest.approx(0.0, abs=1e-12)
    assert class_histogram_kl(collapsed, 10) == pytest.approx(math.log(10))
    assert 0 < class_histogram_kl(np.array([0, 0, 1]), 2) < math.log(2)
