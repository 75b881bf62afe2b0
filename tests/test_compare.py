"""`ganflow compare` and `ganflow ui` against a real MLflow SQLite store: runs created the way the
pipeline creates them (flows.registry.start_run / log_evaluation / finish_run), no training."""
from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import BIN, clean_env
from test_promote import empty_store, open_store, run_cli  # noqa: F401 - a fixture and helpers

EXPERIMENT = "ganflow-ring8"
# name -> (params overrides, eval metrics or None for a diverged run)
RUNS = {
    "ring8-ns": ({}, {"reverse_kl": 0.9, "modes": 5, "high_quality": 0.8}),
    "ring8-wgangp": ({"loss": {"name": "wgan-gp"}}, {"reverse_kl": 0.1, "modes": 8, "high_quality": 0.95}),
    "ring8-hinge": ({"loss": {"name": "hinge"}, "train": {"epochs": 7}}, {"reverse_kl": 0.5, "modes": 7,
                                                                          "high_quality": 0.9}),
    "ring8-diverged": ({"optim": {"lr_g": 1e30, "lr_d": 1e30}}, None),
}
ORDER = ["ring8-wgangp", "ring8-hinge", "ring8-ns", "ring8-diverged"]


def log_runs(paths) -> dict[str, str]:
    """The experiment a few pipeline runs leave behind: three scored, one diverged (FAILED)."""
    from flows.registry import tracking
    from flows.params import validate
    from flows.run.identity import RunIdentity
    from gan_core.images import save_scatter_png

    ids = {}
    for name, (overrides, metrics) in RUNS.items():
        # As a run logs them: validated with the recipe's values filled in (arch, optimiser resolved).
        params = validate({"data": {"name": "ring8", "points": 500}, "model": {"arch": "auto"}, **overrides},
                          "params.yaml", n_train=400)
        identity = RunIdentity(name, params.training_hash(), "d41d8cd98f00b204e9800998ecf8427e")
        run_id = tracking.start_run(params, paths, identity, identity.data_version)
        if metrics is None:
            tracking.MlflowClient().set_tag(run_id, "ganflow.failure",
                                            "training diverged: NaN/Inf in loss_d at epoch 1 (lr too high?)")
            tracking.finish_run(run_id, "FAILED")
        else:
            # As the pipeline leaves them: a probe per epoch (validation), the holdout scores, a sample grid.
            for epoch, value in enumerate((1.5, 0.9, metrics["reverse_kl"] + 0.05)):
                tracking.MlflowClient().log_metric(run_id, "probe_reverse_kl", value, step=epoch)
            grid = paths.home / f"{name}-samples.png"
            save_scatter_png(np.random.default_rng(0).normal(size=(50, 2)), grid)
            tracking.log_evaluation(run_id, {**metrics, "num_modes": 8}, {"samples": grid.rename(grid.with_name("samples.png"))})
            tracking.finish_run(run_id)
        ids[name] = run_id
    return ids


