"""Prefect keeps its one-line record of a user error but not the traceback; real bugs keep theirs."""
import logging
from flows.errors import UserError
from flows.logs import DropExpectedTracebacks
def test_filter():
    f = DropExpectedTracebacks()
    try:
        try:
            raise UserError("bad")
        except UserError as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError as e:
        rec = logging.LogRecord("x", 40, "f", 1, "m", None, (type(e), e, e.__traceback__))
    assert f.filter(rec) and rec.exc_info is None
    try:
        raise KeyError("bug")
    except KeyError as e:
        rec = logging.LogRecord("x", 40, "f", 1, "m", None, (type(e), e, e.__traceback__))
    assert f.filter(rec) and rec.exc_info is not None
