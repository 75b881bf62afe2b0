"""Secrets stay secret (issue 25, item 5): a URL's user info, secret query values, a webhook's path and the
configured secrets are masked in every message bound for a log, a tag or an alert."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from prefect import flow  # noqa: F401 - sets up Prefect's logging as the pipeline's import does (before caplog's)

from flows.servers import redact, redact_text
from test_promote import empty_store, store  # noqa: F401 - fixtures

SECRET_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL", "GANFLOW_ALERT_WEBHOOK",
               "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
               "PREFECT_API_KEY", "AWS_SECRET_ACCESS_KEY")
SLACK = "https://hooks.slack.com/services/T000/B000/XXXXs3cret"


@pytest.fixture
def no_secrets(monkeypatch):
    """None of the variables redact_text reads, whatever the developer's shell has."""
    for var in SECRET_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def mlflow_error(uri: str) -> Exception:
    """MLflow's own error for a server that does not answer: it names the request URL, credentials and all."""
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).get_run("0" * 32)
    except Exception as exc:  # noqa: BLE001 - whatever MLflow raises is the message under test
        return exc
    raise AssertionError(f"nothing answers at {uri}, yet MLflow did not fail")


def test_a_webhook_path_is_masked_whole(no_secrets):
    assert redact(SLACK, webhook=True) == "https://hooks.slack.com/***"
    assert redact("https://ci.example/x7Kq9?code=abc&v=2", webhook=True) == "https://ci.example/***?code=***&v=***"
    assert redact(SLACK) == SLACK  # only a webhook's path is a secret; other URLs keep theirs
    no_secrets.setenv("GANFLOW_ALERT_WEBHOOK", SLACK)
    # in text: the URL by its host, and the bare path requests names in its errors
    assert (redact_text(f"POST {SLACK} failed: Max retries exceeded with url: /services/T000/B000/XXXXs3cret.")
            == "POST https://hooks.slack.com/*** failed: Max retries exceeded with url: ***.")


def test_user_and_password_in_an_exception_sentence(no_secrets):
    no_secrets.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    message = str(mlflow_error("http://ganflow:S3CRET-pw@127.0.0.1:9"))  # port 9: nothing listens
    assert "http://ganflow:S3CRET-pw@127.0.0.1:9/api/2.0/mlflow/runs/get failed" in message
    assert redact_text(message) == message.replace("ganflow:S3CRET-pw@", "ganflow:***@")


def test_a_token_in_a_query(no_secrets):
    text = "GET https://h.example/api?run=1&access_token=tok-123&x=2, then (see http://u@h.example/)."
    assert redact_text(text) == "GET https://h.example/api?run=1&access_token=***&x=2, then (see http://***@h.example/)."


def test_configured_secrets_are_masked_anywhere(no_secrets, tmp_path):
    token_file = tmp_path / "ray-token"
    token_file.write_text("ray-file-t0ken\n")
    no_secrets.setenv("MLFLOW_TRACKING_PASSWORD", "pw-from-env-42")
    no_secrets.setenv("RAY_AUTH_TOKEN", "ray-env-t0ken")
    no_secrets.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    no_secrets.setenv("MLFLOW_TRACKING_URI", "https://ganflow:uri%2Fpw@mlflow.example")
    text = ("login failed for pw-from-env-42; ray said ray-env-t0ken, ray-file-t0ken; "
            "password uri/pw (uri%2Fpw) rejected")
    assert redact_text(text) == "login failed for ***; ray said ***, ***; password *** (***) rejected"


@pytest.mark.parametrize("text", [
    "sqlite:////tmp/run/.ganflow/mlflow.db",
    "store sqlite:////abs/path/mlflow.db, artifacts file:///abs/path/artifacts.",
    "MLflow UI: http://127.0.0.1:5000/#/experiments/1 (run 0123abcd)",
    "training run r-1 failed: diverged: NaN/Inf at epoch 3\n  keyed=1 key ring token",
    "",
])
def test_text_without_secrets_is_unchanged(no_secrets, text):
    no_secrets.setenv("MLFLOW_TRACKING_PASSWORD", "not-in-the-text")
    no_secrets.setenv("GANFLOW_ALERT_WEBHOOK", SLACK)
    assert redact_text(text) == text


