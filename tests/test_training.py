"""gan_core.training: the one loop's hooks (probe, checkpoint, progress at the epochs asked), its resume,
the bf16 path under CPU autocast, the speed settings' resolution and the progress lines."""
from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from gan_core.augment import AugmentConfig
from gan_core.checkpoint import restore
from gan_core.config import LossConfig, ModelConfig, OptimConfig
from gan_core.recipes import resolve
from gan_core.training import (FIT_AFTER, SCHEDULE, SCORE, Hooks, Progress, RunSpec, build, estimate_line, fit, format_duration, epoch_batches,
                               prepare_data, progress_line, recorded_schedule, resolve_speed)


def _spec(**kw) -> RunSpec:
    loss = LossConfig(name="non-saturating", r1_gamma=0.01)
    base = dict(model=ModelConfig(arch="dcgan", width=8, z_dim=8), loss=loss,
                optim=resolve(loss, OptimConfig(lr_decay_start=0.5)), augment=AugmentConfig(), epochs=4,
                batch_size=16, seed=3, ema_decay=0.99, checkpoint_every=3, probe_every=2, probe_budget=1.0)
    return RunSpec(**{**base, **kw})


def _data(n: int = 64, side: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1


class Recorder(Hooks):
    def __init__(self, probe_cost: float = 0.0):
        self.probes, self.states, self.reports, self.progress_seen, self.saved = [], [], [], [], {}
        self.probe_cost = probe_cost

    def probe(self, G, done):
        time.sleep(self.probe_cost)
        self.probes.append(done)
        return {"probe_x": float(done)}

    def progress(self, p: Progress):
        self.progress_seen.append((p.done, p.first, p.eta_s))

    def end_epoch(self, metrics, done, state):
        self.reports.append(done)
        if state is not None:
            self.states.append(done)
            self.saved[done] = {**state, "history": list(state["history"])}  # as saved then


def _run(spec: RunSpec, hooks: Hooks, x: torch.Tensor, start: int = 0, history=None, parts=None):
    parts = parts or build(spec, tuple(x.shape[1:]))
    return parts, fit(spec, parts, epoch_batches(prepare_data(spec, x), spec.batch_size), hooks, start, history)


def test_hooks_run_at_the_epochs_asked(one_thread):
    h = Recorder()
    _, out = _run(_spec(), h, _data())
    assert h.probes == [2, 4]              # every probe_every, and the last epoch
    assert h.states == [3, 4]              # every checkpoint_every, and the last epoch
    assert h.reports == [1, 2, 3, 4]       # one report per epoch, checkpoint or not
    assert [d for d, _, _ in h.progress_seen] == [1, 2, 3, 4]
    assert [first for _, first, _ in h.progress_seen] == [True, False, False, False]
    assert h.progress_seen[-1][2] == 0.0 and h.progress_seen[0][2] > 0
    assert [m["epoch"] for m in out.history] == [0, 1, 2, 3] and out.diverged_at is None
    assert "probe_x" in out.history[1] and "probe_x" not in out.history[0]
    assert out.state["epoch"] == 3 and len(out.state["history"]) == 4
    # The lr schedule is the product's: constant to half-way, then decaying.
    lrs = [m["lr_g"] for m in out.history]
    assert lrs[0] == lrs[1] == lrs[2] and lrs[3] == pytest.approx(lrs[2] / 2)  # progress 3/4: half-way down


def test_probes_wait_while_they_cost_more_than_their_share_of_training(one_thread):
    h = Recorder(probe_cost=0.5)  # far more than a tiny epoch
    _run(_spec(epochs=5, probe_every=1, probe_budget=0.1), h, _data())
    assert h.probes == [1, 5]  # the first, then only the last one (always run)
    h = Recorder(probe_cost=0.5)
    _run(_spec(epochs=3, probe_every=1, probe_budget=1.0, stop_epoch=2), h, _data())
    assert h.probes == [1, 2]  # a segment's end (stop_epoch) is probed as well


def test_a_resumed_run_is_bit_identical_to_an_uninterrupted_one(one_thread):
    x = _data()
    spec = _spec(augment=AugmentConfig(policy="adaptive", p_init=0.1))
    whole, _ = _run(spec, Hooks(), x)
    h = Recorder()
    _, first = _run(dataclasses.replace(spec, stop_epoch=2, checkpoint_every=2), h, x)
    parts = build(spec, tuple(x.shape[1:]))
    start, history = restore(first.state, parts.G, parts.D, parts.opt_g, parts.opt_d, parts.ema)
    resumed, second = _run(spec, Hooks(), x, start, history, parts)
    assert start == 2 and [m["epoch"] for m in second.history] == [0, 1, 2, 3]
    for a, b in zip(whole.G.state_dict().values(), resumed.G.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(whole.ema.module.state_dict().values(), resumed.ema.module.state_dict().values()):
        assert torch.equal(a, b)


def test_a_nan_stops_the_run_at_that_epoch(one_thread):
    h = Recorder()
    spec = _spec(optim=dataclasses.replace(_spec().optim, lr_d=1e30, lr_g=1e30), epochs=6)
    _, out = _run(spec, h, _data())
    assert out.diverged_at is not None and out.diverged_at < 6
    assert h.reports[-1] == out.diverged_at and out.history[-1]["nonfinite"] == 1.0
    assert out.diverged_at not in h.states  # no checkpoint of a poisoned state


def test_bf16_under_cpu_autocast_trains_finite_with_the_same_checkpoint_format(one_thread):
    x = _data(64, 16)
    h32, h16 = Recorder(), Recorder()
    fp32, out32 = _run(_spec(epochs=2, checkpoint_every=1), h32, x)
    bf16, out16 = _run(_spec(epochs=2, checkpoint_every=1, precision="bf16", channels_last=True, r1_every=4), h16, x)
    assert all(m["nonfinite"] == 0.0 for m in out16.history)
    assert all(torch.isfinite(p).all() for p in bf16.G.parameters())
    for key in ("generator", "discriminator", "ema"):
        a, b = out32.state[key], out16.state[key]
        a, b = (a["module"], b["module"]) if key == "ema" else (a, b)
        assert list(a) == list(b)
        assert all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)
    assert set(out32.state) == set(out16.state)
    # The weights did move differently: bf16 is not silently the fp32 path.
    assert not torch.equal(*(next(iter(o.state["generator"].values())) for o in (out32, out16)))


def test_speed_settings_resolve_by_device_and_image_size(monkeypatch):
    import gan_core.training as training

    monkeypatch.setattr(training, "bf16_fast", lambda device: device == "cuda")
    assert resolve_speed("auto", "auto", "cpu", (1, 8, 8)) == ("fp32", False)    # 8 px: overhead-bound
    assert resolve_speed("auto", "auto", "cpu", (3, 32, 32)) == ("fp32", True)   # no native bf16 here
    assert resolve_speed("auto", "auto", "cuda", (3, 32, 32)) == ("bf16", True)
    assert resolve_speed("auto", "auto", "cuda", (2,)) == ("fp32", False)        # points
    assert resolve_speed("bf16", False, "cpu", (1, 8, 8)) == ("bf16", False)     # what the user set wins
    assert resolve_speed("fp32", True, "cuda", (2,)) == ("fp32", False)          # NHWC needs images


def test_a_spec_refuses_what_it_cannot_train():
    with pytest.raises(ValueError, match="precision"):
        _spec(precision="fp16")
    with pytest.raises(ValueError, match="resolved"):
        _spec(model=ModelConfig(arch="auto"))
    with pytest.raises(ValueError, match="stop_epoch"):
        _spec(stop_epoch=9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        _spec().epochs = 3  # type: ignore[misc]


def test_progress_lines_say_elapsed_time_and_eta():
    p = Progress(done=3, end=200, total=200, epoch_s=2.0, elapsed_s=6.2, eta_s=394.0, metrics={}, finite=True,
                 first=False)
    assert progress_line(p) == "epoch 3/200 elapsed 6s ETA 6m34s"
    assert progress_line(p, bar=True, width=10) == "epoch 3/200 [..........]   2% elapsed 6s ETA 6m34s"
    half = dataclasses.replace(p, done=100)
    assert "[#####.....]  50%" in progress_line(half, bar=True, width=10)
    first = dataclasses.replace(p, done=1, elapsed_s=23.0, eta_s=199 * 23.0, first=True)
    assert estimate_line(first) == "estimate: about 77 min for 200 epochs on this machine (2.0s an epoch)"
    assert format_duration(4.4) == "4s" and format_duration(3725) == "1h02m"


def test_lazy_r1_is_the_default_for_images_only():
    from gan_core.training import LAZY_R1, resolve_r1_every

    assert resolve_r1_every("auto", (1, 8, 8)) == LAZY_R1 == 16
    assert resolve_r1_every("auto", (2,)) == 1  # points: R1 on every step, as their recipes were measured
    assert resolve_r1_every(4, (2,)) == 4


def test_the_eta_follows_the_recent_epochs_not_the_first(one_thread):
    class SlowFirst(Recorder):
        def probe(self, G, done):
            time.sleep(1.0 if done == 1 else 0.0)  # a first epoch's one-time cost
            return None

    h = SlowFirst()
    _run(_spec(epochs=4, probe_every=1, probe_budget=1.0), h, _data())
    (_, _, eta1), (_, _, eta2) = h.progress_seen[:2]
    assert eta1 >= 3 * 1.0  # after the first epoch only its own time is known: 3 more like it
    assert eta2 < 0.5 * 2   # after the second, the first's second of waiting no longer counts


class Timed(Recorder):
    """Epochs that take `epoch_s` of wall time each (a slow machine), and a scripted probe score."""

    def __init__(self, epoch_s: float = 0.0, scores: dict[int, float] | None = None):
        super().__init__()
        self.epoch_s, self.scores, self.lines = epoch_s, scores or {}, []

    def reduce(self, metrics):
        time.sleep(self.epoch_s)
        return metrics

    def probe(self, G, done):
        self.probes.append(done)
        return {SCORE: self.scores.get(done, 1.0)}

    def progress(self, p: Progress):
        super().progress(p)
        self.lines.append((p.done, p.total, p.fitted, p.stopped))


def test_a_time_budget_fits_the_whole_schedule_with_its_decay_and_a_resume_keeps_it(one_thread):
    x = _data()
    spec = _spec(epochs=40, checkpoint_every=2, probe_every=0, time_budget_s=3.0)
    h = Timed(epoch_s=0.2)
    started = time.perf_counter()
    _, out = _run(spec, h, x)
    took = time.perf_counter() - started
    n = out.schedule_epochs
    assert n is not None and FIT_AFTER < n < 40 and len(out.history) == n  # shrunk, and trained to its end
    assert took < 3.0 * 1.25                                                # within the budget (+ tolerance)
    assert [line[1] for line in h.lines][FIT_AFTER - 1:] == [n] * (n - FIT_AFTER + 1)
    assert [line[2] for line in h.lines].count(True) == 1                    # said once
    lrs = [m["lr_g"] for m in out.history]
    assert lrs[-1] < 0.5 * lrs[0]                                           # the decay ran inside the budget
    assert all(m[SCHEDULE] == n for m in out.history[FIT_AFTER - 1:])       # recorded with every later epoch
    # A resume (another machine: a budget that would fit far more epochs) keeps the schedule it was fitted to.
    mid = next(s for s in h.states if FIT_AFTER < s < n)
    parts = build(spec, tuple(x.shape[1:]))
    start, history = restore(h.saved[mid], parts.G, parts.D, parts.opt_g, parts.opt_d, parts.ema)
    assert start == mid and recorded_schedule(history) == n
    _, resumed = _run(dataclasses.replace(spec, time_budget_s=1000.0), Timed(), x, start, history, parts)
    assert resumed.schedule_epochs == n and len(resumed.history) == n


def test_a_budget_never_lengthens_the_recipe_and_a_tiny_one_still_ends(one_thread):
    h = Timed()
    _, out = _run(_spec(epochs=4, probe_every=0, time_budget_s=3600.0), h, _data())
    assert out.schedule_epochs == 4 and len(out.history) == 4
    _, out = _run(_spec(epochs=30, probe_every=0, time_budget_s=0.01), Timed(epoch_s=0.05), _data())
    assert out.schedule_epochs == FIT_AFTER + 1 and len(out.history) == FIT_AFTER + 1


def test_the_stop_rule_waits_for_the_decay_and_a_flat_stretch(one_thread):
    # Improving to epoch 6, flat after: with the decay from epoch 10 of 20 and a 20% stretch (4 epochs),
    # the run stops at 14, not before the decay and not while the probe still improves.
    scores = {d: 10.0 / d if d <= 6 else 10.0 / 6 * 0.99 for d in range(1, 21)}
    h = Timed(scores=scores)
    _, out = _run(_spec(epochs=20, probe_every=1, probe_budget=1.0, checkpoint_every=5, stop_patience=0.2), h, _data())
    assert out.stopped_at == 14 and len(out.history) == 14
    assert h.states[-1] == 14 and h.lines[-1][3]           # a checkpoint where it stopped, and said so
    # Still improving by more than the noise: it never stops early.
    h = Timed(scores={d: 0.9 ** d for d in range(1, 21)})
    _, out = _run(_spec(epochs=20, probe_every=1, probe_budget=1.0, stop_patience=0.2), h, _data())
    assert out.stopped_at is None and len(out.history) == 20
    # Off by default.
    _, out = _run(_spec(epochs=20, probe_every=1, probe_budget=1.0), Timed(scores=scores), _data())
    assert out.stopped_at is None
