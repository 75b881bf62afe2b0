"""Faults: a SIGKILLed Ray worker, a SIGKILLed driver, changed hyper-parameters on resume, unreachable
servers. Real Ray/Prefect/MLflow/DVC through the CLI, on ring8 (fast epochs)."""
from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from conftest import BIN, clean_env, ganflow
from flows.env import CHILDREN, RunPaths

pytestmark = pytest.mark.integration

EPOCHS = 14
EVERY = 2
RING = ["--set", "data.name=ring8", "--set", "data.points=4000", "--set", f"train.epochs={EPOCHS}",
        "--set", f"train.checkpoint_every={EVERY}", "--set", "train.batch_size=32", "--set", "train.num_workers=2",
        "--set", "train.cpus_per_worker=1", "--set", "eval.num_samples=500"]


def _latest_checkpoint(ws: Path, run: str = "*") -> int:
    """The newest epoch Ray has recorded as persisted, over all runs or run `run`'s (-1: none yet)."""
    best = -1
    for snap in (ws / ".ganflow" / "ray_results").glob(f"{run}/checkpoint_manager_snapshot.json"):
        try:
            latest = json.loads(snap.read_text()).get("latest_checkpoint_result")
        except (json.JSONDecodeError, OSError):
            continue  # being written
        if latest:
            best = max(best, int(latest["checkpoint_dir_name"].split("_")[1]))
    return best


def _start(ws: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "ganflow"), *args, "--workspace", str(ws)], cwd=ws,
                            env=clean_env(ws / ".ganflow"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _wait_for_checkpoint(ws: Path, proc: subprocess.Popen, epoch: int, timeout: float = 300, run: str = "*") -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = _latest_checkpoint(ws, run)
        if got >= epoch:
            return got
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of epoch {epoch} within {timeout} s")


def _train_workers(proc: subprocess.Popen) -> list[psutil.Process]:
    kids = psutil.Process(proc.pid).children(recursive=True)
    return [p for p in kids if "RayTrainWorker" in " ".join(_cmdline(p))]


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _final_state(ws: Path, run: str) -> dict:
    ckpt = ws / ".ganflow" / "ray_results" / run / f"epoch_{EPOCHS - 1:05d}" / "state.pt"
    return torch.load(ckpt, weights_only=True)


def _same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[part][k], b[part][k]) for part in ("generator", "discriminator")
               for k in a[part]) and all(torch.equal(a["ema"]["module"][k], b["ema"]["module"][k])
                                         for k in a["ema"]["module"])


