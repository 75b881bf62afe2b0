"""The dataset's own judge: a small CNN trained on the real data whose features drive FD (and KID,
precision/recall) and whose predictions drive class coverage. Pretrained Inception is out of reach
(no downloads) and wrong for 8x8 digits anyway.

Labelled data (two or more classes) gets a classifier. Unlabelled data (one class) gets the same
network trained without labels (SelfSupervisedJudge): cross-entropy over a single class has zero
gradient, which would leave FD measured in a randomly initialised network's features."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_core.sizes import NATIVE_SIZES


class Classifier(nn.Module):
    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, feature_dim: int = 64) -> None:
        super().__init__()
        c, h, w = in_shape
        if h != w or h not in NATIVE_SIZES:
            raise ValueError(f"Classifier needs square images with H in {NATIVE_SIZES}, got {h}x{w}")
        self.in_shape = (c, h, w)
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        pool = h > 8  # 8x8 is already tiny; pooling it would throw away most of the digit

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()] + ([nn.MaxPool2d(2)] if pool else [])

        self.conv = nn.Sequential(*block(c, 32), *block(32, 64))
        side = h // 4 if pool else h  # 28 px: pooled twice to 7x7
        # Flatten keeps the spatial layout on small maps; larger ones (64 px) are average-pooled
        # to 4x4 first so the feature layer stays small.
        out_side = side if side <= 8 else 4
        self.squeeze = nn.AdaptiveAvgPool2d(out_side) if side > 8 else nn.Identity()
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(64 * out_side**2, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.embed(self.squeeze(self.conv(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def labels(self, f: Tensor) -> Tensor:
        """Predicted data classes from features."""
        return self.head(f).argmax(1)


ROTATIONS = 4  # 0, 90, 180, 270 degrees (Gidaris et al. 2018)


class SelfSupervisedJudge(Classifier):
    """The Classifier's network for unlabelled images. Its head predicts which of ROTATIONS rotations
    was applied (a pretext task, not a data class); the data has one class, so every image is class 0."""

    def __init__(self, in_shape: tuple[int, int, int], feature_dim: int = 64) -> None:
        super().__init__(in_shape, ROTATIONS, feature_dim)
        self.num_classes = 1  # data classes, as Classifier.num_classes; the head has ROTATIONS outputs

    def labels(self, f: Tensor) -> Tensor:
        return torch.zeros(f.shape[0], dtype=torch.int64, device=f.device)


def train_classifier(
    x: Tensor, y: Tensor, num_classes: int, epochs: int, lr: float, seed: int, batch_size: int = 128,
    feature_dim: int = 64,
) -> Classifier:
    """Adam on cross-entropy. Seeded init and shuffling (own RNGs, global state left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Classifier(tuple(x.shape[1:]), num_classes, feature_dim).to(x.device)  # type: ignore[arg-type]
    shuffle = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    n = x.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=shuffle).to(x.device)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def predict_features(model: Classifier, x: Tensor, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, feature_dim) float64, predicted labels (N,) int64), batched to bound memory."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    feats, preds = [], []
    for i in range(0, x.shape[0], batch_size):
        f = model.features(x[i : i + batch_size].to(device))
        feats.append(f.double().cpu())
        preds.append(model.labels(f).cpu())
    model.train(was_training)
    if not feats:
        return np.zeros((0, model.feature_dim)), np.zeros((0,), dtype=np.int64)
    return torch.cat(feats).numpy(), torch.cat(preds).numpy().astype(np.int64)


def accuracy(model: Classifier, x: Tensor, y: Tensor) -> float:
    _, pred = predict_features(model, x)
    return float((pred == y.cpu().numpy()).mean())


def rotate(x: Tensor) -> tuple[Tensor, Tensor]:
    """Each image at every rotation, (ROTATIONS * N, C, H, W) grouped by rotation, and the rotation ids."""
    xr = torch.cat([torch.rot90(x, k, (2, 3)) for k in range(ROTATIONS)])
    return xr, torch.arange(ROTATIONS, device=x.device).repeat_interleave(x.shape[0])


def shifted(x: Tensor, generator: torch.Generator) -> Tensor:
    """Each image translated by up to 1 px in x and y (edges replicated): the contrastive views.
    Only translation: invariance to noise, blur or contrast would blind FD to exactly those flaws."""
    n, _, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    crops = torch.stack([padded[:, :, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])
    pick = torch.randint(0, len(crops), (n,), generator=generator).to(x.device)
    return crops[pick, torch.arange(n, device=x.device)]


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """SimCLR's loss (Chen et al. 2020): each view must pick its partner out of the 2N - 1 others."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    n = z1.shape[0]
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, partner)


def train_self_supervised(
    x: Tensor, epochs: int, lr: float, seed: int, batch_size: int = 128, feature_dim: int = 64,
) -> SelfSupervisedJudge:
    """Adam on rotation prediction + contrastive loss, no labels. Per batch: two shifted views of
    each image; the first at all four rotations trains the rotation head (its unrotated copy doubles
    as a contrastive view), the pair trains the contrastive loss through a projection head that is
    dropped afterwards (SimCLR). Seeded like train_classifier.

    Why both: on 8x8 digits rotation alone barely beats a random network at spotting missing
    classes (0, 1 and 8 look alike rotated), the contrastive loss doubles that; rotation is the
    stronger signal on photos, whose objects have an upright orientation."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SelfSupervisedJudge(tuple(x.shape[1:]), feature_dim).to(x.device)  # type: ignore[arg-type]
        project = nn.Linear(feature_dim, 32).to(x.device)
    rng = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([*model.parameters(), *project.parameters()], lr=lr)
    model.train()
    n = x.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=rng).to(x.device)
        for i in range(0, n, batch_size):
            batch = x[order[i : i + batch_size]]
            view1, view2 = shifted(batch, rng), shifted(batch, rng)
            xr, yr = rotate(view1)
            f_rot = model.features(xr)
            f1 = f_rot[: batch.shape[0]]  # rotation 0: view1 itself
            loss = F.cross_entropy(model.head(f_rot), yr) + nt_xent(project(f1), project(model.features(view2)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def rotation_accuracy(model: Classifier, x: Tensor, batch_size: int = 512) -> float:
    """Share of images whose rotation (any of the four) the head names: chance is 1/ROTATIONS."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    hits = 0
    for i in range(0, x.shape[0], batch_size):
        xr, yr = rotate(x[i : i + batch_size].to(device))
        hits += int((model(xr).argmax(1) == yr).sum())
    model.train(was_training)
    return hits / max(ROTATIONS * x.shape[0], 1)
