"""Successive halving's rungs (the scheduler itself runs under real Tune in test_tune_integration)."""
from __future__ import annotations

from pathlib import Path

from flows.run.halving import rungs

ROOT = Path(__file__).resolve().parents[1]


def test_rungs_are_grace_times_powers_of_the_factor_below_the_budget():
    assert rungs(1, 3, 16) == [1, 3, 9]
    assert rungs(2, 2, 16) == [2, 4, 8]
    assert rungs(5, 2, 5) == []  # grace >= epochs: every trial trains to the end


def test_asha_compares_at_the_same_rungs_as_synchronous_halving():
    """`tune.scheduler: asha` is Ray's ASHAScheduler over the trial's reports, and its trials train in
    segments that end at its rungs (a stop never lands mid-segment: see flows.run.tune)."""
    from ray.tune.schedulers import ASHAScheduler

    from flows import params as params_mod
    from flows.run.tune import _scheduler, _stops

    raw = params_mod.load_yaml((ROOT / "params.yaml").read_text())
    raw["train"]["epochs"] = 8
    raw["tune"].update(scheduler="asha", grace_period=1, reduction_factor=2)
    p = params_mod.validate(raw, "test")
    s = _scheduler(p, _stops(p), population=4, at_once=2)
    assert isinstance(s, ASHAScheduler)
    assert _stops(p) == rungs(1, 2, 8) == [1, 2, 4]
    assert (s._max_t, s._reduction_factor, s._time_attr) == (8, 2, "training_iteration")