def test_a_failing_runs_secrets_reach_neither_mlflow_nor_the_logs_nor_the_alert(store, receiver, monkeypatch,
                                                                                capsys, caplog):
    # The pipeline's failure path, piece by piece (flows/pipeline.py): the run is marked FAILED with the
    # exception's text, the alert carries its last line, Prefect logs it with its traceback.
    from mlflow.tracking import MlflowClient

    from flows import alerts, logs
    from flows.registry import tracking

    password, hook = "S3CRET-pw", "hook-s3cret-path"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("GANFLOW_ALERT_WEBHOOK", f"http://127.0.0.1:{receiver.port}/services/T000/B000/{hook}")
    try:
        raise RuntimeError("training run r-1 failed") from mlflow_error(f"http://ganflow:{password}@127.0.0.1:9")
    except RuntimeError as exc:
        failure = exc
    reason = f"{failure}: {failure.__cause__}"
    assert password in reason  # the message does carry it

    client = MlflowClient()
    run_id = client.create_run(client.create_experiment("secrets")).info.run_id
    tracking.fail_run(run_id, reason)
    assert alerts.send("run_failed", reason.splitlines()[-1], workspace="/ws", run="r-1", stage="train")
    logs.quiet_expected_tracebacks()
    with caplog.at_level(logging.ERROR):
        logging.getLogger("ganflow").error("Encountered exception during execution: %s", reason, exc_info=failure)

    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and "ganflow:***@127.0.0.1:9/api/2.0/mlflow" in run.data.tags["ganflow.failure"]
    [body] = receiver.bodies
    assert body.pop("path") == f"/services/T000/B000/{hook}" and body.pop("auth") is None  # delivered to the secret
    assert "ganflow:***@127.0.0.1:9" in body["reason"]
    out = capsys.readouterr()
    assert f"alert: run_failed sent to http://127.0.0.1:{receiver.port}/***" in out.out
    assert "ganflow:***@127.0.0.1:9" in caplog.text and "Traceback" in caplog.text  # the traceback is kept...
    # ...and so is what Prefect's own handlers (its console, its API log) write
    handlers = logging.getLogger("").handlers + logging.getLogger("prefect.flow_runs").handlers
    prefect_handlers = [h for h in handlers if type(h).__module__.startswith("prefect.")]
    assert len(prefect_handlers) >= 2
    written = []
    for handler in prefect_handlers:
        record = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "failed: %s", (reason,),
                                   (type(failure), failure, failure.__traceback__))
        record.flow_run_name = "r-1"  # what Prefect's run logger adds
        assert handler.filter(record)
        written.append(handler.format(record))
    assert all("ganflow:***@127.0.0.1:9" in text for text in written)
    for secret in (password, hook):
        assert secret not in json.dumps(run.data.tags), "MLflow"
        assert secret not in json.dumps(body), "alert body"
        assert secret not in out.out + out.err + caplog.text + "".join(written), "logs"


def test_a_searchs_failed_trials_keep_their_reason_not_its_secrets(store, tmp_path):
    from mlflow.tracking import MlflowClient

    from flows.registry import tracking

    reason = "API request to http://ganflow:S3CRET-pw@127.0.0.1:9/api/2.0/mlflow/runs/log-batch failed"
    client = MlflowClient()
    parent = client.create_run(client.create_experiment("search", (tmp_path / "art").as_uri())).info.run_id
    tracking.log_trials(parent, [{"status": "error", "reason": reason}], {}, 1.0)
    [trial] = json.loads(Path(client.download_artifacts(parent, "trials.json", str(tmp_path))).read_text())
    assert trial["reason"] == reason.replace("ganflow:S3CRET-pw@", "ganflow:***@")
