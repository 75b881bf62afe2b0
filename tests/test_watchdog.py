"""The run watchdog (flows/watchdog.py) on a stand-in run: cheap; the real pipeline is killed in
tests/test_reliability.py."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from flows.env import WATCHDOG, RunPaths, hold_workspace

# A run: starts its watchdog, a child, and a process in its own session that it records (as the
# ephemeral Prefect server is), then waits to be killed.
FAKE_RUN = """
import subprocess, sys, time
from pathlib import Path
from flows import watchdog
from flows.env import RunPaths, record_children
paths = RunPaths(Path(sys.argv[1]), Path(sys.argv[2]))
watchdog.start(paths)
child = subprocess.Popen(["sleep", "300"])
recorded = subprocess.Popen(["sleep", "301"], start_new_session=True)
record_children(paths, [recorded.pid])
print(child.pid, recorded.pid, flush=True)
time.sleep(300)
"""


def test_a_killed_run_takes_what_it_started_with_it_and_nothing_else(tmp_path: Path):
    paths = RunPaths(tmp_path, tmp_path / ".ganflow")
    paths.home.mkdir()
    run = subprocess.Popen([sys.executable, "-c", FAKE_RUN, str(paths.workspace), str(paths.home)],
                           stdout=subprocess.PIPE, text=True, start_new_session=True)
    started = [psutil.Process(int(pid)) for pid in run.stdout.readline().split()]
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "prefect", "server", "start"])
    try:
        time.sleep(2.5)  # the watchdog has listed the run's tree at least once
        run.send_signal(signal.SIGKILL)
        run.wait()
        _, alive = psutil.wait_procs(started, timeout=10)
        assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
        assert bystander.poll() is None  # never by name
        deadline = time.monotonic() + 10
        while not (paths.home / "watchdog.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert f"run pid {run.pid} ended: ended 2 of its processes" in (paths.home / "watchdog.log").read_text()
    finally:
        bystander.kill()
        for p in started:
            try:
                p.kill()
            except psutil.Error:
                pass


def test_a_run_waits_for_a_finished_runs_watchdog_instead_of_refusing(tmp_path: Path):
    paths = RunPaths(tmp_path, tmp_path / ".ganflow")
    holding, release = threading.Event(), threading.Event()

    def watchdog():  # in another process it would be refused re-entry; a thread plays it via the lock file
        from filelock import FileLock

        paths.home.mkdir(parents=True, exist_ok=True)
        with FileLock(str(paths.home / "run.lock")):
            (paths.home / "run.lock.json").write_text(json.dumps({"what": WATCHDOG, "pid": 1, "since": "now"}))
            holding.set()
            release.wait()
            (paths.home / "run.lock.json").unlink()

    thread = threading.Thread(target=watchdog)
    thread.start()
    holding.wait()
    threading.Timer(1.0, release.set).start()
    started = time.monotonic()
    with hold_workspace(paths, "ganflow pipeline"):
        waited = time.monotonic() - started
    thread.join()
    assert 0.9 < waited < 10


# A Ray process as reap_children sees one: a command line naming a session folder, or an agent retitled
# `ray::...` that names it only through its open log file. Prints once the file is open.
RAY_LIKE = """
import sys, time
log = open(sys.argv[1], "a")
print("ready", flush=True)
time.sleep(120)
"""


def test_reaping_ends_this_run_dirs_ray_processes_never_a_neighbours_with_the_same_prefix(tmp_path: Path):
    import shutil

    from flows.env import reap_children

    paths = RunPaths(tmp_path, tmp_path / ".ganflow")
    ours = paths.ray_temp
    neighbour = Path(f"{ours}2")  # /x/ray and /x/ray2, or /tmp/ganflow-ray-<digest> and ...<digest>2
    procs = {}
    try:
        for temp in (ours, neighbour):
            (temp / "session_x" / "logs").mkdir(parents=True)
            log = str(temp / "session_x" / "logs" / "agent.log")
            procs[temp, "cmdline"] = subprocess.Popen(
                [sys.executable, "-c", RAY_LIKE, log, f"--session-dir={temp}/session_x"], stdout=subprocess.PIPE,
                text=True)
            procs[temp, "agent"] = subprocess.Popen(["ray::DashboardAgent", "-c", RAY_LIKE, log],
                                                    executable=sys.executable, stdout=subprocess.PIPE, text=True)
        for proc in procs.values():
            assert proc.stdout.readline().strip() == "ready"
        assert reap_children(paths) == 2
        for (temp, kind), proc in procs.items():
            if temp == ours:
                assert proc.wait(timeout=10) is not None, kind
            else:
                assert proc.poll() is None, f"the neighbour's {kind} process was ended"
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
        shutil.rmtree(neighbour, ignore_errors=True)
        shutil.rmtree(ours, ignore_errors=True)