def test_a_killed_worker_resumes_from_its_checkpoint_and_ends_where_an_unbroken_run_ends(workspace):
    proc = _start(workspace, "pipeline", *RING)
    _wait_for_checkpoint(workspace, proc, 3)
    victims = _train_workers(proc)
    assert len(victims) == 2, [_cmdline(p) for p in psutil.Process(proc.pid).children(recursive=True)]
    victims[-1].send_signal(signal.SIGKILL)  # one rank dies: Ray's FailureConfig restarts the group
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    assert "Registered ganflow-ring8 version 1" in out
    resumed = [int(m) for m in re.findall(r"resuming from checkpoint at epoch (\d+)", out)]
    assert resumed and 4 <= resumed[0] < EPOCHS, out[-4000:]
    epochs_run = re.findall(r"\[ganflow\] epoch (\d+)/", out)
    assert EPOCHS <= len(epochs_run) <= EPOCHS + EVERY  # at most one checkpoint interval redone
    run = json.loads((workspace / ".ganflow" / "last_pipeline.json").read_text())["ray_run"]
    history = torch.load(workspace / ".ganflow" / "ray_results" / run / f"epoch_{EPOCHS - 1:05d}" / "state.pt",
                         weights_only=True)["history"]
    assert [h["epoch"] for h in history] == list(range(EPOCHS))  # no epoch lost or doubled
    kept = sorted(d.name for d in (workspace / ".ganflow" / "ray_results" / run).glob("epoch_*"))
    assert f"epoch_{EPOCHS - 1:05d}" in kept and len(kept) <= 3  # keep_checkpoints=2 best + the latest

    # G, D, both optimisers, the EMA and the RNG came back exactly: an unbroken run of the same
    # settings ends with bit-identical weights.
    again = ganflow(workspace, "pipeline", "--new-run", *RING)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    run2 = json.loads((workspace / ".ganflow" / "last_pipeline.json").read_text())["ray_run"]
    assert run2 != run
    assert _same_weights(_final_state(workspace, run), _final_state(workspace, run2))


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture
def bystanders():
    """Starts processes of the kinds a run starts that are not the run's: every one must outlive it."""
    started: list[subprocess.Popen] = []

    def start() -> list[subprocess.Popen]:
        started.extend([subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "prefect", "server",
                                          "start"]),
                        subprocess.Popen(["bash", "-c", "exec -a ray::DashboardAgent sleep 300"])])
        return started[-2:]

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def test_a_killed_driver_resumes_on_rerun_and_changed_hyperparameters_are_refused(workspace, bystanders):
    # SIGKILL of the driver and of its watchdog: what the driver started stays running (its Ray even trains on)...
    proc = _start(workspace, "pipeline", *RING)
    got = _wait_for_checkpoint(workspace, proc, 3)
    family = psutil.Process(proc.pid).children(recursive=True)
    for watchdog in [p for p in family if "flows.watchdog" in _cmdline(p)]:  # it would end them within seconds
        watchdog.kill()
        family.remove(watchdog)
    others = bystanders()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert _alive(family), "SIGKILL of the driver should leave its servers running"

    # Other hyper-parameters while that run is unfinished: refused, naming what changed.
    refused = ganflow(workspace, "pipeline", *RING, "--set", "optim.lr_g=0.0005")  # the recipe: 0.001
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    assert "optim.lr_g" in refused.stderr and "--new-run" in refused.stderr
    assert "Rerun it with the --set values it ran with (--set data.name=ring8" in refused.stderr
    assert "Traceback" not in refused.stderr + refused.stdout
    # ...until the next run on the workspace ends exactly those processes (by id and start time).
    assert "left running (it was killed)" in refused.stdout
    assert not _alive(family), [_cmdline(p)[:3] for p in _alive(family)]
    assert all(b.poll() is None for b in others)  # never by name: other processes live on
    mark = _latest_checkpoint(workspace)  # the orphaned training may have gone on until it was ended
    assert mark >= got

    # The same command (its --set values are one-off): the same run goes on from its last checkpoint, and says so.
    resumed = ganflow(workspace, "pipeline", *RING)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-4000:]
    assert "Resuming run ring8-" in out and f"after epoch {mark + 1}" in out
    assert f"resuming from checkpoint at epoch {mark + 1}/{EPOCHS}" in out
    assert "Registered ganflow-ring8 version 1" in out
    assert len(re.findall(r"\[ganflow\] epoch (\d+)/", resumed.stdout + resumed.stderr)) == EPOCHS - mark - 1
    resumed_run = json.loads((workspace / ".ganflow" / "last_pipeline.json").read_text())["ray_run"]

    # Once nothing is left unfinished, other settings are simply a new run: it trains, and keeps a checkpoint...
    proc = _start(workspace, "pipeline", *RING, "--set", "optim.lr_g=0.0005")
    out = []
    for line in proc.stdout:
        out.append(line)
        if "[ganflow] epoch " in line:
            break
    assert proc.poll() is None, "".join(out)[-4000:]
    run = re.search(r"Training (ring8-[0-9a-f]+) \(recipe", "".join(out))
    assert run and run[1] != resumed_run, "".join(out)[-4000:]
    run = run[1]
    _wait_for_checkpoint(workspace, proc, 2 * EVERY - 1, run=run)  # two to choose from for --finish below
    assert proc.poll() is None, "it must be killed while it trains"
    # ...and when it is killed (SIGKILL: it cleans up nothing; on SIGTERM it stops its servers itself), its
    # watchdog ends, within seconds, everything it started: its process tree, what it recorded and what
    # names its Ray session folder; by id, never by name.
    session = str(RunPaths(workspace, workspace / ".ganflow").ray_temp)
    family = psutil.Process(proc.pid).children(recursive=True) + _recorded(workspace) + [
        p for p in psutil.process_iter() if any(session in arg for arg in _cmdline(p))]
    assert any("prefect" in " ".join(_cmdline(p)) for p in family) and any("raylet" in " ".join(_cmdline(p))
                                                                            for p in family)
    others = bystanders()
    proc.send_signal(signal.SIGKILL)
    threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True).start()  # orphans may hold it
    proc.wait(timeout=60)
    _, alive = psutil.wait_procs(family, timeout=20)  # the watchdog among them: it exits when done
    alive = _alive(alive)
    assert not alive, [_cmdline(p)[:3] for p in alive]
    assert all(b.poll() is None for b in others)

    # `--finish`: that stopped run trains no further; its best kept checkpoint by the validation probe (the
    # latest where no kept one has a finite probe score) is evaluated and registered, and the run is finished.
    folder = workspace / ".ganflow" / "ray_results" / run
    kept = {int(r["checkpoint_dir_name"].split("_")[1]) + 1: r["metrics"].get("score")  # epochs done -> score
            for r in json.loads((folder / "checkpoint_manager_snapshot.json").read_text())["checkpoint_results"]}
    scores = {done: s for done, s in kept.items() if s is not None and math.isfinite(s)}  # Ray writes inf as null
    best = min(scores.values()) if scores else None
    expected = {done for done, s in scores.items() if s == best} if scores else {max(kept)}
    assert len(kept) >= 2, kept
    finished = ganflow(workspace, "pipeline", *RING, "--set", "optim.lr_g=0.0005", "--finish")
    out = finished.stdout + finished.stderr
    assert finished.returncode == 0, out[-4000:]
    line = re.search(rf"Finishing run {run} where it was stopped: its best kept checkpoint is after epoch (\d+) "
                     rf"(\(.*?\)) of {EPOCHS}", out)
    assert line and int(line[1]) in kept and int(line[1]) in expected, (kept, out[-4000:])
    assert line[2] == (f"(probe score {best:.4g})" if scores else "(no probe: the latest)"), line[0]
    assert "Registered ganflow-ring8 version 2:" in out, out[-4000:]
    assert "[ganflow] epoch" not in out, out[-4000:]  # it trained no further
    assert json.loads((workspace / ".ganflow" / "last_pipeline.json").read_text())["ray_run"] == run
    assert json.loads((folder / "ganflow_run.json").read_text())["status"] == "finished"


