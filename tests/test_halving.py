"""Successive halving's rungs (the scheduler itself runs under real Tune in test_tune_integration)."""
from __future__ import annotations

from flows.run.halving import rungs


def test_rungs_are_grace_times_powers_of_the_factor_below_the_budget():
    assert rungs(1, 3, 16) == [1, 3, 9]
    assert rungs(2, 2, 16) == [2, 4, 8]
    assert rungs(5, 2, 5) == []  # grace >= epochs: every trial trains to the end
