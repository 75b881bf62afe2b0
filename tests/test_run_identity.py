"""Run identity without Ray: same settings resume, an unfinished run of other settings is refused
(naming what changed) unless --new-run, and finished/diverged runs or Tune trials never block."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flows import params as params_mod
from flows.env import RunPaths
from flows.errors import UserError
from flows.run.identity import RunIdentity, record_identity, run_identity

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def setup(tmp_path: Path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path, RunPaths(tmp_path, tmp_path / ".ganflow")


def _started(paths: RunPaths, identity: RunIdentity, status: str = "running", checkpoint: bool = True,
             trial: bool = False) -> None:
    identity.status, identity.trial = status, trial
    record_identity(identity, paths)
    if checkpoint:  # what Ray writes once a checkpoint is persisted
        snap = {"latest_checkpoint_result": {"checkpoint_dir_name": "epoch_00004"}}
        (paths.ray_results / identity.name / "checkpoint_manager_snapshot.json").write_text(json.dumps(snap))


def _params(ws: Path, *sets: str):
    return params_mod.load(ws, list(sets))


def test_same_settings_resume_and_other_settings_are_refused_naming_the_change(setup):
    ws, paths = setup
    first = run_identity(_params(ws), "v1", paths, guard_interrupted=True)
    _started(paths, first)
    assert run_identity(_params(ws), "v1", paths, guard_interrupted=True).name == first.name  # resume
    with pytest.raises(UserError) as err:
        run_identity(_params(ws, "optim.lr_g=0.001"), "v1", paths, guard_interrupted=True)
    msg = str(err.value)
    assert first.name in msg and "after epoch 5" in msg and "optim.lr_g" in msg and "--new-run" in msg
    # --new-run: allowed, and the old run stops blocking (abandoned)
    fresh = run_identity(_params(ws, "optim.lr_g=0.001"), "v1", paths, new_run=True, guard_interrupted=True)
    assert fresh.name != first.name
    assert json.loads((paths.ray_results / first.name / "ganflow_run.json").read_text())["status"] == "abandoned"
    run_identity(_params(ws, "optim.lr_g=0.0005"), "v1", paths, guard_interrupted=True)


@pytest.mark.parametrize("status, checkpoint, trial, data", [
    ("finished", True, False, "v1"), ("diverged", True, False, "v1"),  # done: nothing to resume
    ("running", False, False, "v1"),  # killed before its first checkpoint: nothing to lose
    ("running", True, True, "v1"),    # a Tune trial ASHA stopped
    ("running", True, False, "v0"),   # other data: a scheduled retrain on new data goes ahead
])
def test_what_does_not_block(setup, status, checkpoint, trial, data):
    ws, paths = setup
    _started(paths, run_identity(_params(ws), data, paths), status, checkpoint, trial)
    run_identity(_params(ws, "optim.lr_g=0.001"), "v1", paths, guard_interrupted=True)


def test_a_failed_run_blocks_like_a_killed_one(setup):
    ws, paths = setup
    _started(paths, run_identity(_params(ws), "v1", paths), "failed")
    with pytest.raises(UserError, match="--new-run"):
        run_identity(_params(ws, "optim.lr_g=0.001"), "v1", paths, guard_interrupted=True)


def test_a_killed_one_off_run_resumes_with_its_own_set_values_and_never_blocks_the_schedule(setup):
    ws, paths = setup
    sets = ["optim.lr_g=0.001", "train.epochs=7"]
    one_off = run_identity(_params(ws, *sets), "v1", paths, guard_interrupted=True, overrides=sets)
    _started(paths, one_off)  # killed after a checkpoint
    assert json.loads((paths.ray_results / one_off.name / "ganflow_run.json").read_text())["overrides"] == sets
    # The same command (the same --set values) is the same run: it resumes.
    assert run_identity(_params(ws, *sets), "v1", paths, guard_interrupted=True, overrides=sets).name == one_off.name
    # Another one-off is refused, saying how to resume the killed one...
    with pytest.raises(UserError) as err:
        run_identity(_params(ws, "optim.lr_g=0.002"), "v1", paths, guard_interrupted=True,
                     overrides=["optim.lr_g=0.002"])
    assert "--set optim.lr_g=0.001 --set train.epochs=7" in str(err.value) and "--new-run" in str(err.value)
    # ...but params.yaml as written (a scheduled run) goes ahead and leaves the one-off resumable.
    scheduled = run_identity(_params(ws), "v1", paths, guard_interrupted=True)
    assert scheduled.name != one_off.name
    assert json.loads((paths.ray_results / one_off.name / "ganflow_run.json").read_text())["status"] == "running"


def test_continue_extends_only_a_finished_run_with_fewer_epochs(setup):
    # The refusal `ganflow pipeline --continue` prints when train.epochs is not raised (moved here from
    # the integration test, where it cost a pipeline start).
    ws, paths = setup
    done = run_identity(_params(ws, "train.epochs=5"), "v1", paths, guard_interrupted=True)
    _started(paths, done, status="finished")  # its checkpoint: 5 epochs done
    with pytest.raises(UserError, match="--continue: no finished run of these settings .* fewer than "
                                        r"train.epochs=5 epochs to extend \(finished runs of this data: .*5 epochs"):
        run_identity(_params(ws, "train.epochs=5"), "v1", paths, guard_interrupted=True, extend=True)
    more = run_identity(_params(ws, "train.epochs=8"), "v1", paths, guard_interrupted=True, extend=True)
    assert more.continued_from == done.name and more.name != done.name
