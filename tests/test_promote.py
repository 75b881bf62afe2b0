"""The promotion gate against a real MLflow SQLite store: tiny generators registered through
flows.registry.register() without training, their version tags set by hand."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


# Heavy imports (torch, mlflow) stay inside functions: the concurrency test's spawned workers
# import this module, and each import is seconds on a busy machine.


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An initialised (migrated) MLflow SQLite file: copying it saves each test the migrations.
    One per session, shared by the test modules that import this fixture."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.getbasetemp() / "mlflow-template.db"
    if not db.exists():
        MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


def run_cli(*args: str) -> tuple[int, str, str]:
    """`ganflow ARGS` through flows.cli.main in this process (the subprocess start costs seconds):
    (exit code, stdout, stderr). The variables env.configure() sets are put back afterwards."""
    import contextlib
    import io
    import sys

    from flows import cli

    saved_env, saved_argv = dict(os.environ), sys.argv
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["ganflow", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return code, out.getvalue(), err.getvalue()


def open_store(workspace: Path, home: Path, template: Path, monkeypatch):
    """Point MLflow (this process and any child) at a fresh store in `home`; returns RunPaths.
    Both the variable and MLflow's global URI are put back when the test ends."""
    from mlflow.tracking._tracking_service import utils

    from flows.env import RunPaths

    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, home / "mlflow.db")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("GANFLOW_HOME", str(home))
    monkeypatch.setattr(utils, "_tracking_uri", uri)  # what mlflow.set_tracking_uri sets, undone after
    return RunPaths(workspace, home)


@pytest.fixture
def store(tmp_path, empty_store, monkeypatch):
    return open_store(tmp_path / "ws", tmp_path / "home", empty_store, monkeypatch)


def ring8_params(name: str = "ganflow-ring8"):
    from flows.params import Params

    return Params.model_validate({"data": {"name": "ring8", "points": 500},
                                  "registry": {"model_name": name, "experiment": name}})


def tiny_state(G=None, width: int = 8, depth: int = 2) -> dict:
    """A generator bundle as the trainer would leave it (no EMA): an MLP on 2-D points."""
    from gan_core.config import ModelConfig
    from gan_core.models import build_generator

    cfg = ModelConfig(arch="mlp", width=width, depth=depth)
    G = G if G is not None else build_generator(cfg, (2,))
    return {"generator": G.state_dict(), "ema": None, "model": cfg.model_dump(), "data_shape": [2]}


def make_version(paths, params, score: float | None, *, status: str = "FINISHED", data_version: str = "dv-1",
                 evaluator: str = "modes-ring8-v1", metric: str = "reverse_kl", state: dict | None = None) -> str:
    """Register a version the way the pipeline's register task does, with hand-set tags."""
    from mlflow.tracking import MlflowClient

    from flows.registry import tracking, versions

    client = MlflowClient()
    run = client.create_run(tracking.experiment_id(params, paths), tags={"ganflow.data_version": data_version})
    scores = {} if score is None else {metric: f"{score:.6g}"}  # as register_task writes it: nan/inf included
    tags = versions.VersionTags(data_version=data_version, config_hash="test", git_sha="none", ray_run="none",
                                evaluator_version=evaluator, primary_metric=metric, scores=scores)
    version = versions.register(run.info.run_id, params, state or tiny_state(), tags)
    if status == "FAILED":
        client.set_tag(run.info.run_id, "ganflow.failure", "diverged: NaN/Inf in loss_d at epoch 2")
    client.set_terminated(run.info.run_id, status)  # register() ends its run FINISHED
    return version


