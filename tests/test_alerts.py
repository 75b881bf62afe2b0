"""Alerts (issue 16): a rejected promotion, and (tests/test_pipeline_integration.py) a failed run, reach a
webhook; its URL's secrets (user info, query, path) never print."""
from __future__ import annotations

from test_promote import empty_store, make_version, open_store, ring8_params, run_cli  # noqa: F401 - a fixture


def test_a_rejected_promotion_is_sent_and_the_url_secret_never_prints(workspace, empty_store, monkeypatch, receiver):
    paths = open_store(workspace, workspace / ".ganflow", empty_store, monkeypatch)
    monkeypatch.setenv("GANFLOW_ALERT_WEBHOOK", receiver.url())
    p = ring8_params("ganflow-digits")  # the workspace's params.yaml names this model
    make_version(paths, p, 0.1, status="FAILED")

    code, out, err = run_cli("promote", "--version", "1", "--workspace", str(workspace))
    assert code == 0 and "REJECTED" in out, out + err
    [body] = receiver.bodies
    assert body["event"] == "promotion_rejected" and body["model"] == "ganflow-digits" and body["version"] == "1"
    assert "FAILED" in body["reason"] and body["text"].startswith("ganflow promotion rejected: ")
    assert body["path"] == "/hook?token=s3cret-t0ken" and body["auth"].startswith("Basic ")  # user:password
    assert f"alert: promotion_rejected sent to http://alerts:***@127.0.0.1:{receiver.port}/***?token=***" in out
    assert "s3cret" not in out + err


def test_an_unreachable_destination_does_not_fail_anything(capsys, monkeypatch):
    from flows import alerts

    monkeypatch.setenv("GANFLOW_ALERT_WEBHOOK", "http://x:pw-123@127.0.0.1:9/hook")  # port 9: nothing there
    assert alerts.send("run_failed", "boom", stage="train") is False
    out = capsys.readouterr().out
    assert "could not reach http://x:***@127.0.0.1:9/***" in out and "pw-123" not in out
    monkeypatch.delenv("GANFLOW_ALERT_WEBHOOK")
    assert alerts.send("run_failed", "boom") is False  # no destination configured: silent


def test_a_long_reason_is_cut_after_its_secrets_are_masked(monkeypatch, receiver):
    from flows import alerts

    monkeypatch.setenv("GANFLOW_ALERT_WEBHOOK", receiver.url())
    # the cut falls inside the password: cut first, the URL would lose its `@` and keep the password's start
    reason = "x" * (alerts.REASON_CHARS - 20) + " http://ganflow:S3CRET-pw@mlflow.example/api/2.0/mlflow/runs/get"
    assert alerts.send("run_failed", reason, stage="train")
    [body] = receiver.bodies
    assert body["reason"] == reason.replace(":S3CRET-pw@", ":***@")[:alerts.REASON_CHARS]
    assert "S3CR" not in body["reason"] + body["text"]
