"""Servers named by configuration (MLFLOW_TRACKING_URI, PREFECT_API_URL): checked before any work
starts, so an unreachable one is one clear message naming it, not minutes of client retries and a
half-done run. URIs are printed only with their credentials masked, and `redact_text` masks them, and the
configured secrets, in any text (exception messages name request URLs with their credentials)."""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from flows.errors import UserError

TIMEOUT_S = 5.0
WEBHOOK_ENV = "GANFLOW_ALERT_WEBHOOK"  # read by flows.alerts; here so redact_text knows which URL is a webhook
MASK = "***"
_SECRET_QUERY = re.compile(r"((?:token|key|secret|password|passwd|sig|signature)[^=&]*=)[^&]*", re.IGNORECASE)
_ANY_QUERY = re.compile(r"([^=&]+=)[^&]*")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_URL_TAIL = ".,;:!?)]}"  # punctuation a sentence puts after a URL, not part of it
_SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "RAY_AUTH_TOKEN", "PREFECT_API_KEY",
               "AWS_SECRET_ACCESS_KEY")
_URL_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL", WEBHOOK_ENV)
_MIN_SECRET = 4  # shorter values would mask common words everywhere; URLs are still masked by structure


def redact(uri: str, *, webhook: bool = False) -> str:
    """`http://user:pw@host/x?token=t` -> `http://user:***@host/x?token=***`; anything else unchanged.

    webhook=True: the URL is a webhook, whose path and query are its secret (Slack's
    `/services/T/B/XXXX`, a generic `/<secret>`): the whole path becomes `/***` and every query value `***`,
    leaving the scheme and host to say where it goes."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{MASK}@{host}"
    path = "/" + MASK if webhook and parts.path not in ("", "/") else parts.path
    query = (_ANY_QUERY if webhook else _SECRET_QUERY).sub(r"\1" + MASK, parts.query)
    if (netloc, path, query) == (parts.netloc, parts.path, parts.query):
        return uri  # nothing secret; urlunsplit would also rewrite `sqlite:////abs` paths
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted (the configured webhook's path too) and every configured secret
    (MLFLOW_TRACKING_PASSWORD/TOKEN, RAY_AUTH_TOKEN and its file, PREFECT_API_KEY, AWS_SECRET_ACCESS_KEY,
    the secret parts of the MLflow, Prefect and webhook URLs) masked wherever it appears; text without any
    is returned unchanged. For any message bound for a log, a tag, an alert or the history."""
    hook = _origin(os.environ.get(WEBHOOK_ENV, ""))

    def one(match: re.Match) -> str:
        url = match.group().rstrip(_URL_TAIL)
        return redact(url, webhook=bool(hook) and _origin(url) == hook) + match.group()[len(url):]

    text = _URL.sub(one, text)
    for secret in sorted(_secrets(), key=len, reverse=True):  # longest first: no half-masked remainder
        text = text.replace(secret, MASK)
    return text


def _origin(url: str) -> str:
    """scheme://host:port without user info (how a webhook URL is recognised in text)."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port}" if parts.hostname else ""
    except ValueError:
        return ""


def _secrets() -> set[str]:
    found = {os.environ.get(var, "") for var in _SECRET_ENV}
    found.add(_token_file(os.environ.get("RAY_AUTH_TOKEN_PATH", "")))
    for var in _URL_ENV:
        found |= _url_secrets(os.environ.get(var, ""), webhook=var == WEBHOOK_ENV)
    # a URL carries them percent-encoded, the environment raw
    found |= {quote(s, safe="") for s in found} | {unquote(s) for s in found}
    return {s for s in found if len(s) >= _MIN_SECRET}


def _url_secrets(url: str, webhook: bool) -> set[str]:
    try:
        parts = urlsplit(url)
        password, username = parts.password, parts.username
    except ValueError:
        return set()
    found = {password if password is not None else username or ""}  # `token@host`: the name is the secret
    pattern = _ANY_QUERY if webhook else _SECRET_QUERY
    found |= {m.group()[len(m.group(1)):] for m in pattern.finditer(parts.query)}
    if webhook and parts.path not in ("", "/"):
        found.add(parts.path)
    return found


def _token_file(path: str) -> str:
    try:
        stat = Path(path).stat() if path else None
    except OSError:
        return ""
    return _read_token(path, stat.st_mtime_ns) if stat and stat.st_size <= 4096 else ""


@functools.lru_cache(maxsize=4)
def _read_token(path: str, mtime_ns: int) -> str:  # mtime in the key: a rewritten token is read again
    try:
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


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
