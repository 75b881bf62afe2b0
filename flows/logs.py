"""Prefect logs every flow/task exception with its traceback. For a user's mistake (UserError) or a
training outcome (TrainingFailed) the CLI already prints one clear message: keep Prefect's one-line
record of it and drop the traceback, which would only bury the message. Real bugs keep theirs. Every
record is redacted (servers.redact_text) before any handler formats it: exception messages name request
URLs with their credentials, and Prefect's API handler stores what it is given."""
from __future__ import annotations

import logging

from flows.errors import TrainingFailed, UserError
from flows.servers import redact_text

_EXPECTED = (UserError, TrainingFailed)


def _is_expected(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:  # follow the chain: Prefect may wrap the original
        if isinstance(exc, _EXPECTED):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class DropExpectedTracebacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and _is_expected(record.exc_info[1]):
            record.exc_info, record.exc_text = None, None
        return True


class RedactSecrets(logging.Filter):
    """Masks secrets in the message and the traceback. The traceback is formatted here and exc_info dropped,
    so that no formatter (Prefect's JSON one reads exc_info) sees the raw exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record: logging reports it when it formats it
            return True
        if (clean := redact_text(message)) != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def quiet_expected_tracebacks() -> None:
    """Attach the filters to Prefect's handlers (handler filters see records from every child logger):
    the traceback drop first, so that it still sees the exception, then the redaction."""
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            for kind in (DropExpectedTracebacks, RedactSecrets):
                if not any(isinstance(f, kind) for f in handler.filters):
                    handler.addFilter(kind())
