"""Sample-quality metrics: FD, KID, precision/recall, density/coverage on feature arrays; class and
2-D mode coverage for collapse; memorisation (generated samples nearer the training set than held-out
real data is)."""
from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg
from scipy.spatial.distance import cdist
from scipy.stats import chi2
from threadpoolctl import threadpool_limits  # installed with scikit-learn


def _sqrtm(m: np.ndarray) -> tuple[np.ndarray | None, bool]:
    """Matrix square root, plus whether scipy flagged it as unreliable (singular input). None where
    scipy gave up (its Schur iteration raises on some degenerate inputs, e.g. saturated samples)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        try:
            root = linalg.sqrtm(m)
        except (linalg.LinAlgError, ValueError):
            return None, True
    bad = any(issubclass(w.category, linalg.LinAlgWarning) for w in caught) or not np.isfinite(root).all()
    return root, bad


def _trace_sqrt_product(s_a: np.ndarray, s_b: np.ndarray) -> float:
    """tr((S_a S_b)^(1/2)) = sum sqrt(eig(S_a^(1/2) S_b S_a^(1/2))): the same quantity through symmetric
    eigendecompositions only, which never fail; the fallback where scipy's sqrtm does."""
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0, None)).sum())


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (the FID formula):
    ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))."""
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (n, d) arrays with the same d, got {a.shape} and {b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("need at least 2 samples per set to estimate a covariance")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        # NaN features (e.g. a generator whose BatchNorm running variance went negative): no distance,
        # shown as NaN rather than a linear-algebra error that hides which version was broken.
        return float("nan")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a = np.atleast_2d(np.cov(a, rowvar=False))
    s_b = np.atleast_2d(np.cov(b, rowvar=False))

    covmean, singular = _sqrtm(s_a @ s_b)
    if singular:
        # Singular product (fewer samples than dims, dead features): shift both off singularity.
        offset = np.eye(s_a.shape[0]) * eps
        covmean, _ = _sqrtm((s_a + offset) @ (s_b + offset))
    # sqrtm of a product of PSD matrices is real in theory; round-off leaves tiny imaginary parts.
    tr_covmean = float(np.trace(np.real(covmean))) if covmean is not None else _trace_sqrt_product(s_a, s_b)

    diff = mu_a - mu_b
    fd = float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * tr_covmean)
    return max(fd, 0.0)  # round-off can give -1e-12 for identical sets


def class_histogram(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of samples per class (sums to 1; all zeros for no samples)."""
    labels = np.asarray(labels).astype(np.int64).ravel()
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return counts / counts.sum() if labels.size else counts


def _reference(num_classes: int, reference: np.ndarray | None) -> np.ndarray:
    if reference is None:
        return np.full(num_classes, 1.0 / num_classes)
    q = np.asarray(reference, dtype=np.float64)
    if q.shape != (num_classes,) or q.min() < 0 or q.sum() <= 0:
        raise ValueError(f"reference must be {num_classes} non-negative class shares, got {reference!r}")
    return q / q.sum()


def class_coverage(labels: np.ndarray, num_classes: int, min_share: float = 0.01,
                   reference: np.ndarray | None = None) -> int:
    """How many classes get at least `min_share` of the samples (mode-collapse signal), scaled by each
    class's share of the data (`reference`; None: equal shares) against an equal share: a class that is 0.5%
    of an imbalanced set is covered at 0.05% of the samples, not missed for being rare."""
    need = min_share * num_classes * _reference(num_classes, reference)
    return int((class_histogram(labels, num_classes) >= need).sum())


def class_histogram_kl(labels: np.ndarray, num_classes: int, reference: np.ndarray | None = None) -> float:
    """KL(p || q) = sum p log(p / q), q the data's class shares (`reference`; None: uniform, where it is
    sum p log(p K)): 0 for the data's own mix, log K when one class takes all of a uniform set."""
    p, q = class_histogram(labels, num_classes), _reference(num_classes, reference)
    nz = p > 0  # 0 log 0 = 0
    return float(np.sum(p[nz] * np.log(p[nz] / np.maximum(q[nz], 1e-12))))


