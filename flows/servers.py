"""Servers named by configuration (MLFLOW_TRACKING_URI, PREFECT_API_URL): checked before any work
starts, so an unreachable one is one clear message naming it, not minutes of client retries and a
half-done run. URIs are printed only with their credentials masked."""
from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

from flows.errors import UserError

TIMEOUT_S = 5.0
_SECRET_QUERY = re.compile(r"((?:token|key|secret|password|passwd|sig|signature)[^=&]*=)[^&]*", re.IGNORECASE)


def redact(uri: str) -> str:
    """`http://user:pw@host/x?token=t` -> `http://user:***@host/x?token=***`; anything else unchanged."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
    query = _SECRET_QUERY.sub(r"\1***", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return uri  # nothing secret; urlunsplit would also rewrite `sqlite:////abs` paths
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _probe(url: str) -> str | None:
    """None when something answers HTTP at url (any status: auth and routing are the client's
    business), else the connection error."""
    import requests

    try:
        requests.get(url, timeout=TIMEOUT_S)
        return None
    except requests.RequestException as exc:
        return type(exc).__name__


def _check(var: str, what: str, fix: str) -> None:
    url = os.environ.get(var, "")
    if url.startswith(("http://", "https://")):
        err = _probe(url.rstrip("/") + "/health")
        if err:
            raise UserError(f"cannot reach {what} at {var}={redact(url)} ({err}). {fix}")


def check_mlflow() -> None:
    _check("MLFLOW_TRACKING_URI", "the MLflow server",
           "Start it, fix the URI, or unset it to use the embedded SQLite store.")


def check_prefect() -> None:
    _check("PREFECT_API_URL", "the Prefect API",
           "Start `prefect server start`, fix the URL, or unset it for the ephemeral API.")


def outage() -> str | None:
    """Which configured server stopped answering (for a run that failed mid-way), or None."""
    for var, what in (("MLFLOW_TRACKING_URI", "MLflow"), ("PREFECT_API_URL", "the Prefect API")):
        url = os.environ.get(var, "")
        if url.startswith(("http://", "https://")) and _probe(url.rstrip("/") + "/health"):
            return f"{what} at {var}={redact(url)} stopped answering"
    return None


def check_all() -> None:
    check_mlflow()
    check_prefect()
