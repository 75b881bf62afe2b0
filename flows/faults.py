"""Crash points for the reliability tests: with ``GANFLOW_CRASH_AT=<point>`` the process ends right there
through os._exit, as a power cut or SIGKILL would (no finally, no atexit, nothing flushed). Unset in
every real run, where each point is a no-op."""
from __future__ import annotations

import os

ENV = "GANFLOW_CRASH_AT"
EXIT_CODE = 97  # what a test sees from the crashed process


def point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os._exit(EXIT_CODE)