# ---------------------------------------------------------------------------------------------
# 2-D toy mixtures: modes are known, so collapse is counted directly (PacGAN / VEEGAN protocol).


def mode_metrics(
    samples: np.ndarray, means: np.ndarray, std: float, min_count: int | None = None
) -> dict[str, int | float]:
    """Mode coverage of 2-D samples against a known Gaussian mixture (PacGAN, Lin et al. 2018; VEEGAN,
    Srivastava et al. 2017).

    Each sample is assigned to its nearest mean (Euclidean).
    high_quality  share of samples within 3 * std (Euclidean distance) of their nearest mean. For exact
                  samples of an isotropic 2-D Gaussian this is 1 - exp(-4.5) ~= 0.989, not 1.
    modes         number of means that receive at least `min_count` high-quality samples. The threshold
                  keeps a few stray samples from counting as a captured mode; by default it scales with n
                  as max(1, round(20 * n / 2500)) (20 of the usual 2,500 samples).
    reverse_kl    KL(q || uniform) = sum_k q_k log(q_k K), q = histogram of the high-quality samples over
                  the captured modes, normalised. 0 for a uniform spread, log K when one mode takes all.
                  With no captured mode q is undefined; log K (the worst value) is returned. Stray samples
                  in uncaptured modes are left out: counted, a G that hits nothing (a few strays near
                  several means) would score as well as one that covers every mode.
    mixture_kl    KL(q' || p') over K + 1 bins: each mode's high-quality samples and the rest ("off-mode"),
                  against the mixture's own shares ((1 - e) / K each, e = P(chi2_d > 9) off-mode: 1.1% in
                  2-D). One number for all three: a missing mode, an uneven spread and samples smeared
                  between modes each raise it; ~0 for exact samples. Training selects checkpoints on it
                  (reverse_kl ignores smear, and picks mid-training checkpoints whose modes are still wide).
    """
    x = np.asarray(samples, dtype=np.float64)
    mu = np.asarray(means, dtype=np.float64)
    if x.ndim != 2 or mu.ndim != 2 or x.shape[1] != mu.shape[1]:
        raise ValueError(f"need samples (n, d) and means (K, d) with the same d, got {x.shape} and {mu.shape}")
    k = mu.shape[0]
    n = x.shape[0]
    if min_count is None:
        min_count = max(1, round(20 * n / 2500))
    dist = cdist(x, mu)  # (n, K): K is tiny, no chunking needed
    nearest = dist.argmin(1)
    good = dist[np.arange(n), nearest] <= 3.0 * std
    counts = np.bincount(nearest[good], minlength=k)
    captured = counts[counts >= min_count]
    if captured.size:
        q = captured / captured.sum()
        reverse_kl = float(np.sum(q * np.log(q * k)))
    else:
        reverse_kl = float(np.log(k))
    off = float(chi2.sf(9.0, x.shape[1]))  # the share of an isotropic Gaussian beyond 3 std
    q = np.append(counts, n - good.sum()) / max(n, 1)
    p = np.append(np.full(k, (1.0 - off) / k), off)
    seen = q > 0
    return {
        "modes": int(captured.size),
        "high_quality": float(good.mean()) if n else 0.0,
        "reverse_kl": reverse_kl,
        "mixture_kl": float(np.sum(q[seen] * np.log(q[seen] / p[seen]))) if n else float("inf"),
    }


# ---------------------------------------------------------------------------------------------
# Feature-space image metrics (real_f, fake_f: (n, d) arrays, e.g. from classifier.predict_features).


