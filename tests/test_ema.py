import io

import pytest
import torch
from torch import nn

from gan_core.ema import EMA


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def set_all(m: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(value)


def test_copy_is_frozen_and_independent():
    G = net()
    ema = EMA(G, decay=0.9)
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())
    assert G.training and all(p.requires_grad for p in G.parameters())
    set_all(G, 7.0)
    assert not any((p == 7.0).any() for p in ema.module.parameters())  # a copy, not a view


def test_decay_zero_tracks_the_model_exactly():
    G = net()
    ema = EMA(G, decay=0.0)
    for _ in range(3):
        G(torch.randn(8, 3)).sum()  # moves BN running stats
        with torch.no_grad():
            for p in G.parameters():
                p.add_(torch.randn_like(p))
        ema.update(G)
        for a, b in zip(ema.module.state_dict().values(), G.state_dict().values()):
            assert torch.equal(a, b)


def test_two_step_average_with_warmup():
    G = net()
    ema = EMA(G, decay=0.5)
    set_all(G, 0.0)
    set_all(ema.module, 0.0)
    set_all(G, 1.0)
    ema.update(G)  # warm-up decay min(0.5, 1/10) = 0.1: 0.1*0 + 0.9*1
    set_all(G, 2.0)
    assert ema.current_decay() == pytest.approx(2 / 11)
    ema.update(G)  # min(0.5, 2/11): (2/11)*0.9 + (9/11)*2
    expected = (2 / 11) * 0.9 + (9 / 11) * 2.0
    for p in ema.module.parameters():
        assert torch.allclose(p, torch.full_like(p, expected))
    assert ema.n_updates == 2
    # later the configured decay caps the warm-up
    ema.n_updates = 100
    assert ema.current_decay() == 0.5


def test_plain_decay_without_warmup():
    G = net()
    ema = EMA(G, decay=0.75, warmup=False)
    set_all(ema.module, 4.0)
    set_all(G, 0.0)
    ema.update(G)
    assert all(torch.allclose(p, torch.full_like(p, 3.0)) for p in ema.module.parameters())


def test_buffers_are_copied_not_averaged():
    G = net()
    ema = EMA(G, decay=0.99)
    G(torch.randn(16, 3) * 5 + 3)
    ema.update(G)
    assert torch.equal(ema.module[1].running_mean, G[1].running_mean)
    assert ema.module[1].num_batches_tracked.item() == 1


def test_state_dict_round_trip_weights_only():
    G = net()
    ema = EMA(G, decay=0.9)
    with torch.no_grad():
        for p in G.parameters():
            p.mul_(2)
    ema.update(G)
    ema.update(G)
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = EMA(net(), decay=0.9)
    fresh.load_state_dict(state)
    assert fresh.n_updates == 2
    for a, b in zip(fresh.module.state_dict().values(), ema.module.state_dict().values()):
        assert torch.equal(a, b)
    x = torch.randn(4, 3)
    assert torch.equal(fresh.module(x), ema.module(x))


def test_unwraps_a_wrapper_and_rejects_bad_decay():
    G = net()
    wrapped = nn.Module()
    wrapped.module = G  # DDP-like: the bare model lives at .module
    ema = EMA(wrapped, decay=0.0)
    assert isinstance(ema.module, nn.Sequential)
    set_all(G, 1.5)
    ema.update(wrapped)
    assert all((p == 1.5).all() for p in ema.module.parameters())
    with pytest.raises(ValueError):
        EMA(G, decay=1.0)
