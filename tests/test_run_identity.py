"""Run identity without Ray: same settings resume, an unfinished run of other settings is refused
(naming what changed) unless --new-run, and finished/diverged runs or Tune trials never block."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from flows import params as params_mod
from flows.conventions import STATE_FILE, checkpoint_dir_name
from flows.env import RunPaths
from flows.errors import UserError
from flows.run.identity import RunIdentity, best_kept_state, record_identity, run_identity

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


MISSING = object()  # a report without the selection metric (eval.every: 0)


def _kept(paths: RunPaths, name: str, scores: dict[int, object]) -> None:
    """Run `name`'s kept checkpoints as Ray leaves them: epoch_NNNNN/state.pt for each epoch index, and the
    snapshot listing them in `scores`' order with the score each was reported with. Ray writes the snapshot
    with pydantic, which writes an inf or NaN score as null."""
    run = paths.ray_results / name
    results = []
    for index, score in scores.items():
        folder = run / checkpoint_dir_name(index)
        folder.mkdir(parents=True)
        torch.save({"epoch": index, "history": [{"epoch": i} for i in range(index + 1)]}, folder / STATE_FILE)
        metrics = {"epoch": index, **({} if score is MISSING else {"score": score})}
        results.append({"version": 0, "checkpoint_dir_name": folder.name, "metrics": metrics})
    latest = max(results, key=lambda r: r["metrics"]["epoch"]) if results else None
    (run / "checkpoint_manager_snapshot.json").write_text(
        json.dumps({"checkpoint_results": results, "latest_checkpoint_result": latest}))


def test_finish_takes_the_kept_checkpoint_with_the_lowest_probe_score(setup):
    _, paths = setup
    # Before the first probe, and once diverged, a report's score is +inf: null in Ray's snapshot.
    _kept(paths, "ring8-a", {9: 0.5, 3: 0.25, 11: None, 5: 0.75, 7: float("inf")})
    state, done, score = best_kept_state(paths, "ring8-a")
    assert (state["epoch"], done, score) == (3, 4, 0.25)
    assert [h["epoch"] for h in state["history"]] == [0, 1, 2, 3]  # that checkpoint's own state


@pytest.mark.parametrize("scores", [
    {11: None, 3: None, 9: None},                     # killed before its first probe (inf: null)
    {11: MISSING, 3: MISSING, 9: MISSING},            # no probe at all (eval.every: 0)
    {9: float("inf"), 11: float("nan"), 3: MISSING},  # a hand-written snapshot's Infinity / NaN
])
def test_finish_without_a_finite_score_takes_the_latest_kept_checkpoint(setup, scores):
    _, paths = setup
    _kept(paths, "ring8-b", scores)
    state, done, score = best_kept_state(paths, "ring8-b")
    assert (state["epoch"], done, score) == (11, 12, None)


def test_finish_without_a_kept_checkpoint_is_a_user_error(setup):
    _, paths = setup
    with pytest.raises(UserError, match="no run of these settings was started"):  # other --set values, say
        best_kept_state(paths, "ring8-c")
    (paths.ray_results / "ring8-c").mkdir(parents=True)  # killed before Ray wrote a snapshot
    with pytest.raises(UserError, match="run ring8-c has no kept checkpoint"):
        best_kept_state(paths, "ring8-c")
    _kept(paths, "ring8-c", {})  # a snapshot that lists none
    with pytest.raises(UserError, match="run ring8-c has no kept checkpoint"):
        best_kept_state(paths, "ring8-c")