def aliases(name: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    return {k: str(v) for k, v in MlflowClient().get_registered_model(name).aliases.items()}


def vtags(name: str, version: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    return dict(MlflowClient().get_model_version(name, version).tags)


@pytest.fixture
def gate(store, one_thread):
    """A store and a workspace with prepared ring8 data: the holdout and judge the gate measures on."""
    from flows.data import stages

    p = ring8_params()
    p = p.model_copy(update={"eval": p.eval.model_copy(update={"num_samples": 1000})})
    stages.prepare(p, store.workspace)
    stages.train_classifier(p, store.workspace)
    return store, p


def test_better_version_replaces_the_champion_worse_and_equal_are_kept(gate):
    from flows.registry.promote import promote

    store, p = gate
    name = p.model_name
    # What the gate measures decides; each version's own (self-reported) score says the opposite.
    v1 = make_version(store, p, 0.01, state=tiny_state(_collapsed_generator()))
    v2, v3 = (make_version(store, p, 9.0, state=tiny_state(_two_mode_generator())) for _ in range(2))
    v4 = make_version(store, p, 0.0, state=tiny_state(_collapsed_generator()))

    d = promote(name, v1, store, p)
    assert (d.decision, d.champion_before, d.champion_after) == ("promoted", None, v1)
    assert "no champion yet" in d.reason and d.challenger_score == pytest.approx(math.log(8), abs=1e-6)
    assert aliases(name) == {"champion": v1, "challenger": v1}

    d = promote(name, v2, store, p)
    assert (d.decision, d.champion_before, d.champion_after) == ("promoted", v1, v2)
    assert d.challenger_score == pytest.approx(math.log(4), abs=0.05) and d.reevaluated
    assert d.champion_score == pytest.approx(math.log(8), abs=1e-6) and d.metric == "reverse_kl"
    assert "its tag says 9, the champion's 0.01 (not used)" in d.reason and "better beyond the noise" in d.reason
    assert "5 paired draws of 1000 samples (seeds [" in d.reason
    t = vtags(name, v2)
    assert t["promotion.decision"] == "promoted" and t["promotion.champion_version"] == v1
    assert float(t["promotion.challenger_score"]) == pytest.approx(d.challenger_score, rel=1e-6)
    assert t["promotion.metric"] == "reverse_kl" and t["promotion.at"].endswith("Z")
    # The decision's numbers: its draws and their seeds, the paired difference and its bound.
    assert t["promotion.draws"] == "5" and json.loads(t["promotion.seeds"]) == d.seeds and len(set(d.seeds)) == 5
    assert float(t["promotion.difference"]) == pytest.approx(math.log(4) / math.log(8) - 1, abs=0.05)
    assert float(t["promotion.bound"]) < -float(t["promotion.min_effect"]) == -0.02
    assert float(t["reeval.reverse_kl"]) == pytest.approx(d.challenger_score, rel=1e-6) and t["reeval.draws"] == "5"
    assert t["eval.reverse_kl"] == "9"  # the self-reported score is left as it was

    equal = promote(name, v3, store, p)  # the same weights measure the same: a tie is not an improvement
    worse = promote(name, v4, store, p)
    assert (equal.decision, worse.decision) == ("kept", "kept")
    assert "not distinguishable from the champion" in equal.reason and "paired difference +0.00%" in equal.reason
    assert "worse than the champion" in worse.reason
    assert equal.seeds != d.seeds  # fresh seeds per decision: no version can be fitted to a known draw
    assert aliases(name) == {"champion": v2, "challenger": v4}
    assert vtags(name, v4)["promotion.decision"] == "kept"


def test_a_noise_copy_of_the_champion_claiming_half_its_score_is_not_promoted(gate):
    # The attack of issue 16: the champion's tags, a halved score, every weight replaced by noise.
    import torch

    from flows.registry.promote import promote

    store, p = gate
    name = p.model_name
    good = make_version(store, p, 0.7, state=tiny_state(_two_mode_generator()))
    promote(name, good, store, p)
    noise = _two_mode_generator()
    with torch.no_grad():
        for w in noise.parameters():
            w.copy_(torch.randn_like(w) * 3)
    forged = make_version(store, p, 0.35, state=tiny_state(noise))
    d = promote(name, forged, store, p)
    assert d.decision in ("kept", "rejected") and aliases(name)["champion"] == good, d


def test_nan_unloadable_and_failed_versions_are_rejected_never_promoted(gate, capsys):
    import torch

    from flows.registry.promote import promote

    store, p = gate
    name = p.model_name
    nan_G = _two_mode_generator()
    with torch.no_grad():
        next(nan_G.parameters()).fill_(float("nan"))
    nan = make_version(store, p, 0.01, state=tiny_state(nan_G))  # a great claim, NaN samples
    broken = make_version(store, p, 0.01, state=tiny_state(_two_mode_generator()))
    _corrupt_weights(name, broken)
    failed = make_version(store, p, 0.01, status="FAILED", state=tiny_state(_two_mode_generator()))

    d = promote(name, nan, store, p)  # even with no champion at all
    assert (d.decision, d.champion_after) == ("rejected", None) and "not a finite number" in d.reason
    d = promote(name, broken, store, p)
    assert d.decision == "rejected" and "could not be measured" in d.reason
    assert vtags(name, broken)["promotion.decision"] == "rejected"
    assert "REJECTED" in capsys.readouterr().out

    good = make_version(store, p, None, state=tiny_state(_collapsed_generator()))  # no score tag: measured anyway
    assert promote(name, good, store, p).decision == "promoted"
    d = promote(name, failed, store, p)
    assert d.decision == "rejected" and "FAILED" in d.reason and "diverged" in d.reason
    assert aliases(name)["champion"] == good
    assert vtags(name, failed)["promotion.decision"] == "rejected"


def test_a_version_whose_code_changed_after_registration_is_rejected(gate):
    from urllib.parse import urlparse

    from mlflow.tracking import MlflowClient

    from flows.registry.promote import promote

    store, p = gate
    name = p.model_name
    version = make_version(store, p, 0.1, state=tiny_state(_two_mode_generator()))
    folder = Path(urlparse(MlflowClient().get_model_version_download_uri(name, version)).path)
    (folder / "code" / "gan_core" / "sampling.py").write_text("# what serving would run now\n")
    d = promote(name, version, store, p)
    assert (d.decision, d.champion_after) == ("rejected", None)
    assert "its code changed after it was registered (code/gan_core/sampling.py changed)" in d.reason


def _corrupt_weights(name: str, version: str) -> None:
    """Overwrite a registered version's generator.pt in the artifact store with bytes torch cannot load."""
    from urllib.parse import urlparse

    from mlflow.tracking import MlflowClient

    where = MlflowClient().get_model_version_download_uri(name, version)  # the logged model's folder
    (Path(urlparse(where).path) / "artifacts" / "generator.pt").write_bytes(b"not a torch file")


def test_promoting_the_champion_again_is_harmless(gate):
    from flows.registry.promote import promote

    store, p = gate
    name = p.model_name
    v1 = make_version(store, p, 0.4, state=tiny_state(_two_mode_generator()))
    v2 = make_version(store, p, 0.5, state=tiny_state(_collapsed_generator()))
    promote(name, v1, store, p)
    promote(name, v2, store, p)  # kept: now the challenger
    before = vtags(name, v1)
    for _ in range(2):
        again = promote(name, v1, store, p)
        assert (again.decision, again.reason, again.champion_after) == ("kept", "already champion", v1)
    assert vtags(name, v1) == before  # the record of how it became champion stays
    assert aliases(name) == {"champion": v1, "challenger": v2}  # no alias moved


def test_unknown_model_or_version_is_a_user_error(store, one_thread):
    from flows.errors import UserError
    from flows.registry.promote import promote

    p = ring8_params()
    make_version(store, p, 0.4)
    with pytest.raises(UserError, match=r"model 'nope' is not registered.*version '1'"):
        promote("nope", "1", store, p)
    with pytest.raises(UserError, match=r"model 'ganflow-ring8' has no version '7'; its versions: 1"):
        promote(p.model_name, "7", store, p)
    with pytest.raises(UserError, match=r"has no version 'x'"):
        promote(p.model_name, "x", store, p)
    with pytest.raises(UserError, match=r"no prepared data"):  # the gate measures: it needs the holdout
        promote(p.model_name, "1", store, p)


def test_four_concurrent_promotions_end_with_the_best_as_champion(gate):
    import multiprocessing as mp

    from mlflow.tracking import MlflowClient

    from flows.registry.promote import promote

    store, p = gate
    name = p.model_name
    incumbent = make_version(store, p, 0.6, state=tiny_state(_collapsed_generator()))
    promote(name, incumbent, store, p)
    best = make_version(store, p, 0.9, state=tiny_state(_two_mode_generator()))
    others = [make_version(store, p, s, state=tiny_state(_collapsed_generator())) for s in (0.1, 0.2, 0.3)]

    # Four processes, each running flows.registry.promote.promote at once. Not fork: a forked child would share
    # this process's SQLite connections. The fork server imports MLflow once and forks clean workers.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["flows.registry.promote", "mlflow.tracking", "mlflow.store.model_registry.sqlalchemy_store"])
    procs = [ctx.Process(target=promote, args=(name, v, store, p), kwargs={"echo": False}) for v in [*others, best]]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
    assert [proc.exitcode for proc in procs] == [0] * 4

    assert aliases(name)["champion"] == best
    versions = {str(v.version): v.tags for v in MlflowClient().search_model_versions(f"name = '{name}'")}
    assert sorted(versions, key=int) == ["1", "2", "3", "4", "5"]  # no version lost
    assert versions[best]["promotion.decision"] == "promoted"
    for v in others:  # collapsed, as the incumbent: never strictly better, whatever they claimed
        assert versions[v]["promotion.decision"] == "kept"
    assert versions[best]["promotion.champion_version"] == incumbent
    assert (store.home / "promote.lock").exists()


def _two_mode_generator(width: int = 8):
    """An MLP generator that puts each sample exactly on mode 0 or mode 4 of ring8 (by the sign of z0):
    reverse KL log 4, much better than a collapsed one (log 8)."""
    import torch

    from gan_core.config import ModelConfig
    from gan_core.models import build_generator

    G = build_generator(ModelConfig(arch="mlp", width=width, depth=2), (2,))
    l1, l2, l3 = (m for m in G.net if isinstance(m, torch.nn.Linear))
    k = 100.0  # steep ramp: |z0| < 1/k (0.8% of samples) fall between the modes
    with torch.no_grad():
        for layer in (l1, l2, l3):
            layer.weight.zero_()
            layer.bias.zero_()
        l1.weight[0, 0], l1.weight[1, 0], l1.bias[1] = k, k, -1.0  # relu(kz) - relu(kz - 1) = step(z0 > 0)
        l1.weight[2, 0], l1.weight[3, 0], l1.bias[3] = -k, -k, -1.0  # the same for z0 < 0
        l2.weight[0, 0], l2.weight[0, 1] = 1.0, -1.0
        l2.weight[1, 2], l2.weight[1, 3] = 1.0, -1.0
        l3.weight[0, 0], l3.weight[0, 1] = 1.0, -1.0  # (1, 0) for z0 > 0, (-1, 0) for z0 < 0
    return G


def _collapsed_generator(width: int = 8):
    """Every sample on mode 0: mode collapse, reverse KL log 8 (the worst)."""
    import torch

    from gan_core.config import ModelConfig
    from gan_core.models import build_generator

    G = build_generator(ModelConfig(arch="mlp", width=width, depth=2), (2,))
    with torch.no_grad():
        G.net[-1].weight.zero_()
        G.net[-1].bias.copy_(torch.tensor([1.0, 0.0]))
    return G


def test_cli_promote_reports_each_decision_and_refuses_unknown_versions(workspace, empty_store, monkeypatch):
    paths = open_store(workspace, workspace / ".ganflow", empty_store, monkeypatch)
    p = ring8_params("ganflow-digits")  # the workspace's params.yaml names this model
    make_version(paths, p, 0.1, status="FAILED")

    code, out, err = run_cli("promote", "--version", "1", "--workspace", str(workspace))
    assert code == 0, out + err
    assert "ganflow-digits version 1: REJECTED" in out and "FAILED" in out
    assert "champion is unchanged" in out

    code, out, err = run_cli("promote", "--model", "ganflow-digits", "--version", "9", "--workspace", str(workspace))
    assert code == 2
    assert "model 'ganflow-digits' has no version '9'; its versions: 1" in err and "Traceback" not in err

    code, out, err = run_cli("history", "--workspace", str(workspace))
    assert code == 0 and "ganflow-digits: no champion changes recorded; champion now: none" in out, out + err
    code, out, err = run_cli("promote", "--rollback", "--workspace", str(workspace))
    assert code == 2 and "'ganflow-digits' has no champion: nothing to roll back" in err and "Traceback" not in err
    for both_or_neither in (["--rollback", "--version", "1"], []):
        code, out, err = run_cli("promote", *both_or_neither, "--workspace", str(workspace))
        assert code == 2 and "either --version V" in err and "Traceback" not in err
    code, out, err = run_cli("promote", "--version", "1", "--force", "--workspace", str(workspace))
    assert code == 2 and "--force needs --version V and --reason" in err and "Traceback" not in err
    code, out, err = run_cli("promote", "--version", "1", "--force", "--reason", "hotfix", "--workspace",
                             str(workspace))
    assert code == 0 and "ganflow-digits version 1: FORCED -> champion (was none); forced by an operator: hotfix" in out
    code, out, err = run_cli("history", "--workspace", str(workspace))
    assert code == 0 and "forced" in out and "hotfix" in out, out + err


def test_judge_decides_on_its_own_measurements_and_moves_nothing():
    # The gate's decision given a measuring function (no MLflow at all); the tags only decorate the reason.
    from flows.registry.promote import judge
    from flows.registry.versions import VersionTags

    from flows.params import PromotionConfig

    class Gauge:
        metric, where, seeds = "fd", "3 paired draws of 100 samples (seeds [1, 2, 3])", [1, 2, 3]

        def __init__(self, measured):
            self.measured = measured

        def measure(self, version):
            value = self.measured[version]
            if isinstance(value, Exception):
                raise value
            return value

    rule = PromotionConfig(draws=3)
    claims = VersionTags(primary_metric="fd", scores={"fd": "0.001"})  # every tag claims a perfect score
    champ = [2.0, 2.2, 1.8]
    cases = [({"2": [1.5, 1.7, 1.3], "1": champ}, "promoted"),
             ({"2": champ, "1": champ}, "kept"),
             ({"2": [1.99, 2.19, 1.79], "1": champ}, "kept"),  # 0.5% better: below the minimum effect
             ({"2": [1.5, 2.6, 1.2], "1": champ}, "kept"),  # better on average, within the noise
             ({"2": [3.0, 3.1, 2.9], "1": champ}, "kept"),
             ({"2": None, "1": champ}, "rejected"), ({"2": RuntimeError("size mismatch"), "1": champ}, "rejected")]
    for measured, want in cases:
        d = judge("m", "2", claims, ("1", claims), failure=None, gauge=lambda: Gauge(measured), rule=rule)
        assert d.decision == want, (measured, d)
        assert d.seeds == [1, 2, 3]  # recorded with every measured decision
    promoted = judge("m", "2", claims, None, failure=None, gauge=lambda: Gauge({"2": [9.0, 9.0, 9.0]}), rule=rule)
    assert promoted.champion_after == "2" and promoted.challenger_score == 9.0

    def never():
        raise AssertionError("nothing to measure")

    failed = judge("m", "2", claims, ("1", claims), failure="its run FAILED", gauge=never, rule=rule)
    assert (failed.decision, failed.champion_after) == ("rejected", "1")
    again = judge("m", "1", claims, ("1", claims), failure=None, gauge=never, rule=rule)
    assert (again.decision, again.recorded) == ("kept", False)


def test_the_paired_verdict_promotes_only_beyond_the_noise_and_the_minimum_effect():
    import numpy as np

    from flows.registry.promote import paired_verdict

    rng = np.random.default_rng(0)
    champion = 8.0 + rng.normal(0, 0.6, 5)  # ~7% draw noise, as a digits generator's FD
    # The same generator: the pairs are equal, whatever the draw noise.
    same = paired_verdict(champion, champion, 0.95, 0.02)
    assert (same.difference, same.bound, same.better) == (0.0, 0.0, False)
    # An unpaired draw of an equal generator: noise both ways, never "better".
    other = 8.0 + rng.normal(0, 0.6, 5)
    assert not paired_verdict(other, champion, 0.95, 0.02).better
    # 10% better at each draw, with the pairing's small residual noise: better.
    better = paired_verdict(champion * 0.9 + rng.normal(0, 0.05, 5), champion, 0.95, 0.02)
    assert better.better and better.difference == pytest.approx(-0.1, abs=0.02) and better.bound < -0.02
    # 1% better at every draw: certain, but below the minimum effect; counts once that is lower.
    assert not paired_verdict(champion * 0.99, champion, 0.95, 0.02).better
    assert paired_verdict(champion * 0.99, champion, 0.95, 0.005).better
    with pytest.raises(ValueError, match="needs >= 2 draws"):
        paired_verdict([1.0], [1.0], 0.95, 0.02)


def test_the_card_keeps_only_the_latest_promotion_line():
    from flows.registry.card import with_promotion

    card = with_promotion("### m version 2\n\nscores", "m version 2: KEPT, champion stays version 1")
    again = with_promotion(card, "m version 2: PROMOTED -> champion (was version 1)")
    assert again.startswith("### m version 2\n\nscores\n\n**Promotion**") and again.count("**Promotion**") == 1
    assert again.endswith("PROMOTED -> champion (was version 1)")
    assert with_promotion(None, "x").startswith("**Promotion**")  # a version registered without a card


def test_history_records_champion_changes_and_rollback_walks_them_back(gate):
    from mlflow.tracking import MlflowClient

    from flows.errors import UserError
    from flows.registry import history
    from flows.registry.promote import promote, rollback

    store, p = gate
    name = p.model_name
    v1, v2, v3 = (make_version(store, p, 0.5, state=tiny_state(g())) for g in
                  (_collapsed_generator, _two_mode_generator, _collapsed_generator))
    assert [promote(name, v, store, p).decision for v in (v1, v2, v3)] == ["promoted", "promoted", "kept"]
    changes = history.read(MlflowClient(), name)
    assert [(c.kind, c.version, c.previous) for c in changes] == [("promoted", v1, None), ("promoted", v2, v1)]
    assert changes[1].metric == "reverse_kl" and changes[1].score == pytest.approx(math.log(4), abs=0.05)
    assert changes[1].previous_score == pytest.approx(math.log(8), abs=1e-6) and "@" in changes[1].by

    d = rollback(name, store, "samples look wrong in production")
    assert (d.decision, d.champion_before, d.version) == ("rollback", v2, v1)
    assert aliases(name) == {"champion": v1, "challenger": v3}  # a rollback judges no challenger
    t = vtags(name, v1)
    assert t["promotion.decision"] == "rollback" and t["promotion.reason"] == "samples look wrong in production"
    with pytest.raises(UserError, match="no earlier champion"):
        rollback(name, store, "again")
    table = history.table(name, history.read(MlflowClient(), name), v1)
    assert "3 champion change(s)" in table and "rollback" in table and table.endswith(f"champion now: version {v1}")

    # A promotion after a rollback stacks on what the rollback returned to; a deleted version is not returned to.
    v4 = make_version(store, p, 0.5, state=tiny_state(_two_mode_generator()))
    assert promote(name, v4, store, p).decision == "promoted"
    MlflowClient().delete_model_version(name, v1)
    with pytest.raises(UserError, match=f"no earlier champion.*deleted: {v1}"):
        rollback(name, store, "v4 is bad")
    assert aliases(name)["champion"] == v4


def test_lineage_walks_back_through_promotions_and_rollbacks():
    from flows.registry.history import Change, lineage

    def c(kind, v):
        return Change("2026-11-29T00:00:00Z", kind, v, None, None, None, None, "", "u@h")

    three = [c("promoted", "1"), c("promoted", "2"), c("promoted", "3")]
    assert lineage(three) == ["1", "2", "3"]
    assert lineage([*three, c("rollback", "2")]) == ["1", "2"]
    assert lineage([*three, c("rollback", "2"), c("rollback", "1")]) == ["1"]  # repeatable: walks back
    assert lineage([*three, c("rollback", "2"), c("promoted", "4")]) == ["1", "2", "4"]
    assert lineage([*three, c("rollback", "1")]) == ["1"]  # a rollback may skip deleted versions
    # An entry written before the paired gate (no draws, bound, pending) still reads, as settled.
    old = Change(**json.loads('{"at": "2026-11-29T00:00:00Z", "kind": "promoted", "version": "4", "previous": "3", '
                              '"metric": "fd", "score": 7.9214, "previous_score": 7.9236, "reason": "fd 7.92 < 7.92", '
                              '"by": "u@h"}'))
    assert (old.draws, old.bound, old.pending) == (None, None, None) and lineage([*three, old])[-1] == "4"


def test_the_gate_refuses_the_holdout_of_another_data_set(gate):
    # After a one-off `--set data.name=ring8` run the workspace's prepared data is ring8's, while
    # params.yaml (what `ganflow promote` reads) may name another data set: never measure on the wrong one.
    from flows.errors import UserError
    from flows.registry.promote import promote

    store, p = gate
    version = make_version(store, p, 0.5)
    other = p.model_copy(update={"data": p.data.model_copy(update={"name": "gauss8"})})
    with pytest.raises(UserError, match="measures on the holdout of gauss8, and the prepared data in .* is ring8"):
        promote(p.model_name, version, store, other)


def _promote_crashing_at(point: str, store, p, version: str) -> int:
    """`promote` in a child process that ends by os._exit at `point` (flows.faults): a crash there."""
    code = ("import sys; from pathlib import Path; from flows.env import RunPaths; from flows.params import Params; "
            "from flows.registry.promote import promote; p = Params.model_validate_json(sys.argv[1]); "
            "promote(p.model_name, sys.argv[2], RunPaths(Path(sys.argv[3]), Path(sys.argv[4])), p)")
    proc = subprocess.run([sys.executable, "-c", code, p.model_dump_json(), version, str(store.workspace),
                           str(store.home)], env={**os.environ, "GANFLOW_CRASH_AT": point}, capture_output=True,
                          text=True, timeout=300)
    return proc.returncode


@pytest.mark.parametrize("point", ["promote.history", "promote.alias"])
def test_a_promotion_cut_short_by_a_crash_is_completed_before_the_next_decision(gate, point):
    # Killed after the history entry, or after the alias moved but before the version's tags: the next gate
    # (under the same lock) finishes that change first, so history, alias and tags agree and rollback works.
    from mlflow.tracking import MlflowClient

    from flows import faults
    from flows.registry import history
    from flows.registry.promote import promote, rollback

    store, p = gate
    name = p.model_name
    v1 = make_version(store, p, 0.5, state=tiny_state(_collapsed_generator()))
    v2 = make_version(store, p, 0.5, state=tiny_state(_two_mode_generator()))
    promote(name, v1, store, p)
    assert _promote_crashing_at(point, store, p, v2) == faults.EXIT_CODE
    pending = history.read(MlflowClient(), name)[-1]
    assert pending.version == v2 and pending.pending is not None  # cut short
    assert "promotion.decision" not in vtags(name, v2)  # never half-decided

    v3 = make_version(store, p, 0.5, state=tiny_state(_collapsed_generator()))
    d = promote(name, v3, store, p)
    assert d.champion_before == v2 and d.decision == "kept"  # judged against the completed change
    changes = history.read(MlflowClient(), name)
    assert [(c.version, c.pending) for c in changes] == [(v1, None), (v2, None)]
    assert changes[1].draws == 5 and changes[1].bound < -0.02
    assert aliases(name)["champion"] == v2
    t = vtags(name, v2)
    assert t["promotion.decision"] == "promoted" and t["promotion.draws"] == "5"
    assert rollback(name, store, "check the walk back").version == v1


def test_an_operator_can_force_a_version_recorded_as_such(gate):
    from mlflow.tracking import MlflowClient

    from flows.registry import history
    from flows.registry.promote import force, promote, rollback

    store, p = gate
    name = p.model_name
    good = make_version(store, p, 0.5, state=tiny_state(_two_mode_generator()))
    worse = make_version(store, p, 0.5, state=tiny_state(_collapsed_generator()))
    promote(name, good, store, p)
    assert promote(name, worse, store, p).decision == "kept"
    d = force(name, worse, store, "the product team wants the old look")
    assert (d.decision, d.champion_before, d.champion_after) == ("forced", good, worse)
    assert aliases(name) == {"champion": worse, "challenger": worse}
    last = history.read(MlflowClient(), name)[-1]
    assert (last.kind, last.version, last.previous) == ("forced", worse, good)
    assert last.reason == "forced by an operator: the product team wants the old look"
    assert vtags(name, worse)["promotion.decision"] == "forced"
    assert force(name, worse, store, "again").recorded is False  # already champion: nothing moves
    assert rollback(name, store, "undo the force").version == good
