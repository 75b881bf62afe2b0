import math
import socket

import numpy as np
import pytest
import torch

from gan_core import metrics
from gan_core.metrics import (
    class_coverage,
    class_histogram,
    class_histogram_kl,
    density_coverage,
    frechet_distance,
    image_quality,
    kid,
    mode_metrics,
    precision_recall,
    scaled_kid,
)
from gan_core.toy_data import TOY_DATASETS, sample_toy, toy_modes


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


def test_coverage_and_kl_against_an_imbalanced_datas_own_class_mix():
    """A generator drawing an imbalanced set's own mix is perfect by both; equal shares are not."""
    data = np.array([0.7, 0.2, 0.1])
    own = np.repeat(np.arange(3), [700, 200, 100])
    assert class_histogram_kl(own, 3, data) == pytest.approx(0.0, abs=1e-12)
    assert class_histogram_kl(np.repeat(np.arange(3), 100), 3, data) == pytest.approx(
        np.sum(np.log((1 / 3) / data)) / 3)
    assert class_histogram_kl(own, 3) > 0.1  # against equal shares the data's own mix looks wrong
    rare = np.array([0.996, 0.004])  # a class of 0.4% drawn at its share is covered, not missed
    drawn = np.array([0] * 996 + [1] * 4)
    assert class_coverage(drawn, 2) == 1 and class_coverage(drawn, 2, reference=rare) == 2
    assert class_coverage(np.zeros(1000, dtype=int), 2, reference=rare) == 1
    with pytest.raises(ValueError, match="2 non-negative class shares"):
        class_histogram_kl(drawn, 2, np.array([1.0, -0.5]))


# --- 2-D mode metrics -------------------------------------------------------------------------

HQ_EXACT = 1 - math.exp(-4.5)  # P(|z| <= 3 sigma) for an isotropic 2-D Gaussian (Rayleigh tail)


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_mode_metrics_true_samples(name):
    means, std = toy_modes(name)
    x, _ = sample_toy(name, 2500, seed=1)
    m = mode_metrics(x.numpy(), means, std)
    assert m["modes"] == len(means)
    assert m["high_quality"] > 0.98 and m["high_quality"] == pytest.approx(HQ_EXACT, abs=0.006)
    assert 0 <= m["reverse_kl"] < 0.01 + 0.5 * len(means) / 2500  # multinomial noise ~ (K-1)/(2n)


def test_mode_metrics_collapse_and_junk():
    means, std = toy_modes("ring8")
    rng = np.random.default_rng(0)
    one = means[3] + std * rng.standard_normal((2500, 2))
    m = mode_metrics(one, means, std)
    assert m["modes"] == 1 and m["reverse_kl"] == pytest.approx(math.log(8))
    assert m["high_quality"] > 0.98

    box = rng.uniform(-2, 2, size=(2500, 2))
    m = mode_metrics(box, means, std)
    assert m["high_quality"] < 0.01 and m["modes"] == 0

    # a few stray samples on an 8th mode do not count as capturing it, unless min_count allows it
    x, mode = sample_toy("ring8", 3000, seed=2)
    seven = x.numpy()[mode.numpy() != 7][:2497]
    stray = means[7] + std * rng.standard_normal((3, 2))
    both = np.concatenate([seven, stray])
    assert mode_metrics(both, means, std)["modes"] == 7
    assert mode_metrics(both, means, std, min_count=1)["modes"] == 8
    # no high-quality sample at all: worst reverse KL rather than NaN
    assert mode_metrics(np.full((10, 2), 50.0), means, std)["reverse_kl"] == pytest.approx(math.log(8))


def test_mode_metrics_grid25_partial():
    means, std = toy_modes("grid25")
    x, mode = sample_toy("grid25", 2500, seed=3)
    keep = mode.numpy() < 5  # 5 of the 25 modes, evenly
    m = mode_metrics(x.numpy()[keep], means, std)
    assert m["modes"] == 5
    assert m["reverse_kl"] == pytest.approx(math.log(5), abs=0.02)  # uniform on 5 of 25: log(25/5)


def test_mixture_kl_sees_smear_between_modes_that_reverse_kl_misses():
    """The checkpoint-selection metric for points: ~0 for exact samples; a missing mode and samples
    smeared between modes both raise it, and reverse KL (left unchanged) is blind to the smear."""
    means, std = toy_modes("grid25")
    x, mode = sample_toy("grid25", 20_000, seed=4)
    x, mode = x.numpy(), mode.numpy()
    exact = mode_metrics(x, means, std)
    assert 0 <= exact["mixture_kl"] < 0.005
    rng = np.random.default_rng(0)
    smear = x.copy()
    between = rng.random(len(x)) < 0.06  # 6% of samples pulled halfway to a neighbouring mode
    smear[between] += np.array([1.0, 0.0]) * rng.choice([-1, 1], between.sum())[:, None] * np.ptp(means[:, 0]) / 8
    smeared = mode_metrics(smear, means, std)
    assert smeared["high_quality"] < exact["high_quality"] - 0.04
    assert abs(smeared["reverse_kl"] - exact["reverse_kl"]) < 0.005  # reverse KL cannot tell them apart
    assert smeared["mixture_kl"] > exact["mixture_kl"] + 0.05
    missing = mode_metrics(x[mode != 0], means, std)  # 24 of 25 modes, evenly
    assert missing["mixture_kl"] == pytest.approx(math.log(25 / 24), abs=0.01)


