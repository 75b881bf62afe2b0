"""Sampling a trained generator (issue 15): truncation, a fixed class, latent walks, and the CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gan_core.config import ModelConfig
from gan_core.models import build_generator
from gan_core.sampling import SampleRequest, class_index, draw, slerp, truncate, walk
from test_promote import run_cli



def _conditional():
    torch.manual_seed(0)
    G = build_generator(ModelConfig(arch="mlp", z_dim=4, width=16, depth=2, conditional=True, num_classes=3), (2,))
    G.class_names = ["cat", "dog", "eel"]
    return G.eval()


def _truncated_normal_cdf(x: torch.Tensor, t: float) -> torch.Tensor:
    phi = torch.special.ndtr
    lo = phi(torch.tensor(-t, dtype=torch.float64))
    return (phi(x.double()) - lo) / (1 - 2 * lo)


@pytest.mark.parametrize("t", [0.5, 2.0])
def test_truncation_draws_the_truncated_normal_instead_of_clipping(t):
    z = truncate(torch.randn(40_000, generator=torch.Generator().manual_seed(0)), t)
    assert z.abs().max() <= t and z.dtype == torch.float32
    # Kolmogorov-Smirnov distance to N(0, 1) truncated to [-t, t]: ~0.005 for 40,000 draws; clipping puts
    # 62% (t = 0.5) or 5% (t = 2) on the bounds, a distance of 0.31 or 0.02.
    x = z.double().sort().values
    empirical = torch.arange(1, len(x) + 1, dtype=torch.float64) / len(x)
    assert (empirical - _truncated_normal_cdf(x, t)).abs().max() < 0.01
    same = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(truncate(same, None), same)


def test_truncation_takes_the_same_time_whatever_the_threshold():
    """Redrawing the entries beyond T took ~1/T rounds (T=1e-3: 0.21 s for one request; 1e-9: days)."""
    import time

    z = torch.randn(4096, 128, generator=torch.Generator().manual_seed(0))
    for t in (1e-9, 1e-300, 40.0, 1e300):
        started = time.perf_counter()
        out = truncate(z, t)
        assert time.perf_counter() - started < 2.0, t
        assert out.isfinite().all() and out.abs().max() <= t, t
    tiny = truncate(z, 1e-9) / 1e-9  # uniform on [-1, 1] to float32 precision: the density is flat there
    assert tiny.abs().max() <= 1 and abs(float(tiny.abs().mean()) - 0.5) < 0.01
    assert torch.allclose(truncate(z, 40.0), z)  # no entry of a float32 N(0, 1) draw reaches 40
    # Monotone in z: the same seed's latents shrink with T, keeping their signs and order.
    order = z[0].argsort()
    assert torch.equal(truncate(z[0], 0.7).argsort(), order) and torch.equal(truncate(z[0], 0.7).sign(), z[0].sign())


def test_a_plain_draw_is_the_evaluators_draw_and_seeded():
    from flows.evaluate import sample

    G = _conditional()
    a, b = draw(G, SampleRequest(n=16, seed=3)), draw(G, SampleRequest(n=16, seed=3))
    assert torch.equal(a, b) and torch.equal(a, sample(G, 16, 3))
    assert not torch.equal(a, draw(G, SampleRequest(n=16, seed=4)))


def test_a_draw_without_a_class_gives_every_class_an_equal_share_in_a_seeded_order():
    """Stratified, as the real splits it is compared with: independent ids would give digits' ten
    classes shares 8-11% in 2,500 samples, noise in the class mix that FD charges to the generator."""

    class Echo(torch.nn.Module):  # "images" that are the class ids it was asked for
        num_classes = 3

        def sample_z(self, n, generator):
            return torch.randn(n, 1, generator=generator)

        def forward(self, z, y):
            return y[:, None].float()

    a = draw(Echo(), SampleRequest(n=11, seed=0)).long().squeeze(1)
    assert sorted(torch.bincount(a, minlength=3).tolist()) == [3, 4, 4]
    assert torch.equal(a, draw(Echo(), SampleRequest(n=11, seed=0)).long().squeeze(1))
    assert not torch.equal(a, draw(Echo(), SampleRequest(n=11, seed=1)).long().squeeze(1))  # shuffled per seed
    assert not torch.equal(a, torch.arange(11) % 3)
    echo = Echo()
    echo.class_shares = [0.55, 0.3, 0.15]  # an imbalanced set: its own mix, 5.5 / 3 / 1.5 of 10 rounded
    b = draw(echo, SampleRequest(n=10, seed=0)).long().squeeze(1)
    assert torch.bincount(b, minlength=3).tolist() == [6, 3, 1]
    assert torch.bincount(draw(echo, SampleRequest(n=2000, seed=1)).long().squeeze(1)).tolist() == [1100, 600, 300]


def test_a_fixed_class_conditions_every_sample():
    G = _conditional()
    got = draw(G, SampleRequest(n=6, seed=0, label=class_index("eel", G.class_names)))
    z = G.sample_z(6, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(got, G(z, y=torch.full((6,), 2)))
    with pytest.raises(ValueError, match="unknown class 'fox'.*cat, dog, eel"):
        class_index("fox", G.class_names)
    with pytest.raises(ValueError, match="unconditional"):
        class_index("cat", None)


def test_a_walk_passes_through_each_seeds_keyframe():
    G = _conditional()
    frames = draw(G, SampleRequest(n=3, seed=5, label=0, interpolate=4))
    assert len(frames) == (3 - 1) * 4 + 1
    for i, at in enumerate((0, 4, 8)):  # keyframe i is seed 5 + i's first latent
        z = G.sample_z(1, generator=torch.Generator().manual_seed(5 + i))
        assert torch.allclose(frames[at], G(z, y=torch.zeros(1, dtype=torch.long))[0], atol=1e-6)
    a, b = torch.randn(1, 8), torch.randn(1, 8)
    mid = slerp(a, b, torch.tensor([0.5]))
    assert abs(mid.norm() - (a.norm() + b.norm()) / 2) < 0.25 * a.norm()  # the arc keeps a typical norm
    assert len(walk(torch.randn(2, 8), 1)) == 2


@pytest.mark.parametrize("bad", [{"truncation": 0.0}, {"truncation": -1.0}, {"interpolate": 0},
                                 {"interpolate": 3, "n": 1}])
def test_bad_requests_are_refused(bad):
    with pytest.raises(ValueError):
        SampleRequest(**{"n": 4, **bad})


def test_cli_samples_a_class_and_refuses_bad_options_with_exit_2(tmp_path, registered):
    from flows.registry.versions import load_generator

    out = tmp_path / "two.npy"
    code, stdout, err = run_cli("sample", "--model", str(registered), "-n", "5", "--seed", "7", "--class", "2",
                                "--truncation", "1.5", "--out", str(out), "--workspace", str(tmp_path))
    assert code == 0, err
    G = load_generator(str(registered))
    want = draw(G, SampleRequest(n=5, seed=7, label=2, truncation=1.5)).numpy()
    np.testing.assert_allclose(np.load(out), want, atol=1e-6)
    walk_png = tmp_path / "walk.png"
    code, stdout, err = run_cli("sample", "--model", str(registered), "-n", "3", "--interpolate", "4",
                                "--out", str(walk_png), "--workspace", str(tmp_path))
    assert code == 0 and walk_png.stat().st_size > 0 and "wrote 9 samples" in stdout
    for args, message in [(["--class", "9"], "unknown class '9'"), (["--truncation", "0"], "must be > 0"),
                          (["--interpolate", "2", "-n", "1"], "-n must be at least 2")]:
        code, _, err = run_cli("sample", "--model", str(registered), *args, "--out", str(out), "--workspace", str(tmp_path))
        assert code == 2 and message in err and "Traceback" not in err, (args, err)


def test_cli_refuses_a_class_for_an_unconditional_model(tmp_path):
    from test_promote import tiny_state

    folder = tmp_path / "model"
    (folder / "artifacts").mkdir(parents=True)
    torch.save(tiny_state(), folder / "artifacts" / "generator.pt")
    code, _, err = run_cli("sample", "--model", str(folder), "--class", "0", "--out", str(tmp_path / "x.npy"),
                           "--workspace", str(tmp_path))
    assert code == 2 and "unconditional" in err
