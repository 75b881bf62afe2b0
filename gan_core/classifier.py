"""A small CNN trained on the real data: its features drive FD, its predictions drive mode coverage.
Pretrained Inception is out of reach (no downloads) and wrong for 8x8 digits anyway."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Classifier(nn.Module):
    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, feature_dim: int = 64) -> None:
        super().__init__()
        c, h, w = in_shape
        if h != w or h not in (8, 16, 32, 64):
            raise ValueError(f"Classifier needs square images with H in (8, 16, 32, 64), got {h}x{w}")
        self.in_shape = (c, h, w)
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        pool = h > 8  # 8x8 is already tiny; pooling it would throw away most of the digit

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()] + ([nn.MaxPool2d(2)] if pool else [])

        self.conv = nn.Sequential(*block(c, 32), *block(32, 64))
        side = h // 4 if pool else h
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
        preds.append(model.head(f).argmax(1).cpu())
    model.train(was_training)
    if not feats:
        return np.zeros((0, model.feature_dim)), np.zeros((0,), dtype=np.int64)
    return torch.cat(feats).numpy(), torch.cat(preds).numpy().astype(np.int64)


def accuracy(model: Classifier, x: Tensor, y: Tensor) -> float:
    _, pred = predict_features(model, x)
    return float((pred == y.cpu().numpy()).mean())