# --- feature-space metrics --------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """torchmetrics must never fetch Inception weights: any socket connect fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


class _Precomputed(torch.nn.Module):
    """Stand-in 'feature extractor' for torchmetrics: the inputs already are the features."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.num_features = d  # torchmetrics otherwise probes with a 299x299 dummy image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _poly_mmd2_loops(x: np.ndarray, y: np.ndarray) -> float:
    """Textbook unbiased MMD^2 (explicit i != j sums), for checking the vectorised one."""
    m, d = x.shape

    def k(a, b):
        return (a @ b / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    return xx + yy - 2 * xy


def test_kid():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
    same, same_std = kid(a, b)
    shifted, _ = kid(a, b + 0.5)
    assert abs(same) < 0.02 and 0 < same_std < 0.2
    assert shifted > 0.5 and shifted > kid(a, b + 0.25)[0] > 0.1
    assert kid(a, b, seed=5) == kid(a, b, seed=5) != kid(a, b, seed=6)
    # subset_size is clipped to the smaller set, so 30 fakes still work
    assert np.isfinite(kid(a, b[:30])[0])
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(12, 3)) + 0.3
    mean, std = kid(x, y, num_subsets=3, subset_size=12)
    assert mean == pytest.approx(_poly_mmd2_loops(x, y), rel=1e-10) and std == pytest.approx(0, abs=1e-12)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_matches_torchmetrics(no_network):
    kid_mod = pytest.importorskip("torchmetrics.image.kid")
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 16)), rng.normal(size=(200, 16)) * 1.2 + 0.1
    # one subset covering both whole sets: MMD^2 is permutation invariant, so torchmetrics' own
    # (global-RNG) subset draw cannot make the two differ
    tm = kid_mod.KernelInceptionDistance(feature=_Precomputed(16), subsets=1, subset_size=200)
    tm.update(torch.from_numpy(a), real=True)
    tm.update(torch.from_numpy(b), real=False)
    tm_mean, _ = tm.compute()
    ours, _ = kid(a, b, num_subsets=1, subset_size=200)
    assert ours == pytest.approx(float(tm_mean), rel=1e-9)
    # and the kernel statistic alone, on arbitrary subsets
    x, y = a[:50], b[50:100]
    ref = float(kid_mod.poly_mmd(torch.from_numpy(x), torch.from_numpy(y)))
    assert metrics._poly_mmd2(x, y) == pytest.approx(ref, rel=1e-9)


def test_frechet_distance_matches_torchmetrics(no_network):
    fid_mod = pytest.importorskip("torchmetrics.image.fid")
    rng = np.random.default_rng(2)
    mix = rng.normal(size=(16, 16)) / 4
    a = rng.normal(size=(600, 16))
    b = rng.normal(size=(500, 16)) @ (np.eye(16) + mix) + 0.3
    tm = fid_mod.FrechetInceptionDistance(feature=_Precomputed(16))
    tm.update(torch.from_numpy(a), real=True)
    tm.update(torch.from_numpy(b), real=False)
    ref = float(tm.compute())
    assert ref > 1.0
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-3)


def _two_clusters(rng, n, d, gap=10.0):
    c = np.zeros(d)
    c[0] = gap
    return np.concatenate([rng.normal(size=(n // 2, d)), rng.normal(size=(n - n // 2, d)) + c])


def test_precision_recall():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(1000, 4))
    assert precision_recall(a, a) == {"precision": 1.0, "recall": 1.0}
    pr = precision_recall(a, rng.normal(size=(1000, 4)))
    assert pr["precision"] > 0.9 and pr["recall"] > 0.9
    # fakes only cover one of two real clusters: still realistic, but half the diversity is missing
    pr = precision_recall(_two_clusters(rng, 1000, 4), rng.normal(size=(1000, 4)))
    assert pr["precision"] > 0.9 and 0.35 < pr["recall"] < 0.55
    # fakes off the real manifold
    pr = precision_recall(a, rng.normal(size=(500, 4)) + 20)
    assert pr == {"precision": 0.0, "recall": 0.0}
    with pytest.raises(ValueError, match="k must be"):
        precision_recall(a[:3], a[:3], k=3)


def test_density_coverage():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(1000, 4))
    dc = density_coverage(a, rng.normal(size=(1000, 4)))
    assert dc["density"] == pytest.approx(1.0, abs=0.1) and dc["coverage"] > 0.95
    dc = density_coverage(_two_clusters(rng, 1000, 4), rng.normal(size=(1000, 4)))
    assert dc["coverage"] == pytest.approx(0.5, abs=0.05)
    # half the fakes far off the real manifold: density halves, coverage barely moves
    dc = density_coverage(a, np.concatenate([rng.normal(size=(500, 4)), rng.normal(size=(500, 4)) + 20]))
    assert dc["density"] == pytest.approx(0.5, abs=0.08) and dc["coverage"] > 0.8
    # fakes crowded into the centre: most real balls stay empty
    assert density_coverage(a, 0.1 * rng.normal(size=(1000, 4)))["coverage"] < 0.1
    assert density_coverage(a, a + 20) == {"density": 0.0, "coverage": 0.0}


def test_manifold_metrics_match_brute_force():
    """Direct transcription of the papers' formulas with scipy's exact cdist, on a small set."""
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(80, 5)), 1.3 * rng.normal(size=(60, 5)) + 0.4
    d_aa, d_bb, d_ba = cdist(a, a), cdist(b, b), cdist(b, a)
    r_a3 = np.sort(d_aa, 1)[:, 3]  # column 0 is the point itself
    r_b3 = np.sort(d_bb, 1)[:, 3]
    r_a5 = np.sort(d_aa, 1)[:, 5]
    precision = np.mean([(d_ba[j] <= r_a3).any() for j in range(60)])
    recall = np.mean([(d_ba[:, i] <= r_b3).any() for i in range(80)])
    density = sum((d_ba[j] <= r_a5).sum() for j in range(60)) / (5 * 60)
    coverage = np.mean([d_ba[:, i].min() <= r_a5[i] for i in range(80)])
    assert precision_recall(a, b) == pytest.approx({"precision": precision, "recall": recall})
    assert density_coverage(a, b) == pytest.approx({"density": density, "coverage": coverage})
    assert 0 < precision < 1 and 0 < recall < 1 and 0 < coverage < 1  # a non-trivial case


def test_chunking_does_not_change_results(monkeypatch):
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(300, 6)), rng.normal(size=(250, 6)) + 0.2
    full = {**precision_recall(a, b), **density_coverage(a, b)}
    monkeypatch.setattr(metrics, "_CHUNK_ENTRIES", 500)  # 1-2 rows per chunk
    assert {**precision_recall(a, b), **density_coverage(a, b)} == full


def test_image_quality():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8)) + 0.5
    q = image_quality(a, b)
    assert set(q) == {"fd", "kid", "kid_std", "precision", "recall", "density", "coverage"}
    assert all(isinstance(v, float) for v in q.values())
    assert q["fd"] == frechet_distance(a, b) and (q["kid"], q["kid_std"]) == scaled_kid(a, b)
    assert q["coverage"] == density_coverage(a, b)["coverage"]
    with pytest.raises(ValueError, match="same d"):
        image_quality(a, b[:, :4])


def test_mode_metrics_strays_do_not_make_junk_look_balanced():
    """A G that puts 1 sample near each of 8 means and the rest nowhere has captured no mode: it must
    score the worst reverse KL, not ~0 (the histogram of its 8 strays is perfectly uniform)."""
    means, std = toy_modes("ring8")
    x = np.concatenate([means + 0.5 * std, np.full((2492, 2), 5.0)])
    m = mode_metrics(x, means, std)
    assert m["modes"] == 0 and m["reverse_kl"] == pytest.approx(math.log(8))
    # The same strays beside a G that really covers 2 modes: KL over those 2 (log 4), strays ignored.
    two = np.concatenate([np.repeat(means[:2], 400, axis=0), means[2:] + 0.5 * std])
    m = mode_metrics(two, means, std)
    assert m["modes"] == 2 and m["reverse_kl"] == pytest.approx(math.log(4))


def test_frechet_distance_survives_scipy_giving_up_on_sqrtm(monkeypatch):
    # scipy's sqrtm raises on some degenerate inputs (seen: the samples of a generator with noised
    # weights, "Internal error in scipy.linalg.sqrtm: -102"); the gate then could not measure at all.
    import numpy as np
    from scipy import linalg

    from gan_core import metrics

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8)) * 2 + 1
    expected = metrics.frechet_distance(a, b)

    def gives_up(m):
        raise linalg.LinAlgError("Internal error in scipy.linalg.sqrtm: -102")

    monkeypatch.setattr(metrics.linalg, "sqrtm", gives_up)
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_nan_features_is_nan():
    a = np.random.default_rng(0).normal(size=(50, 4))
    b = a.copy()
    b[3, 1] = np.nan
    assert math.isnan(metrics.frechet_distance(a, b))
