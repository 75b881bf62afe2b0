"""Synchronous successive halving (Jamieson & Talwalkar 2016) as a Ray Tune scheduler.

Every trial trains to the first rung (grace_period epochs); once *all* of them are there, the best
1/reduction_factor go on to the next rung (grace * factor), and so on; the last one left trains to
train.epochs. ASHA, the asynchronous form, lets a trial through a rung when few others have reached
it yet, so on a small machine the first trials to run pass every rung unchallenged; here nobody is
let through before the whole rung is compared. Trials wait at a rung PAUSED (their TorchTrainer shut
down: the trial driver trains in segments that end at the rungs) and this scheduler alone decides
which trial trains next, at most `at_once` at a time."""
from __future__ import annotations

import math

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from flows.conventions import SELECTION, completed


def rungs(grace_period: int, reduction_factor: int, epochs: int) -> list[int]:
    """The epoch counts at which trials are compared: grace * factor^k below train.epochs."""
    out, r = [], grace_period
    while r < epochs:
        out.append(r)
        r *= reduction_factor
    return out


class SyncHalving(FIFOScheduler):
    """`score` is minimised; a trial's `epoch` (0-based) in its reports is its clock."""

    def __init__(self, rung_epochs: list[int], reduction_factor: int, population: int, at_once: int) -> None:
        super().__init__()
        self.rungs, self.factor, self.population, self.at_once = rung_epochs, reduction_factor, population, at_once
        self.level: dict[Trial, int] = {}  # index of the rung the trial trains towards; len(rungs): to the end
        self.scores: list[dict[Trial, float]] = [{} for _ in rung_epochs]
        self.decided = [False] * len(rung_epochs)
        self.gone: set[Trial] = set()
        self.chosen: set[Trial] = set()

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        self.level[trial] = 0

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        k = self.level[trial]
        if k >= len(self.rungs) or completed(result.get("epoch", -1)) < self.rungs[k]:
            return TrialScheduler.CONTINUE
        score = float(result.get(SELECTION, math.inf))
        self.scores[k][trial] = score if math.isfinite(score) else math.inf
        return self._decide(tune_controller, k, trial) or TrialScheduler.PAUSE

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self.gone.add(trial)
        if self.level.get(trial, len(self.rungs)) < len(self.rungs):
            self._decide(tune_controller, self.level[trial])  # it may have been the last one awaited

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self.on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self.on_trial_remove(tune_controller, trial)

    def _decide(self, tune_controller, k: int, current: Trial | None = None) -> str | None:
        """Compare rung k once every live trial has reached it: promote the best, stop the rest.
        Returns the action for `current` (the trial reporting now), None when nothing is decided."""
        if self.decided[k] or len(self.level) < self.population:
            return None
        live = [t for t, lvl in self.level.items() if lvl == k and t not in self.gone]
        if any(t not in self.scores[k] for t in live):
            return None
        self.decided[k] = True  # before stop_trial, which calls back into on_trial_remove
        ranked = sorted(live, key=lambda t: self.scores[k][t])
        keep = ranked[:max(1, len(ranked) // self.factor)]
        action = None
        for t in ranked:
            if t in keep:
                self.level[t] = k + 1
                if t is current:
                    action = TrialScheduler.CONTINUE
            elif t is current:
                action = TrialScheduler.STOP
            else:
                tune_controller.stop_trial(t)  # waiting PAUSED at the rung: no TorchTrainer to stop
        target = self.rungs[k + 1] if k + 1 < len(self.rungs) else "the end"
        print(f"Tune: successive halving at epoch {self.rungs[k]}: {len(keep)} of {len(ranked)} trials go on to "
              f"{target} (scores {', '.join(f'{self.scores[k][t]:.4g}' for t in ranked)})", flush=True)
        return action

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        trials = tune_controller.get_trials()
        busy = 0
        for t in trials:
            if t.status == Trial.RUNNING or (t.status == Trial.PENDING and t in self.chosen):
                busy += 1
            elif t.status == Trial.PENDING:
                # Tune starts every PENDING trial it can, and a trial's driver reserves no CPU (its
                # TorchTrainer does): new trials wait PAUSED until this scheduler picks them.
                tune_controller._set_trial_status(t, Trial.PAUSED)
        if busy >= self.at_once:
            return None
        ready = [t for t in trials if t.status == Trial.PAUSED and t not in self.gone and t in self.level
                 and (self.level[t] == len(self.rungs) or t not in self.scores[self.level[t]])]
        if not ready:
            return None
        pick = min(ready, key=lambda t: self.level[t])  # the lowest rung first; Tune's order within it
        self.chosen.add(pick)
        return pick

    def debug_string(self) -> str:
        return f"Synchronous successive halving at epochs {self.rungs}, factor {self.factor}, {self.at_once} at once."
