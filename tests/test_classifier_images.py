import numpy as np
import pytest
import torch
from PIL import Image

from gan_core.classifier import Classifier, accuracy, predict_features, train_classifier
from gan_core.data import load_digits, split
from gan_core.images import image_grid, save_grid_png, save_scatter_png


def test_classifier_on_digits_is_accurate_and_seeded(one_thread):
    x, y = load_digits()
    xt, yt, xh, yh = split(x, y, 0.2, seed=0)
    model = train_classifier(xt, yt, 10, epochs=10, lr=3e-3, seed=0)
    assert not model.training
    assert accuracy(model, xh, yh) > 0.95
    feats, pred = predict_features(model, xh[:37], batch_size=16)
    assert feats.shape == (37, 64) and pred.shape == (37,) and pred.dtype == np.int64
    again = train_classifier(xt[:200], yt[:200], 10, epochs=1, lr=3e-3, seed=0)
    once = train_classifier(xt[:200], yt[:200], 10, epochs=1, lr=3e-3, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), once.state_dict().values()))


@pytest.mark.parametrize("size", [16, 28, 32, 64])
def test_classifier_shapes(size):
    m = Classifier((3, size, size), 5, feature_dim=12)
    x = torch.randn(2, 3, size, size)
    assert m.features(x).shape == (2, 12) and m(x).shape == (2, 5)


def test_image_grid_layout_and_values():
    imgs = -torch.ones(5, 1, 8, 8)
    imgs[1] = 1.0
    g = image_grid(imgs, nrow=3, pad=1)
    assert g.dtype == np.uint8 and g.shape == (1 + 2 * 9, 1 + 3 * 9)
    assert g[1, 1] == 0 and g[1, 10] == 255 and g[0, 0] == 255  # black digit, white digit, pad
    rgb = image_grid(torch.zeros(4, 3, 4, 4))
    assert rgb.shape == (11, 11, 3) and rgb[1, 1, 0] == 128


def test_saved_pngs(tmp_path):
    p = save_grid_png(torch.rand(16, 1, 8, 8) * 2 - 1, tmp_path / "sub" / "g.png")
    with Image.open(p) as im:
        assert im.width >= 256 and im.width % 37 == 0  # 4x4 grid = 37 px, integer upscale
    p = save_grid_png(torch.rand(4, 3, 8, 8), tmp_path / "c.png", nrow=4, scale=2)
    with Image.open(p) as im:
        assert im.size == (2 * 37, 2 * 10) and im.mode == "RGB"
    s = save_scatter_png(np.random.randn(100, 2), tmp_path / "s.png", real=np.random.randn(50, 2))
    with Image.open(s) as im:
        assert im.width > 100
