"""`ganflow tune`: real Ray Tune with ASHA over real TorchTrainer trials, MLflow parent/child runs."""
from __future__ import annotations

import json

import pytest

from conftest import ganflow

pytestmark = pytest.mark.integration


def test_tune_records_every_trial_and_registers_the_best(workspace):
    proc = ganflow(workspace, "tune", "--set", "data.name=ring8", "--set", "data.points=2000",
                   "--set", "train.epochs=3", "--set", "train.num_workers=1", "--set", "eval.num_samples=500",
                   "--set", "tune.grace_period=1",
                   # A grid of 3: two sane learning rates and one that diverges (a failed trial).
                   "--set", "tune.space={optim.lr_d: {grid: [0.0002, 0.001, 1.0e+30]}}",
                   "--set", "tune.num_samples=1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Registered ganflow-ring8 version 1" in proc.stdout

    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{workspace / '.ganflow' / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.get_experiment_by_name("ganflow-ring8").experiment_id
    parent = client.search_runs([exp], "tags.`ganflow.kind` = 'search'")
    assert len(parent) == 1
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent[0].info.run_id}'")
    assert len(children) == 3
    failed = [c for c in children if c.info.status == "FAILED"]
    assert len(failed) == 1 and "diverged" in failed[0].data.tags["ganflow.failure"]
    trials = json.loads(open(mlflow.artifacts.download_artifacts(
        run_id=parent[0].info.run_id, artifact_path="trials.json")).read())
    assert sorted(t["status"] for t in trials) == ["error", "ok", "ok"]
    # The registered version is the best successful trial, evaluated again on the holdout.
    mv = client.get_model_version("ganflow-ring8", "1")
    assert mv.run_id in {c.info.run_id for c in children if c.info.status == "FINISHED"}
    assert "eval/reverse_kl" in client.get_run(mv.run_id).data.metrics
