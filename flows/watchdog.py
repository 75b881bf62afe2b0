"""A run's watchdog: when a `ganflow pipeline`, `tune` or `serve` process ends, however it ends (exit,
exception, Ctrl-C, SIGTERM, SIGKILL), every process it started ends within seconds.

A separate process because the run itself cannot be relied on to clean up: SIGKILL runs nothing, and on
SIGTERM Ray's C++ handler and Prefect's capture_sigterm replace a Python handler of ours (and raising
SystemExit from one aborted the process)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from flows.env import WATCHDOG, RunPaths, end, hold_workspace, reap_children
from flows.errors import UserError

LOG = "watchdog.log"  # in the run dir: what each watchdog ended
_SNAPSHOT_S = 2.0  # how often the run's process tree is listed (psutil reads every /proc/*/stat: ~10 ms)


def start(paths: RunPaths) -> None:
    """Watch this process. Its own session: Ctrl-C or a signal to our process group must not reach it.
    No inherited pipes: whoever reads our output sees it end when we exit, not when the watchdog does."""
    with open(paths.home / LOG, "ab") as log:
        subprocess.Popen([sys.executable, "-m", "flows.watchdog", str(paths.workspace), str(paths.home),
                          str(os.getpid())], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)


def watch(paths: RunPaths, pid: int) -> None:
    """Wait for process `pid` (our parent) to end, then end its descendants as last seen, and (holding the
    workspace, unless a new run holds it: that run's start has ended them) what it recorded."""
    import psutil

    family: dict[int, psutil.Process] = {}
    try:
        run = psutil.Process(pid)
        if run.pid != os.getppid():  # re-parented: the run ended before we started, the id may be reused
            run = None
    except psutil.NoSuchProcess:
        run = None
    while run is not None:
        try:
            # psutil.Process keeps each one's start time: a reused id is never signalled (see env.end).
            family.update((p.pid, p) for p in run.children(recursive=True) if p.pid != os.getpid())
            run.wait(timeout=_SNAPSHOT_S)
            break
        except psutil.TimeoutExpired:
            if run.status() == psutil.STATUS_ZOMBIE:  # ended, not yet reaped by its parent
                break
        except psutil.NoSuchProcess:
            break
    left = [p for p in family.values() if _alive(p)]
    end(left)
    try:
        with hold_workspace(paths, WATCHDOG):
            ended = reap_children(paths)
    except UserError:
        ended = 0  # a new run holds the workspace: its start ended what this run recorded
    if left or ended:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} run pid {pid} ended: ended {len(left)} of its processes "
              f"and {ended} recorded ones", flush=True)


def _alive(proc) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


if __name__ == "__main__":
    workspace, home, pid = sys.argv[1:4]
    watch(RunPaths(Path(workspace), Path(home)), int(pid))
