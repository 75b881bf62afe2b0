import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from gan_core.config import ModelConfig
from gan_core.models import ConditionalBatchNorm2d, build_discriminator, build_generator
from gan_core.sizes import NATIVE_SIZES, base_side

ARCHS = ("dcgan", "resnet", "mlp")
NUM_CLASSES = 5


def _cfg(arch: str, conditional: bool = False, **kw) -> ModelConfig:
    return ModelConfig(arch=arch, conditional=conditional, num_classes=NUM_CLASSES if conditional else None, **kw)


def _shape(arch: str) -> tuple[int, ...]:
    return (2,) if arch == "mlp" else (1, 8, 8)


def _pair(arch: str, conditional: bool = False, **kw):
    cfg = _cfg(arch, conditional, **kw)
    return build_generator(cfg, _shape(arch)), build_discriminator(cfg, _shape(arch))


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("size", NATIVE_SIZES)  # 8, 16, 28, 32, 64
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_image_shapes(arch, channels, size, conditional):
    cfg = _cfg(arch, conditional, z_dim=16, width=8)
    shape = (channels, size, size)
    G, D = build_generator(cfg, shape), build_discriminator(cfg, shape)
    assert G.z_dim == 16 and G.out_shape == shape
    assert G.num_classes == (NUM_CLASSES if conditional else None)
    z, y = G.sample_z(5), G.sample_labels(5)
    assert z.shape == (5, 16)
    assert (y is None) != conditional
    x = G(z, y)
    assert x.shape == (5, *shape)
    assert x.min() >= -1 and x.max() <= 1
    s = D(x, y)
    assert s.shape == (5,) and s.dtype == torch.float32
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in D.modules())
    if arch == "resnet":
        # one residual block per doubling from the base (4x4; 7x7 at 28 px)
        assert len(G.blocks) == len(D.blocks) == {8: 1, 16: 2, 28: 2, 32: 3, 64: 4}[size]
        assert any(isinstance(m, ConditionalBatchNorm2d) for m in G.modules()) == conditional


@pytest.mark.parametrize("conditional", [False, True])
def test_mlp_shapes(conditional):
    cfg = _cfg("mlp", conditional, z_dim=4, width=32, depth=3)
    G, D = build_generator(cfg, (2,)), build_discriminator(cfg, (2,))
    assert G.out_shape == (2,)
    y = G.sample_labels(7)
    x = G(G.sample_z(7), y)
    assert x.shape == (7, 2)
    assert D(x, y).shape == (7,)
    assert sum(isinstance(m, nn.Linear) for m in G.modules()) == 4
    assert sum(isinstance(m, nn.LeakyReLU) for m in D.modules()) == 3
    # linear output: not squashed into [-1, 1]
    assert not any(isinstance(m, nn.Tanh) for m in G.modules())


