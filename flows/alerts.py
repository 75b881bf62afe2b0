"""Alerts: a failed or crashed run, and a rejected promotion, reported where a team looks.

The destination is a webhook URL in GANFLOW_ALERT_WEBHOOK (an environment variable, not params.yaml: the
URL usually carries a secret, and params.yaml is committed). The body is JSON with a Slack-style `text`
line plus the fields: event, workspace, run, stage, reason, and model/version for promotions. The URL is
printed only with its secrets (user info, query values, path) masked, and the body is redacted like any
message (servers.redact_text): a webhook is often a chat channel wider than the team that holds the
credentials. A failing destination never fails the run: it says so and goes on."""
from __future__ import annotations

import os

from flows.servers import WEBHOOK_ENV, redact, redact_text

ENV = WEBHOOK_ENV
TIMEOUT_S = 10
REASON_CHARS = 2000  # cut after redaction: a URL cut before it could keep its secret


def destination() -> str | None:
    return os.environ.get(ENV) or None


def send(event: str, reason: str, **fields: str | None) -> bool:
    """POST one alert; True when the destination accepted it (2xx). No destination: nothing to do."""
    url = destination()
    if url is None:
        return False
    reason = redact_text(reason)[:REASON_CHARS]
    shown = {k: redact_text(v) for k, v in fields.items() if v is not None}
    body = {"event": event, "reason": reason, **shown}
    where = ", ".join(f"{k} {v}" for k, v in shown.items() if v)
    body["text"] = f"ganflow {event.replace('_', ' ')}: {reason}" + (f" ({where})" if where else "")
    shown_url = redact(url, webhook=True)
    import requests  # user:password@ in the URL becomes basic auth (urllib would take it for the host)

    try:
        response = requests.post(url, json=body, timeout=TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - an unreachable destination must not fail the run
        print(f"alert: could not reach {shown_url}: {type(exc).__name__}")
        return False
    if not response.ok:
        print(f"alert: {shown_url} answered HTTP {response.status_code} to {event}")
        return False
    print(f"alert: {event} sent to {shown_url}")
    return True