def _recorded(ws: Path) -> list[psutil.Process]:
    out = []
    for entry in json.loads((ws / ".ganflow" / CHILDREN).read_text()):
        try:
            out.append(psutil.Process(entry["pid"]))
        except psutil.NoSuchProcess:
            pass
    return out


def test_unreachable_servers_are_one_clear_message_naming_them(workspace, tmp_path):
    env = clean_env(workspace / ".ganflow")
    for var, url in (("MLFLOW_TRACKING_URI", "http://ganflow:s3cret@127.0.0.1:9"),
                     ("PREFECT_API_URL", "http://127.0.0.1:9/api")):
        started = time.monotonic()
        proc = subprocess.run([str(BIN / "ganflow"), "pipeline", "--workspace", str(workspace)], cwd=workspace,
                              env={**env, var: url}, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert var in proc.stderr and "127.0.0.1:9" in proc.stderr
        assert "s3cret" not in proc.stdout + proc.stderr  # credentials never printed
        assert "Traceback" not in proc.stdout + proc.stderr
        assert time.monotonic() - started < 60
    assert not (workspace / ".ganflow" / "mlflow.db").exists()  # nothing started, nothing half-done

    # `ganflow sample` talks to MLflow too: the same one message instead of minutes of client retries.
    proc = subprocess.run([str(BIN / "ganflow"), "sample", "--model", "models:/m/1", "--out", str(tmp_path / "s.npy"),
                           "--workspace", str(workspace)], cwd=workspace, capture_output=True, text=True,
                          env={**env, "MLFLOW_TRACKING_URI": "http://ganflow:s3cret@127.0.0.1:9"}, timeout=300)
    assert proc.returncode == 2 and "MLFLOW_TRACKING_URI" in proc.stderr and "s3cret" not in proc.stderr