def test_sample_z_is_seeded():
    G = build_generator(ModelConfig(arch="mlp"), (2,))
    a = G.sample_z(3, generator=torch.Generator().manual_seed(7))
    b = G.sample_z(3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_sample_labels():
    G, _ = _pair("resnet", conditional=True)
    a = G.sample_labels(2000, generator=torch.Generator().manual_seed(7))
    b = G.sample_labels(2000, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.dtype == torch.long and a.shape == (2000,)
    assert set(a.tolist()) == set(range(NUM_CLASSES))  # uniform over all classes, none outside
    assert build_generator(ModelConfig(arch="resnet"), (1, 8, 8)).sample_labels(3) is None


def test_fake_labels_follow_the_datas_class_shares():
    """An imbalanced labelled set: fakes drawn in equal shares would not be the data's joint p(x, y)."""
    cfg = ModelConfig(arch="dcgan", conditional=True, num_classes=3, class_shares=[6, 3, 1])
    G = build_generator(cfg, (1, 8, 8))
    assert G.class_shares == pytest.approx([0.6, 0.3, 0.1])  # normalised by the config
    y = G.sample_labels(20000, generator=torch.Generator().manual_seed(0))
    assert np.allclose(np.bincount(y.numpy(), minlength=3) / 20000, [0.6, 0.3, 0.1], atol=0.01)
    assert build_generator(ModelConfig(arch="dcgan", class_shares=[1, 1]), (1, 8, 8)).class_shares is None
    with pytest.raises(ValueError, match="2 entries for 3 classes"):
        ModelConfig(conditional=True, num_classes=3, class_shares=[0.5, 0.5])
    with pytest.raises(ValueError, match="non-negative"):
        ModelConfig(conditional=True, num_classes=2, class_shares=[1.5, -0.5])


def test_dcgan_init_std():
    G = build_generator(ModelConfig(arch="dcgan", width=32), (1, 32, 32))
    w = G.project[0].weight
    assert abs(w.std().item() - 0.02) < 0.002


def test_unconditional_dcgan_state_dict_layout_unchanged():
    # checkpoints written before conditioning existed must still load
    G, D = _pair("dcgan", width=8)
    assert {"project.0.weight", "project.2.weight", "project.2.running_mean", "blocks.0.weight",
            "blocks.1.weight", "to_pixels.0.weight"} <= set(G.state_dict())
    assert set(D.state_dict()) == {"features.0.weight", "features.0.bias", "features.2.weight",
                                   "features.2.bias", "head.weight", "head.bias"}


@pytest.mark.parametrize("size", NATIVE_SIZES)
def test_projection_and_head_are_sized_by_the_base(size):
    # 8..64: a 4x4 base, the layout (and state_dict shapes) of every earlier checkpoint; 28: a 7x7 one.
    b, k = base_side(size)
    assert b == (7 if size == 28 else 4)
    cfg = ModelConfig(arch="dcgan", width=8, z_dim=16)
    G, D = build_generator(cfg, (1, size, size)), build_discriminator(cfg, (1, size, size))
    ch = 8 * 2**k
    assert G.project[0].weight.shape == (ch * b * b, 16) and D.head.weight.shape == (1, ch * b * b)
    cfg = ModelConfig(arch="resnet", width=8, z_dim=16)
    G, D = build_generator(cfg, (1, size, size)), build_discriminator(cfg, (1, size, size))
    assert G.project[0].weight.shape == (8 * b * b, 16) and D.head.weight.shape == (1, 8)


@pytest.mark.parametrize(
    "arch,shape",
    [
        ("dcgan", (1, 12, 12)),
        ("dcgan", (1, 128, 128)),
        ("dcgan", (1, 16, 32)),
        ("dcgan", (2, 16, 16)),
        ("dcgan", (2,)),
        ("resnet", (1, 4, 4)),
        ("resnet", (3, 24, 24)),
        ("resnet", (3, 32, 16)),
        ("resnet", (4, 32, 32)),
        ("resnet", (16,)),
        ("mlp", (1, 8, 8)),
        ("mlp", (0,)),
    ],
)
def test_bad_shapes_raise(arch, shape):
    cfg = ModelConfig(arch=arch)
    with pytest.raises(ValueError):
        build_generator(cfg, shape)
    with pytest.raises(ValueError):
        build_discriminator(cfg, shape)


@pytest.mark.parametrize("arch", ARCHS)
def test_conditional_needs_num_classes(arch):
    cfg = ModelConfig(arch=arch, conditional=True)
    with pytest.raises(ValueError, match="num_classes"):
        build_generator(cfg, _shape(arch))
    with pytest.raises(ValueError, match="num_classes"):
        build_discriminator(cfg, _shape(arch))
    # num_classes alone (conditional false) is harmless: the data may set it anyway
    G = build_generator(ModelConfig(arch=arch, num_classes=3), _shape(arch))
    assert G.num_classes is None
    # "auto" is the recipe's word for "decide from the data": building before deciding is refused
    with pytest.raises(ValueError, match="'auto'"):
        build_generator(ModelConfig(arch=arch, conditional="auto", num_classes=3), _shape(arch))


@pytest.mark.parametrize("arch", ARCHS)
def test_labels_required_exactly_when_conditional(arch):
    G, D = _pair(arch, conditional=True)
    z = G.sample_z(4)
    y = G.sample_labels(4)
    x = G(z, y)
    with pytest.raises(ValueError, match="needs labels"):
        G(z)
    with pytest.raises(ValueError, match="needs labels"):
        D(x)
    with pytest.raises(ValueError, match="shape"):
        D(x, y[:2])
    with pytest.raises(ValueError, match="integer"):
        G(z, y.float())
    G0, D0 = _pair(arch)
    with pytest.raises(ValueError, match="unconditional"):
        G0(z, y)
    with pytest.raises(ValueError, match="unconditional"):
        D0(G0(z), y)


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("arch", ARCHS)
def test_spectral_norm_on_every_d_layer(arch, conditional):
    cfg = _cfg(arch, conditional, width=8, spectral_norm=True)
    shape = (3, 16, 16) if arch != "mlp" else (2,)
    D, G = build_discriminator(cfg, shape), build_generator(cfg, shape)
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert any(isinstance(m, nn.Embedding) for m in layers) == conditional  # the projection embedding
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert not any(parametrize.is_parametrized(m) for m in G.modules())  # SN is for D only
    D.train()
    x = torch.randn(4, *shape)
    y = torch.arange(4) % NUM_CLASSES if conditional else None
    with torch.no_grad():
        for _ in range(20):  # one power iteration per train-mode forward
            D(x, y)
    D.eval()  # read the weights without another power-iteration step
    for m in layers:
        w = m.weight.detach()
        sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item()
        assert abs(sigma - 1.0) < 0.1, (m, sigma)


@pytest.mark.parametrize("arch", ARCHS)
def test_unnormalised_d_is_not_unit_norm(arch):
    # guards the SN test above against passing vacuously
    _, D = _pair(arch, width=8)
    sigmas = [torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
              for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert max(abs(s - 1.0) for s in sigmas) > 0.1


def test_spectral_norm_d_supports_gradient_penalty():
    # WGAN-GP / R1 differentiate D's input gradient again; SN must not break double backward
    _, D = _pair("resnet", conditional=True, width=8, spectral_norm=True)
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    (g,) = torch.autograd.grad(D(x, torch.tensor([0, 1, 2])).sum(), x, create_graph=True)
    g.pow(2).sum().backward()
    # biases drop out of an input gradient of a ReLU net; every (normalised) weight must not
    weights = {n: p for n, p in D.named_parameters() if n.endswith("weight.original")}
    assert len(weights) == 5  # 8 px: one block (conv1, conv2, shortcut), head, projection embedding
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights.values())


@pytest.mark.parametrize("arch", ARCHS)
def test_conditional_generator_uses_labels(arch):
    torch.manual_seed(0)
    G, _ = _pair(arch, conditional=True, width=8)
    z = G.sample_z(4)
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    if arch != "mlp":
        # conditional BN starts as the identity affine (gamma 1, beta 0): labels have no effect yet
        for m in G.modules():
            if isinstance(m, ConditionalBatchNorm2d):
                assert torch.equal(m.gamma.weight, torch.ones_like(m.gamma.weight))
                assert torch.equal(m.beta.weight, torch.zeros_like(m.beta.weight))
        assert torch.equal(G(z, y0), G(z, y1))
        # ... until training moves the per-class gamma/beta: gradients must reach them
        opt = torch.optim.Adam(G.parameters(), lr=1e-2)
        G(z, torch.arange(4) % NUM_CLASSES).square().mean().backward()
        opt.step()
    assert not torch.allclose(G(z, y0), G(z, y1), atol=1e-4)


@pytest.mark.parametrize("spectral_norm", [False, True])
@pytest.mark.parametrize("arch", ARCHS)
def test_projection_discriminator_uses_labels(arch, spectral_norm):
    torch.manual_seed(0)
    _, D = _pair(arch, conditional=True, width=8, spectral_norm=spectral_norm)
    D.eval()  # fixed SN weights, so repeated calls are comparable
    x = torch.randn(4, *_shape(arch))
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert not torch.allclose(D(x, y0), D(x, y1), atol=1e-5)
    # per-sample scores: sample i's score depends on its own label only
    y = torch.tensor([0, 1, 2, 3])
    full = D(x, y)
    for i in range(4):
        assert torch.allclose(full[i], D(x[i : i + 1], y[i : i + 1])[0], atol=1e-5)


@pytest.mark.parametrize("conditional", [False, True])
def test_resnet_parameter_counts_stay_modest(conditional):
    shape = (3, 32, 32)
    for width, limit in ((32, 2_000_000), (128, 2_000_000)):
        cfg = _cfg("resnet", conditional, width=width)
        for net in (build_generator(cfg, shape), build_discriminator(cfg, shape)):
            n = sum(p.numel() for p in net.parameters())
            assert 0 < n < limit, (width, type(net).__name__, n)
