"""Prefect logs every flow/task exception with its traceback. For a user's mistake (UserError) or a
training outcome (TrainingFailed) the CLI already prints one clear message: keep Prefect's one-line
record of it and drop the traceback, which would only bury the message. Real bugs keep theirs."""
from __future__ import annotations

import logging

from flows.errors import TrainingFailed, UserError

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


def quiet_expected_tracebacks() -> None:
    """Attach the filter to Prefect's handlers (handler filters see records from every child logger)."""
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, DropExpectedTracebacks) for f in handler.filters):
                handler.addFilter(DropExpectedTracebacks())
