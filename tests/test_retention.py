"""Retention (issue 16): a daily schedule's versions and training runs stay bounded on disk, the champion
and the newest run untouched. Real MLflow SQLite store and registry, real run records; the training runs'
checkpoints are files of known size instead of trainings (tests/test_pipeline_integration.py checks the
pipeline ends with the same step)."""
from __future__ import annotations

import json
import os

import torch

from test_promote import empty_store, open_store, ring8_params, run_cli, tiny_state  # noqa: F401 - a fixture

CHECKPOINT_BYTES = 400_000  # per run: more than a version's weights and the store's growth per run together
MODEL = "ganflow-digits"  # the workspace's params.yaml names this model and experiment


def daily_run(paths, i: int, status: str = "finished", register: bool = True) -> tuple[str, str | None]:
    """One scheduled run as the pipeline leaves it: run record, a checkpoint, pictures, an MLflow run and
    (register) a version tagged with the run. Returns (run name, version)."""
    from mlflow.tracking import MlflowClient

    from flows.conventions import STATE_FILE, checkpoint_dir_name
    from flows.registry import tracking, versions
    from flows.run.identity import RunIdentity, record_identity

    p = ring8_params(MODEL)
    client = MlflowClient()
    name = f"digits-{i:010d}"
    run_id = client.create_run(tracking.experiment_id(p, paths), run_name=name).info.run_id
    stamp = 1_700_000_000 + 86_400 * i  # one a day: the record's creation time orders the runs
    record_identity(RunIdentity(name, "hash", "dv-1", mlflow_run_id=run_id, status=status, created=stamp), paths)
    folder = paths.ray_results / name
    (folder / checkpoint_dir_name(1)).mkdir()
    torch.save({"epoch": 1, "pad": torch.zeros(CHECKPOINT_BYTES // 4)}, folder / checkpoint_dir_name(1) / STATE_FILE)
    (folder / "checkpoint_manager_snapshot.json").write_text(
        '{"latest_checkpoint_result": {"checkpoint_dir_name": "%s"}}' % checkpoint_dir_name(1))
    (paths.home / "runs" / name).mkdir(parents=True)
    (paths.home / "runs" / name / "samples.png").write_bytes(b"\x89PNG" + bytes(20_000))
    touched = 1_800_000_000 - 86_400 * i  # files touched in the opposite order (a copy, a restore): no matter
    os.utime(folder / "ganflow_run.json", (touched, touched))
    if not register:
        return name, None
    tags = versions.VersionTags(data_version="dv-1", config_hash="hash", git_sha="none", ray_run=name,
                                evaluator_version="e", primary_metric="reverse_kl", scores={"reverse_kl": "0.1"})
    version = versions.register(run_id, p, tiny_state(), tags)
    client.set_registered_model_alias(MODEL, "challenger", version)  # as the gate leaves each new version
    return name, version


def files(paths, under: str = "") -> dict[str, int]:
    return {str(f.relative_to(paths.home)): f.stat().st_size for f in (paths.home / under).rglob("*") if f.is_file()}


def disk(paths) -> int:
    return sum(files(paths).values())


def test_many_daily_runs_stay_bounded_and_the_champion_and_newest_run_survive(fresh_workspace, empty_store,
                                                                               monkeypatch, one_thread):
    workspace = fresh_workspace  # no flow runs here: the run dir holds only what the days leave
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    from flows import params as params_mod
    from flows.registry.versions import load_generator
    from flows.retention import prune
    from flows.run.identity import last_state

    paths = open_store(workspace, workspace / ".ganflow", empty_store, monkeypatch)
    params_mod.write_overrides(workspace, ["retention.keep_versions=2", "retention.keep_runs=2"])
    params = params_mod.load(workspace)
    client = MlflowClient()

    champion_run, _ = daily_run(paths, 1)
    client.set_registered_model_alias(MODEL, "champion", "1")  # never beaten from here on
    champion_weights = {k: v.clone() for k, v in load_generator(f"models:/{MODEL}@champion").state_dict().items()}
    killed, _ = daily_run(paths, 2, status="running", register=False)  # a killed run: the same command resumes it
    from flows.run.identity import RunIdentity, record_identity

    other = RunIdentity("ring8-0000000000", "hash", "dv-1", status="finished")  # another data set's: its own policy
    record_identity(other, paths)
    sizes, names, made = [], {}, {}
    for day in range(3, 8):  # five more days, each a version
        names[day], made[day] = daily_run(paths, day)
        prune(paths, params)
        sizes.append(disk(paths))

    # Bounded: from the policy's steady state on, each day adds a run and removes one (the store's rows aside).
    assert max(sizes[2:]) - min(sizes[2:]) < CHECKPOINT_BYTES / 4, sizes
    store = paths.mlflow_db.stat().st_size
    assert sizes[-1] - store < 6 * CHECKPOINT_BYTES, sizes  # 4 runs, 3 versions kept; all 7 would be ~10

    # Kept: the champion (alias) and the newest two versions; the runs behind them and the unfinished run.
    def registered() -> set[str]:
        return {str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'")}

    assert registered() == {"1", made[6], made[7]}
    assert sorted(p.name for p in paths.ray_results.iterdir()) == sorted([champion_run, killed, names[6], names[7],
                                                                          other.name])
    assert sorted(p.name for p in (paths.home / "runs").iterdir()) == sorted([champion_run, killed, names[6], names[7]])
    champion = load_generator(f"models:/{MODEL}@champion").state_dict()
    assert all(torch.equal(champion[k], v) for k, v in champion_weights.items())
    assert last_state(paths, names[7])["epoch"] == 1  # the newest run resumes from its checkpoint
    # A deleted version's MLflow run is deleted too, and the weights of both are off the disk.
    gone = client.search_runs([client.get_experiment_by_name(MODEL).experiment_id],
                              f"attributes.run_name = '{names[3]}'", run_view_type=ViewType.ALL)
    assert [r.info.lifecycle_stage for r in gone] == ["deleted"]
    assert len(list((paths.mlflow_artifacts / "models").iterdir())) == 3

    # The command: --dry-run says what would go and removes nothing; then it removes exactly that.
    _, made[8] = daily_run(paths, 8)
    before, listed = disk(paths), {**files(paths, "ray_results"), **files(paths, "runs"), **files(paths, "mlartifacts")}
    code, out, err = run_cli("prune", "--dry-run", "--workspace", str(workspace))
    assert code == 0, out + err
    assert f"version {MODEL}/{made[6]}:" in out and f"training run {names[6]}:" in out
    assert "would remove 1 version, 1 training run, 1 MLflow run; would free" in out
    assert {**files(paths, "ray_results"), **files(paths, "runs"), **files(paths, "mlartifacts")} == listed
    code, out, err = run_cli("prune", "--workspace", str(workspace))
    assert code == 0 and "removed 1 version, 1 training run, 1 MLflow run; freed" in out, out + err
    freed = float(out.split("; freed ")[1].split(" MB")[0]) * 1e6
    assert freed >= CHECKPOINT_BYTES and before - disk(paths) >= CHECKPOINT_BYTES
    assert registered() == {"1", made[7], made[8]}


def test_a_failing_policy_is_a_warning_never_a_failed_run(monkeypatch):
    import logging

    from flows import pipeline, retention

    def broken(paths, params):
        raise PermissionError("checkpoint folder is read-only")

    # The record itself, from a handler of our own on the logger: in the full suite a handler made while
    # another test captured stderr kept writing to that test's buffer, so stderr showed nothing.
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("ganflow").addHandler(handler)
    monkeypatch.setattr(retention, "prune", broken)
    try:
        result = pipeline.retention_task.fn(None, None)  # the task's body, as the flow runs it
    finally:
        logging.getLogger("ganflow").removeHandler(handler)
    assert result == {"summary": "retention failed: PermissionError: checkpoint folder is read-only", "error": True}
    [record] = [r for r in records if "retention failed" in r.getMessage()]
    assert record.levelname == "WARNING" and "the run itself succeeded" in record.getMessage()


def test_the_champions_a_rollback_returns_to_are_kept(workspace, empty_store, monkeypatch, one_thread):
    from mlflow.tracking import MlflowClient

    from flows import params as params_mod
    from flows.registry import history
    from flows.retention import prune

    paths = open_store(workspace, workspace / ".ganflow", empty_store, monkeypatch)
    params_mod.write_overrides(workspace, ["retention.keep_versions=2", "retention.keep_runs=2"])
    client = MlflowClient()
    made = [daily_run(paths, day)[1] for day in range(1, 6)]
    for previous, version in ((None, made[0]), (made[0], made[1])):  # as the gate records promotions
        client.set_registered_model_alias(MODEL, "champion", version)
        history.record(client, MODEL, history.Change.now("promoted", version, previous, "better"))
    prune(paths, params_mod.load(workspace))
    # The newest two, the champion, and the one before it (where `promote --rollback` goes): only 3 is deleted.
    assert {str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'")} == \
        {made[0], made[1], made[3], made[4]}
    client.delete_model_version(MODEL, made[0])  # by hand: the history still names it
    prune(paths, params_mod.load(workspace))
    assert {str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'")} == {made[1], made[3], made[4]}


def test_runs_are_ordered_by_the_creation_time_their_record_keeps_not_by_file_times(tmp_path):
    from flows.env import RunPaths
    from flows.retention import _run_records
    from flows.run.identity import IDENTITY_FILE, RunIdentity, record_identity, settle

    paths = RunPaths(tmp_path, tmp_path / ".ganflow")
    first, second = (RunIdentity(f"digits-{i:010d}", "hash", "dv-1", status="running") for i in (1, 2))
    record_identity(first, paths)
    record_identity(second, paths)
    assert first.created <= second.created
    settle(first, paths, "finished")  # a later rewrite keeps the creation time...
    os.utime(paths.ray_results / first.name / IDENTITY_FILE, (2e9, 2e9))  # ...and so does a touched file
    assert [r["name"] for r in _run_records(paths, "digits")] == [second.name, first.name]

    # A record written before creation times were kept: its mtime, fixed as its creation time on the
    # first rewrite (a status change would move the mtime).
    old = paths.ray_results / "digits-0000000003"
    old.mkdir()
    (old / IDENTITY_FILE).write_text('{"name": "digits-0000000003", "training_hash": "h", "data_version": "d"}')
    os.utime(old / IDENTITY_FILE, (1e9, 1e9))
    assert [r["name"] for r in _run_records(paths, "digits")][-1] == old.name
    settle(RunIdentity(old.name, "h", "d"), paths, "abandoned")
    assert [r["name"] for r in _run_records(paths, "digits")] == [second.name, first.name, old.name]
    assert json.loads((old / IDENTITY_FILE).read_text())["created"] == 1e9