def test_compare_sorts_runs_by_the_primary_metric_and_logs_a_report(tmp_path, empty_store, monkeypatch):
    from mlflow.tracking import MlflowClient

    from flows.registry.compare import compare
    from flows.errors import UserError
    from flows.params import Params

    paths = open_store(tmp_path, tmp_path / "home", empty_store, monkeypatch)
    ids = log_runs(paths)
    params = Params.model_validate({"data": {"name": "ring8"}})
    out = tmp_path / "report" / "cmp.html"

    result = compare(paths, None, out, params=params)  # the workspace's experiment: ganflow-ring8

    assert result.experiment == EXPERIMENT and result.metric == "eval/reverse_kl"
    assert [r["run"] for r in result.rows] == ORDER
    assert [r["rank"] for r in result.rows] == [1, 2, 3, None]
    by = {r["run"]: r for r in result.rows}
    assert by["ring8-wgangp"]["optim"] == "adam 0.0001"
    assert by["ring8-hinge"]["optim"] == "adam 0.0001/0.0004" and by["ring8-hinge"]["epochs"] == "7"
    assert by["ring8-ns"]["loss"] == "non-saturating" and by["ring8-ns"]["arch"] == "mlp"
    assert by["ring8-diverged"]["status"] == "FAILED" and "diverged" in by["ring8-diverged"]["failure"]
    assert by["ring8-ns"]["data_version"].startswith("d41d8cd9") and by["ring8-ns"]["duration_s"] >= 0

    lines = result.text.splitlines()
    assert "sorted by eval/reverse_kl" in lines[0]
    positions = [next(i for i, line in enumerate(lines) if name in line) for name in ORDER]
    assert positions == sorted(positions)
    failed_line = lines[positions[-1]]
    assert "FAILED" in failed_line and "^ failed: training diverged" in lines[positions[-1] + 1]
    widths = {len(line) for line in lines[1:3]}  # header and rule line up
    assert len(widths) == 1

    page = out.read_text()
    assert all(name in page for name in ORDER) and "FAILED" in page and "NaN/Inf in loss_d" in page
    assert "data:image/png;base64," in page and page.index("ring8-wgangp") < page.index("ring8-ns")
    assert result.png == out.with_suffix(".png") and result.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Pictures inside the page (it opens from disk): both charts and each scored run's sample grid.
    assert page.count("data:image/png;base64,") == 2 + 3 and 'alt="samples of ring8-diverged"' not in page
    assert result.curves.exists() and 'alt="validation score over epochs"' in page
    assert by["ring8-ns"]["recipe"] == "points-ns-r1-wide" and "points-paper" in page

    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert run.data.tags["ganflow.kind"] == "comparison" and run.info.status == "FINISHED"
    assert run.data.tags["ganflow.best_run"] == ids["ring8-wgangp"]
    assert {a.path for a in client.list_artifacts(result.run_id, "comparison")} == {
        "comparison/cmp.html", "comparison/cmp.png", "comparison/cmp-curves.png"}

    again = compare(paths, EXPERIMENT, out, params=None, log=False)  # comparison runs are not compared
    assert [r["run"] for r in again.rows] == ORDER

    with pytest.raises(UserError, match=r"no MLflow experiment named 'nope'.*ganflow-ring8"):
        compare(paths, "nope", out)
    with pytest.raises(UserError, match=r"\.html"):
        compare(paths, EXPERIMENT, tmp_path / "cmp.txt")


def test_cli_compare_prints_the_table_and_writes_html(workspace, empty_store, monkeypatch):
    paths = open_store(workspace, workspace / ".ganflow", empty_store, monkeypatch)
    log_runs(paths)
    html = workspace / "cmp.html"
    code, out, err = run_cli("compare", "--experiment", EXPERIMENT, "--out", str(html), "--workspace", str(workspace))
    assert code == 0, out + err
    positions = [out.index(name) for name in ORDER]
    assert positions == sorted(positions)
    assert "eval/reverse_kl" in out and f"wrote {html}" in out
    assert html.exists() and html.with_suffix(".png").exists()

    code, out, err = run_cli("compare", "--workspace", str(workspace))  # params.yaml: digits, no such experiment
    assert code == 2 and "no MLflow experiment named 'ganflow-digits'" in err and "Traceback" not in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_ui_serves_the_mlflow_store_until_stopped(workspace, empty_store, monkeypatch, tmp_path):
    open_store(workspace, workspace / ".ganflow", empty_store, monkeypatch)  # no migrations at startup
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "ui.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([str(BIN / "ganflow"), "ui", "--port", str(port), "--workspace", str(workspace)],
                                cwd=workspace, env=clean_env(workspace / ".ganflow"), stdout=fh,
                                stderr=subprocess.STDOUT)
    try:
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline and proc.poll() is None:
            status = _status(url)
            if status == 200:
                break
            time.sleep(0.5)
        assert status == 200, f"no HTTP 200 from {url} (rc {proc.poll()}):\n{log.read_text()[-3000:]}"
        assert _status(f"http://127.0.0.1:{port}/health") == 200
    finally:
        proc.terminate()  # as Ctrl-C would: ganflow stops the mlflow ui process group
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert f"MLflow UI:   http://127.0.0.1:{port}" in text
    assert "prefect server start --host 127.0.0.1" in text and "PREFECT_HOME=" in text
    deadline = time.monotonic() + 20
    while _status(url) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _status(url) is None, "the mlflow ui server outlived `ganflow ui`"