def _features(real_f: np.ndarray, fake_f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(real_f, dtype=np.float64)
    b = np.asarray(fake_f, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (n, d) arrays with the same d, got {a.shape} and {b.shape}")
    return a, b


def _one_blas_thread() -> threadpool_limits:
    # Many small or mid-size matmuls: on a busy 2-core box multi-threaded OpenBLAS was measured ~100x
    # slower (thread oversubscription), and one thread is near-optimal at these sizes anyway.
    return threadpool_limits(1, user_api="blas")


def _poly_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(a, b) = (a.b / d + 1)^3 (equal set sizes m):
    off-diagonal means of K_xx and K_yy minus twice the full mean of K_xy, as torchmetrics' poly_mmd."""
    m, d = x.shape

    def kern(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        g = a @ b.T / d + 1.0
        return g * g * g  # float ** 3 goes through pow(), several times slower

    k_xx, k_yy, k_xy = kern(x, x), kern(y, y), kern(x, y)
    off = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(off - 2.0 * k_xy.mean())


def kid(
    real_f: np.ndarray, fake_f: np.ndarray, num_subsets: int = 50, subset_size: int = 100, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2, cubic polynomial kernel, averaged
    over random subsets drawn without replacement. Returns (mean, population std over subsets), as
    torchmetrics. subset_size is clipped to the smaller set. Unbiased, so it can be slightly negative."""
    a, b = _features(real_f, fake_f)
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError("KID needs at least 2 samples per set")
    rng = np.random.default_rng(seed)
    with _one_blas_thread():
        scores = [
            _poly_mmd2(a[rng.choice(a.shape[0], m, replace=False)], b[rng.choice(b.shape[0], m, replace=False)])
            for _ in range(num_subsets)
        ]
    return float(np.mean(scores)), float(np.std(scores))


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances via |a|^2 + |b|^2 - 2ab (one BLAS matmul, ~2x faster than scipy's cdist at
    d = 64); clipped at 0 because round-off can make identical points' squared distance slightly negative."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(sq, 0.0))


# Row chunks of the distance matrix are capped at ~2**22 entries (32 MiB of float64), so a few thousand
# points in any dimension stay cheap.
_CHUNK_ENTRIES = 2**22


def _row_chunks(n_rows: int, n_cols: int) -> range:
    return range(0, n_rows, max(1, _CHUNK_ENTRIES // max(n_cols, 1)))


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point to its k-th nearest other point (column 0 of a sorted row is the point itself)."""
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"k must be in [1, {x.shape[0] - 1}] for {x.shape[0]} points, got {k}")
    step = _row_chunks(x.shape[0], x.shape[0]).step
    return np.concatenate(
        [np.partition(_dist(x[i : i + step], x), k, axis=1)[:, k] for i in range(0, x.shape[0], step)]
    )


def _ball_counts(query: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """For each query point: in how many balls B(centre_i, radius_i) it lies."""
    step = _row_chunks(query.shape[0], centres.shape[0]).step
    return np.concatenate(
        [(_dist(query[i : i + step], centres) <= radii[None, :]).sum(1) for i in range(0, query.shape[0], step)]
    )


def _nearest_dist(query: np.ndarray, ref: np.ndarray) -> np.ndarray:
    step = _row_chunks(query.shape[0], ref.shape[0]).step
    return np.concatenate([_dist(query[i : i + step], ref).min(1) for i in range(0, query.shape[0], step)])


def precision_recall(real_f: np.ndarray, fake_f: np.ndarray, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019). Each set's manifold is the union of balls
    around its points with radius = distance to the k-th nearest neighbour in the same set.
    precision = share of fakes inside the real manifold (quality); recall = share of reals inside the fake
    manifold (diversity)."""
    a, b = _features(real_f, fake_f)
    with _one_blas_thread():
        precision = float((_ball_counts(b, a, _knn_radii(a, k)) > 0).mean())
        recall = float((_ball_counts(a, b, _knn_radii(b, k)) > 0).mean())
    return {"precision": precision, "recall": recall}


def density_coverage(real_f: np.ndarray, fake_f: np.ndarray, k: int = 5) -> dict[str, float]:
    """Density and coverage (Naeem et al. 2020), both built on real k-NN balls only (robust to fake outliers).
    density  = mean over fakes of (number of real balls containing it) / k; ~1 when fake matches real; not
               bounded by 1 (fakes piled into regions many real balls overlap).
    coverage = share of reals whose ball contains at least one fake (nearest fake within its radius)."""
    a, b = _features(real_f, fake_f)
    with _one_blas_thread():
        radii = _knn_radii(a, k)
        density = float(_ball_counts(b, a, radii).mean() / k)
        coverage = float((_nearest_dist(a, b) <= radii).mean())
    return {"density": density, "coverage": coverage}


KID_SCALE = 1000.0  # KID is reported x 10^3, as the papers do (Karras et al. 2020 and after)


def standardised(reference: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Every set z-scored per dimension by the reference set's mean and std (constant dimensions are
    only centred). The cubic kernel of KID is not scale-free: on raw classifier features its values
    grow with the feature scale cubed, so KID came out in the hundreds or thousands, either sign."""
    ref = np.asarray(reference, dtype=np.float64)
    mu, sd = ref.mean(0), ref.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return [(np.asarray(x, dtype=np.float64) - mu) / sd for x in (ref, *others)]


def scaled_kid(real_f: np.ndarray, fake_f: np.ndarray, **kw) -> tuple[float, float]:
    """KID x 1000 on features standardised by the real set: ~0 (either sign, the estimate is unbiased)
    for samples of the real distribution, growing with the mismatch; comparable across feature
    extractors of any scale. Returns (mean, std over subsets), both x 1000."""
    a, b = _features(real_f, fake_f)
    mean, std = kid(*standardised(a, b), **kw)
    return KID_SCALE * mean, KID_SCALE * std


def pixel_space(images: np.ndarray, max_side: int = 16) -> np.ndarray:
    """(N, C, H, W) images -> (N, C*h*w) rows for nearest-neighbour search, block-averaged down to at
    most max_side pixels a side: a copied image stays a near-exact match, pixel noise averages out,
    and a 64x64 RGB search costs 16x less."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) images, got shape {x.shape}")
    n, c, h, w = x.shape
    f = max(1, -(-max(h, w) // max_side))  # ceil
    hh, ww = max(1, h // f), max(1, w // f)
    if f > 1:
        x = x[:, :, : hh * f, : ww * f].reshape(n, c, hh, f, ww, f).mean((3, 5))
    return x.reshape(n, -1)


def nearest(query: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each query row's Euclidean distance to its nearest ref row, and that row's index."""
    r, q = _features(ref, query)
    step = _row_chunks(q.shape[0], r.shape[0]).step
    dist, idx = [], []
    with _one_blas_thread():
        for i in range(0, q.shape[0], step):
            d = _dist(q[i : i + step], r)
            j = d.argmin(1)
            idx.append(j)
            dist.append(d[np.arange(len(j)), j])
    return np.concatenate(dist), np.concatenate(idx)


def memorisation(
    train: np.ndarray, reference: np.ndarray, fake: np.ndarray, quantile: float = 0.05
) -> dict[str, float]:
    """Share of generated samples closer to their nearest training item than all but `quantile` of the
    reference (held-out real) items are to theirs: threshold = the `quantile`-quantile of reference-to-
    train nearest-neighbour distances. Unseen real data scores ~quantile; a generator that replays
    training items scores ~1. Rows are items in one space (flattened pixels, features)."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    threshold = float(np.quantile(nearest(reference, train)[0], quantile))
    # <=: exact copies count even when a few held-out items duplicate training ones (threshold 0).
    share = float((nearest(fake, train)[0] <= threshold).mean())
    return {"memorisation": share, "memorisation_threshold": threshold}


def image_quality(real_f: np.ndarray, fake_f: np.ndarray) -> dict[str, float]:
    """All feature-space metrics in one call, at their default settings. `kid` is scaled_kid's (x 1000,
    standardised features)."""
    kid_mean, kid_std = scaled_kid(real_f, fake_f)
    return {
        "fd": frechet_distance(real_f, fake_f),
        "kid": kid_mean,
        "kid_std": kid_std,
        **precision_recall(real_f, fake_f),
        **density_coverage(real_f, fake_f),
    }
