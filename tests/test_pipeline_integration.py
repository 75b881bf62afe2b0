"""The real pipeline on tiny settings: real DVC (tmp git repo), real Ray (2 workers), real MLflow
(SQLite in the tmp dir), real Prefect (ephemeral API). Then load the registered model elsewhere."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conftest import ganflow

pytestmark = pytest.mark.integration

TINY = ["--set", "train.epochs=2", "--set", "classifier.epochs=2", "--set", "eval.num_samples=200",
        "--set", "train.checkpoint_every=1", "--set", "train.num_workers=2", "--set", "train.cpus_per_worker=1",
        "--set", "train.repeat=2"]


def test_pipeline_end_to_end_registers_a_loadable_generator(fresh_workspace):
    workspace = fresh_workspace  # a first run: Prefect migrates its database
    original = (workspace / "params.yaml").read_bytes()
    proc = ganflow(workspace, "pipeline", *TINY)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Registered ganflow-digits version 1: models:/ganflow-digits/1" in proc.stdout
    assert "promotion: promoted" in proc.stdout  # the first valid version becomes champion
    retention = "retention (keep_versions=5, keep_runs=5, aliased versions always): "  # the run's last step
    assert retention + "removed nothing" in proc.stdout
    assert "epoch 2/2" in proc.stdout + proc.stderr  # rank-0 progress reached the driver
    # A plain line with the ETA (not a terminal), and after the first epoch the whole run's estimate.
    assert "epoch 1/2 elapsed " in proc.stdout + proc.stderr and " ETA " in proc.stdout + proc.stderr
    assert "estimate: about " in proc.stdout + proc.stderr
    assert "Add type hints" not in proc.stdout + proc.stderr  # the pyfunc is typed: MLflow has nothing to ask
    assert "\x1b[" not in proc.stdout + proc.stderr  # not a terminal: no colour codes (Ray's worker prefixes)
    assert "Use `dvc push`" not in proc.stdout  # ganflow pushed: DVC's advice to is not repeated

    # DVC versioned the data and pushed it to the local remote under the run dir.
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", "classifier"}
    # --set is this run's alone (issue 16): DVC saw it through params.run.yaml; params.yaml is untouched.
    assert lock["stages"]["classifier"]["params"]["params.run.yaml"]["classifier"]["epochs"] == 2
    assert (workspace / "params.yaml").read_bytes() == original
    manifest = json.loads((workspace / "data/processed/manifest.json").read_text())
    assert manifest["counts"] == {"train": 1259, "val": 179, "holdout": 359}
    assert any((workspace / ".ganflow" / "dvc-remote").rglob("*")), "dvc push wrote nothing"

    summary = json.loads((workspace / ".ganflow" / "last_pipeline.json").read_text())
    assert summary["epochs"] == 2 and summary["version"] == "1"
    assert 0 < summary["metrics"]["fd_real_baseline"] < summary["metrics"]["fd"]

    # The registered version, in a new process: a generator that makes 1x8x8 images in [-1, 1].
    out = workspace / "s.npy"
    proc = ganflow(workspace, "sample", "--model", "models:/ganflow-digits/1", "-n", "16", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    arr = np.load(out)
    assert arr.shape == (16, 1, 8, 8) and arr.min() >= -1 and arr.max() <= 1 and arr.std() > 0

    # MLflow has the run with per-epoch metrics, pictures and lineage tags.
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{workspace / '.ganflow' / 'mlflow.db'}")
    client = MlflowClient()
    mv = client.get_model_version("ganflow-digits", "1")
    assert mv.tags["data_version"] == summary["data_version"]
    # Its model card: data and version, recipe, scores beside the real-vs-real baseline, samples, promotion.
    assert summary["data_version"] in mv.description and "images-ns-r1" in mv.description
    assert "x the real-vs-real" in mv.description and "images/samples.png" in mv.description
    assert mv.description.rstrip().splitlines()[-1].startswith("**Promotion**") and "PROMOTED" in mv.description
    assert "ganflow sample --model models:/ganflow-digits@champion" in client.get_registered_model("ganflow-digits").description
    run = client.get_run(mv.run_id)
    assert run.info.status == "FINISHED"
    assert {"ganflow.data_version", "ganflow.git_sha", "ganflow.config_hash"} <= set(run.data.tags)
    assert json.loads(run.data.tags["ganflow.overrides"]) == TINY[1::2] and run.data.params["train.epochs"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss_d")] == [0, 1]
    # train.repeat=2: each epoch passes twice over the 1,259 images, 2 x 39 batches of 16 on each worker.
    assert [m.value for m in client.get_metric_history(run.info.run_id, "steps_g")] == [78.0, 78.0]
    images = {a.path for a in client.list_artifacts(run.info.run_id, "images")}
    assert {"images/samples.png", "images/training_curves.png"} <= images
    # A sample grid at each checkpoint (every epoch here), stepped by epochs completed, for MLflow's image view.
    grids = {p.split("+step+")[1].split("+")[0] for p in images if p.startswith("images/training_samples+step+")
             and p.endswith(".png")}
    assert grids == {"1", "2"}, images
    # Labelled images train class-conditional by default (the recipe's model.conditional: auto): raw
    # latents carry the class id in a last column.
    assert "Class-conditional" in client.get_registered_model("ganflow-digits").description
    pyfunc = mlflow.pyfunc.load_model("models:/ganflow-digits/1")
    z_and_class = np.concatenate([np.zeros((3, 32)), [[0], [3], [9]]], axis=1).astype(np.float32)
    assert pyfunc.predict(z_and_class).shape == (3, 1, 8, 8)
    # It draws (and was trained on fakes of) the training split's class mix, which the holdout keeps too.
    manifest = json.loads((workspace / "data" / "processed" / "manifest.json").read_text())
    shares = pyfunc.unwrap_python_model().generator.class_shares
    assert shares == pytest.approx(manifest["class_histogram"]["train"], abs=1e-3)  # the manifest's are rounded

    # Nothing changed (same data version and config hash): the same command skips training and says so.
    again = ganflow(workspace, "pipeline", *TINY)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "skipping training" in again.stdout + again.stderr
    assert "Unchanged: still ganflow-digits version 1" in again.stdout
    assert retention + "removed nothing" in again.stdout  # a skipped run applies the policy too
    assert len(client.search_model_versions("name='ganflow-digits'")) == 1

    # Without the registered version, the finished Ray run is resumed explicitly, not retrained; killed
    # (os._exit) once it has registered version 2 and before the gate decided...
    client.delete_model_version("ganflow-digits", "1")
    third = ganflow(workspace, "pipeline", *TINY, env={"GANFLOW_CRASH_AT": "registered"})
    assert third.returncode == 97, third.stderr[-4000:]
    assert "Resuming run" in third.stdout + third.stderr  # Prefect routes task prints to its log
    mv2 = client.get_model_version("ganflow-digits", "2")
    assert "promotion.decision" not in mv2.tags
    assert client.get_run(mv2.run_id).info.status == "FINISHED"  # registering ends the resumed MLflow run
    # ...the next run, unchanged, does what it left: version 2 through the gate.
    fourth = ganflow(workspace, "pipeline", *TINY)
    assert fourth.returncode == 0, fourth.stderr[-4000:]
    assert "Unchanged: still ganflow-digits version 2" in fourth.stdout
    assert "version 2 was registered without a promotion decision" in fourth.stdout + fourth.stderr
    assert "promotion: promoted" in fourth.stdout  # version 1, the champion, was deleted above
    assert client.get_model_version("ganflow-digits", "2").tags["promotion.decision"] == "promoted"
    assert retention + "removed 1 Ray session; freed" in fourth.stdout, fourth.stdout[-2500:]  # the first run's Ray logs
    assert json.loads((workspace / ".ganflow" / "last_pipeline.json").read_text())["ray_run"] == summary["ray_run"]


def test_bad_params_give_one_clear_message(workspace):
    before = (workspace / "params.yaml").read_text()
    proc = ganflow(workspace, "pipeline", "--set", "train.epochs=-1", "--set", "loss=nonsense")
    assert proc.returncode == 2
    assert "train.epochs" in proc.stderr and "loss" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert (workspace / "params.yaml").read_text() == before  # refused before writing anything


def test_point_data_with_a_recipe_and_a_diverged_run_never_registered(workspace, receiver):
    # Class-conditional on the mode index: labels travel through Ray and into the registered pyfunc.
    tiny = ["--set", "data.name=ring8", "--set", "data.points=2000", "--set", "loss=wgan-gp",
            "--set", "model.conditional=true", "--set", "train.epochs=2", "--set", "eval.num_samples=500",
            "--set", "train.num_workers=1"]
    proc = ganflow(workspace, "pipeline", *tiny)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Registered ganflow-ring8 version 1" in proc.stdout
    assert "adam lr_g=0.0001 lr_d=0.0001 betas=(0.0, 0.9) n_critic=5" in proc.stdout + proc.stderr
    metrics = json.loads((workspace / ".ganflow" / "last_pipeline.json").read_text())["metrics"]
    assert metrics["num_modes"] == 8 and 0 <= metrics["high_quality"] <= 1
    out = workspace / "pts.npy"
    assert ganflow(workspace, "sample", "--model", "models:/ganflow-ring8/1", "-n", "7", "--out", str(out)).returncode == 0
    assert np.load(out).shape == (7, 2)
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workspace / '.ganflow' / 'mlflow.db'}")
    z_dim = 2  # the points recipe's latent (gan_core/recipes.py)
    z_and_class = np.concatenate([np.zeros((3, z_dim)), [[0], [3], [7]]], axis=1).astype(np.float32)
    assert mlflow.pyfunc.load_model("models:/ganflow-ring8/1").predict(z_and_class).shape == (3, 2)

    # Absurd learning rates blow up: the run stops, is recorded FAILED with its reason, never registered.
    hook = f"http://alerts:s3cret-t0ken@127.0.0.1:{receiver.port}/services/T000/B000/s3cret-path?token=s3cret-t0ken"
    bad = ganflow(workspace, "pipeline", *tiny, "--set", "optim.lr_d=1e30", "--set", "optim.lr_g=1e30",
                  env={"GANFLOW_ALERT_WEBHOOK": hook})
    assert bad.returncode == 1
    assert "diverged: NaN/Inf" in bad.stderr
    # ...and whoever watches the runs hears it, from the stage that failed (issue 16); the URL's secrets (user
    # info, query, a Slack-style path) never print, nor reach the alert's body or any file of the run dir
    # (MLflow's and Prefect's databases, logs) (issue 25).
    [alert] = receiver.bodies
    assert alert.pop("path") == "/services/T000/B000/s3cret-path?token=s3cret-t0ken" and alert.pop("auth")
    assert (alert["event"], alert["stage"]) == ("run_failed", "train") and "diverged" in alert["reason"]
    assert f"sent to http://alerts:***@127.0.0.1:{receiver.port}/***?token=***" in bad.stdout + bad.stderr
    assert "s3cret" not in bad.stdout + bad.stderr + json.dumps(alert)
    assert not [f for f in (workspace / ".ganflow").rglob("*") if f.is_file() and b"s3cret" in f.read_bytes()]
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    assert [str(v.version) for v in client.search_model_versions("name='ganflow-ring8'")] == ["1"]
    failed = client.search_runs([client.get_experiment_by_name("ganflow-ring8").experiment_id],
                                "attributes.status = 'FAILED'")
    assert len(failed) == 1 and "diverged" in failed[0].data.tags["ganflow.failure"]


def test_params_yaml_edited_while_a_run_trains_changes_nothing_registered(workspace):
    # One snapshot per run (issue 14): the flow reads params.yaml once; the version it registers (weights,
    # tags, logged params) describes that snapshot even if the file changes mid-run. A second run on the
    # workspace meanwhile is refused (issue 16).
    import subprocess
    import time

    from conftest import BIN, clean_env

    first = ["--set", "data.name=ring8", "--set", "data.points=1000", "--set", "train.epochs=12",
             "--set", "train.batch_size=64", "--set", "eval.num_samples=500", "--set", "eval.every=12"]
    proc = subprocess.Popen([str(BIN / "ganflow"), "pipeline", *first, "--workspace", str(workspace)], cwd=workspace,
                            env=clean_env(workspace / ".ganflow"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    original = (workspace / "params.yaml").read_text()
    lines, edited_at, epochs_after_edit = [], None, 0
    for line in proc.stdout:  # timed on the run's own progress: edit once epoch 1 is reported
        lines.append(line)
        if "[ganflow] epoch " in line:
            if edited_at is None:
                raw = yaml.safe_load((workspace / "params.yaml").read_text())
                raw["train"]["epochs"], raw["model"]["width"], raw["loss"] = 3, 8, "hinge"
                (workspace / "params.yaml").write_text(yaml.safe_dump(raw))
                edited_at = time.time()
                # A second run on the same workspace meanwhile refuses at once, with one line (issue 16).
                second = ganflow(workspace, "pipeline", timeout=120)
                assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
                assert "another ganflow run is using workspace" in second.stderr and "Traceback" not in second.stderr
                assert "ganflow pipeline, pid" in second.stderr
            else:
                epochs_after_edit += 1
    assert proc.wait(timeout=900) == 0, "".join(lines)[-4000:]
    assert edited_at is not None and epochs_after_edit > 0, "the edit did not land while the run trained"
    assert "width: 8" in (workspace / "params.yaml").read_text() and "width: 8" not in original

    summary = json.loads((workspace / ".ganflow" / "last_pipeline.json").read_text())
    assert summary["epochs"] == 12
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows.registry.versions import VersionTags

    mlflow.set_tracking_uri(f"sqlite:///{workspace / '.ganflow' / 'mlflow.db'}")
    client = MlflowClient()
    mv = client.get_model_version("ganflow-ring8", summary["version"])
    assert mv.creation_timestamp / 1000 > edited_at  # registered after the edit...
    run = client.get_run(mv.run_id)
    assert (run.data.params["train.epochs"], run.data.params["model.width"], run.data.params["loss.name"]) == \
        ("12", "400", "non-saturating")  # ...from the snapshot: the points recipe's width, NS loss
    identity = json.loads((workspace / ".ganflow" / "ray_results" / summary["ray_run"] / "ganflow_run.json").read_text())
    assert VersionTags.read(mv.tags).config_hash == run.data.tags["ganflow.config_hash"] == identity["training_hash"]
    G = mlflow.pyfunc.load_model(f"models:/ganflow-ring8/{summary['version']}")
    assert G.predict(np.zeros((2, 2), dtype=np.float32)).shape == (2, 2)
    from flows.registry.versions import load_generator

    widths = {p.shape[0] for n, p in load_generator(f"models:/ganflow-ring8/{summary['version']}").named_parameters()
              if n.endswith("weight") and p.dim() == 2}
    assert 400 in widths and 8 not in widths  # the weights are the snapshot's model


def test_continue_extends_a_run_bit_for_bit_and_init_from_starts_from_a_version(workspace):
    # 2 epochs, then --continue to 4, equal a fresh 4-epoch run bit for bit under a constant lr.
    import torch

    from flows.env import RunPaths
    from flows.run.identity import last_state

    tiny = ["--set", "data.name=ring8", "--set", "data.points=1000", "--set", "train.epochs=2",
            "--set", "optim.lr_decay_start=1", "--set", "eval.num_samples=300", "--set", "train.checkpoint_every=1"]
    first = ganflow(workspace, "pipeline", *tiny)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    run2 = json.loads((workspace / ".ganflow" / "last_pipeline.json").read_text())["ray_run"]

    # (`--continue` without more epochs is refused: tests/test_run_identity.py)
    more = ganflow(workspace, "pipeline", "--continue", *tiny, "--set", "train.epochs=4")  # the last --set wins
    assert more.returncode == 0, more.stdout[-3000:] + more.stderr[-3000:]
    assert f"Continuing run {run2} (finished after 2 epochs) to 4 epochs" in more.stdout + more.stderr
    continued = json.loads((workspace / ".ganflow" / "last_pipeline.json").read_text())
    assert continued["epochs"] == 4 and continued["version"] == "2" and continued["ray_run"] != run2

    fresh = ganflow(workspace, "pipeline", "--new-run", *tiny, "--set", "train.epochs=4")  # 4 epochs from scratch
    assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-3000:]
    scratch = json.loads((workspace / ".ganflow" / "last_pipeline.json").read_text())
    assert scratch["version"] == "3" and scratch["resumed_from_epoch"] == 0

    paths = RunPaths(workspace, workspace / ".ganflow")
    a, b = last_state(paths, continued["ray_run"]), last_state(paths, scratch["ray_run"])
    assert a["epoch"] == b["epoch"] == 3
    for part in ("generator", "discriminator"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert [h["loss_d"] for h in a["history"]] == [h["loss_d"] for h in b["history"]]
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{workspace / '.ganflow' / 'mlflow.db'}")
    run = MlflowClient().get_run(continued["mlflow_run_id"])
    assert run.data.tags["ganflow.continued_from"] == run2

    # Every version stores its training state; restored into fresh modules, it is exactly what was stored.
    from flows.registry.versions import load_training_state
    from gan_core.checkpoint import restore
    from gan_core.config import ModelConfig
    from gan_core.ema import EMA
    from gan_core.models import build_discriminator, build_generator
    from gan_core.steps import build_optimizers

    stored = load_training_state("models:/ganflow-ring8/1")
    on_disk = last_state(paths, run2)
    assert all(torch.equal(stored["discriminator"][k], v) for k, v in on_disk["discriminator"].items())
    cfg = ModelConfig.model_validate(stored["model"])
    G, D = build_generator(cfg, tuple(stored["data_shape"])), build_discriminator(cfg, tuple(stored["data_shape"]))
    from gan_core.config import ResolvedOptim

    opt_g, opt_d = build_optimizers(G, D, ResolvedOptim("adam", 1e-3, 1e-3, (0.0, 0.99), 1))
    ema = EMA(G, 0.999) if stored.get("ema") is not None else None
    restore(stored, G, D, opt_g, opt_d, ema)
    for live, saved in ((G, "generator"), (D, "discriminator")):
        assert all(torch.equal(v, stored[saved][k]) for k, v in live.state_dict().items())
    for opt, saved in ((opt_g, "opt_g"), (opt_d, "opt_d")):
        for k, slot in opt.state_dict()["state"].items():
            assert all(torch.equal(v, stored[saved]["state"][k][n]) for n, v in slot.items() if torch.is_tensor(v))

    # --init-from: a new run from a registered version's states, tagged with its parent...
    seeded = ganflow(workspace, "pipeline", "--init-from", "models:/ganflow-ring8@champion", *tiny,
                     "--set", "train.epochs=1")
    assert seeded.returncode == 0, seeded.stdout[-3000:] + seeded.stderr[-3000:]
    champion = MlflowClient().get_model_version_by_alias("ganflow-ring8", "champion").version
    assert f"Starting from ganflow-ring8/{champion}'s G, D and optimiser states" in seeded.stdout + seeded.stderr
    summary = json.loads((workspace / ".ganflow" / "last_pipeline.json").read_text())
    tags = MlflowClient().get_run(summary["mlflow_run_id"]).data.tags
    assert tags["ganflow.init_from"] == f"ganflow-ring8/{champion}" and tags["ganflow.transfer"] == "no"
    # ...and another architecture is refused, naming what differs.
    other = ganflow(workspace, "pipeline", "--init-from", "models:/ganflow-ring8/1", *tiny, "--set", "model.width=16")
    assert other.returncode == 2 and "model.width: 400 there, 16 here" in other.stderr, other.stderr[-2000:]
