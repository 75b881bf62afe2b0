import pytest
import torch

from gan_core.config import ModelConfig
from gan_core.models import build_discriminator, build_generator


@pytest.mark.parametrize("size", [8, 16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(size, channels):
    cfg = ModelConfig(arch="dcgan", z_dim=16, width=8)
    shape = (channels, size, size)
    G, D = build_generator(cfg, shape), build_discriminator(cfg, shape)
    assert G.z_dim == 16 and G.out_shape == shape
    z = G.sample_z(5)
    assert z.shape == (5, 16)
    x = G(z)
    assert x.shape == (5, *shape)
    assert x.min() >= -1 and x.max() <= 1
    s = D(x)
    assert s.shape == (5,)
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in D.modules())


def test_mlp_shapes():
    cfg = ModelConfig(arch="mlp", z_dim=4, width=32, depth=3)
    G, D = build_generator(cfg, (2,)), build_discriminator(cfg, (2,))
    assert G.out_shape == (2,)
    x = G(G.sample_z(7))
    assert x.shape == (7, 2)
    assert D(x).shape == (7,)
    assert sum(isinstance(m, torch.nn.Linear) for m in G.modules()) == 4
    assert sum(isinstance(m, torch.nn.LeakyReLU) for m in D.modules()) == 3
    # linear output: not squashed into [-1, 1]
    assert not any(isinstance(m, torch.nn.Tanh) for m in G.modules())


def test_sample_z_is_seeded():
    G = build_generator(ModelConfig(arch="mlp"), (2,))
    a = G.sample_z(3, generator=torch.Generator().manual_seed(7))
    b = G.sample_z(3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_dcgan_init_std():
    G = build_generator(ModelConfig(arch="dcgan", width=32), (1, 32, 32))
    w = G.project[0].weight
    assert abs(w.std().item() - 0.02) < 0.002


@pytest.mark.parametrize(
    "arch,shape",
    [
        ("dcgan", (1, 12, 12)),
        ("dcgan", (1, 128, 128)),
        ("dcgan", (1, 16, 32)),
        ("dcgan", (2, 16, 16)),
        ("dcgan", (2,)),
        ("mlp", (1, 8, 8)),
    ],
)
def test_bad_shapes_raise(arch, shape):
    cfg = ModelConfig(arch=arch)
    with pytest.raises(ValueError):
        build_generator(cfg, shape)
    with pytest.raises(ValueError):
        build_discriminator(cfg, shape)
