"""`ganflow tune`: real Ray Tune over real TorchTrainer trials (PBT, synchronous halving), MLflow parent/child runs."""
from __future__ import annotations

import json
import re

import pytest

from conftest import ganflow

pytestmark = pytest.mark.integration


def test_pbt_moves_the_best_weights_into_the_weaker_trial_with_mutated_values(workspace):
    """Two trials, one whose G cannot learn (lr_g 1e-9): at a perturbation PBT gives the weaker trial
    the stronger one's checkpoint, which needs our callback's Tune checkpoints (Ray's own
    TuneReportCallback only forwards a path). The weaker trial then continues at the donor's epoch,
    under its own MLflow run, with its values recorded as they change.

    One trial trains at a time (2 CPUs per worker): the second starts only when the first waits at a
    perturbation. Asynchronous PBT compares a trial with nobody when the others run ahead or behind
    (CI saw no exploit when one trial merely started late); synchronous PBT, the default, compares
    them at the same epoch."""
    # Digits: the probe's Frechet distance separates the two trials from the first epoch on.
    proc = ganflow(workspace, "tune", "--set", "classifier.epochs=3", "--set", "train.epochs=4",
                   "--set", "train.num_workers=1",
                   "--set", "train.cpus_per_worker=2", "--set", "optim.lr_decay_start=1",  # constant lr
                   "--set", "eval.num_samples=500", "--set", "eval.probe_samples=500",
                   "--set", "tune.scheduler=pbt", "--set", "tune.perturbation_interval=2",
                   "--set", "tune.space={optim.lr_g: {grid: [0.0005, 1.0e-9]}}", "--set", "tune.num_samples=1")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Registered ganflow-digits version 1" in proc.stdout
    assert "continuing another trial's weights at epoch" in out
    exploits = int(re.search(r"PBT made (\d+) exploit", proc.stdout).group(1))
    assert exploits >= 1

    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{workspace / '.ganflow' / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.get_experiment_by_name("ganflow-digits").experiment_id
    parent = client.search_runs([exp], "tags.`ganflow.kind` = 'search'")[0]
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2  # one MLflow run per trial, however often PBT restarts it
    assert parent.data.metrics["pbt_exploits"] == exploits
    exploited = [c for c in children if any(k.startswith("ganflow.pbt_exploit_epoch_") for k in c.data.tags)]
    assert exploited, [c.data.tags for c in children]
    run = exploited[0]
    epoch = min(int(k.rsplit("_", 1)[1]) for k in run.data.tags if k.startswith("ganflow.pbt_exploit_epoch_"))
    assert 2 <= epoch < 4
    # The values it trained with over time, as metrics at the epoch each took effect.
    lrs = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "hp/optim.lr_g"))
    assert lrs[0][0] == 0 and epoch in [s for s, _ in lrs], lrs
    assert all(v in (0.0005, 1e-9) for _, v in lrs)  # grid values mutate to a neighbour in the grid
    # ... and the optimiser really used them after loading the donor's state (which carries its lr).
    history = sorted(client.get_metric_history(run.info.run_id, "lr_g"), key=lambda m: m.timestamp)
    used = {m.step: m.value for m in history}  # the latest write of an epoch PBT made it train again
    for step, value in lrs:
        assert used[step] == pytest.approx(value), (used, lrs)
    # Its epochs after the exploit continue the donor's count rather than starting over.
    epochs = [m.step for m in client.get_metric_history(run.info.run_id, "loss_d")]
    assert max(epochs) == 3 and epochs.count(epoch) >= 1
    assert all(c.info.status == "FINISHED" for c in children)


def test_synchronous_halving_records_every_trial_and_registers_the_best(workspace):
    """Five trials, rungs at epochs 1 and 2 of 3, two trials training at a time: two whose G cannot learn
    (lr_g 1e-9, 1e-8), one that diverges (a failed trial) and two sane ones. Every trial must reach a
    rung before any trains past it; the best half of the live ones goes on. ASHA (asynchronous) lets the
    first trials through unchallenged, which this would catch: their epoch counts would not be 1, 1, 2, 3.
    Every trial is recorded (MLflow child runs, trials.json) and the best successful one is registered."""
    proc = ganflow(workspace, "tune", "--set", "classifier.epochs=3", "--set", "train.epochs=3",
                   "--set", "train.num_workers=1",
                   "--set", "train.cpus_per_worker=1",
                   "--set", "eval.num_samples=500", "--set", "eval.probe_samples=500",
                   "--set", "tune.scheduler=sha", "--set", "tune.grace_period=1", "--set", "tune.reduction_factor=2",
                   "--set", "tune.space={optim.lr_g: {grid: [1.0e-9, 0.0005, 1.0e+30, 1.0e-8, 0.0002]}}",
                   "--set", "tune.num_samples=1")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "successive halving at epoch 1: 2 of 4 trials go on to 2" in proc.stdout, proc.stdout[-3000:]
    assert "successive halving at epoch 2: 1 of 2 trials go on to the end" in proc.stdout
    assert "Registered ganflow-digits version 1" in proc.stdout

    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{workspace / '.ganflow' / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.get_experiment_by_name("ganflow-digits").experiment_id
    parents = client.search_runs([exp], "tags.`ganflow.kind` = 'search'")
    assert len(parents) == 1
    parent = parents[0]
    trials = json.loads(open(mlflow.artifacts.download_artifacts(
        run_id=parent.info.run_id, artifact_path="trials.json")).read())
    epochs = {t["config"]["optim.lr_g"]: t["epochs"] for t in trials}
    assert epochs[1e-9] == epochs[1e-8] == 1, trials  # the two that cannot learn stop at the first rung
    assert sorted([epochs[0.0005], epochs[0.0002]]) == [2, 3], trials
    assert sorted(t["status"] for t in trials) == ["error", "ok", "ok", "ok", "ok"], trials
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 5
    failed = [c for c in children if c.info.status == "FAILED"]
    assert len(failed) == 1 and "diverged" in failed[0].data.tags["ganflow.failure"]
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) == 4
    # Synchronous: no epoch-2 probe before the last epoch-1 probe (score is logged at 0-based steps).
    history = [m for c in finished for m in client.get_metric_history(c.info.run_id, "score")]
    first = max(m.timestamp for m in history if m.step == 0)
    assert all(m.timestamp > first for m in history if m.step >= 1), history
    stopped = [c for c in children if "ganflow.stopped" in c.data.tags]
    assert len(stopped) == 3
    # The registered version is the best successful trial (by its last score), evaluated again on the holdout.
    mv = client.get_model_version("ganflow-digits", "1")
    assert mv.run_id in {c.info.run_id for c in finished}
    assert "eval/fd" in client.get_run(mv.run_id).data.metrics
