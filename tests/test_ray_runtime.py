"""flows.run.ray_runtime with a real local Ray: the pipeline stops Ray in the background after training."""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, clean_env

SCRIPT = """
import sys, time
from pathlib import Path
import ray
from flows.run import ray_runtime
from flows.env import configure

paths = configure(Path(sys.argv[1]))
ray_runtime.init(paths)
first = ray.get_runtime_context().get_node_id()
ray_runtime.init(paths)  # again, as fit() inside a Tune trial does: the running runtime is kept
assert ray.get(ray.remote(lambda: 1).remote()) == 1 and ray.get_runtime_context().get_node_id() == first
started = time.perf_counter()
ray_runtime.shutdown(wait=False)
returned = time.perf_counter() - started
# A stage that needs Ray again (a second training in the same process) must get a live runtime,
# not the one being stopped.
ray_runtime.init(paths)
assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
second = ray.get_runtime_context().get_node_id()
ray_runtime.shutdown()
print("ok", returned, first != second, ray.is_initialized())
"""


def test_a_background_shutdown_returns_at_once_and_a_later_init_gets_a_fresh_runtime(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, env=clean_env(tmp_path / ".ganflow"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    word, returned, fresh, still_up = proc.stdout.split()[-4:]
    assert word == "ok" and float(returned) < 1.0  # the stop itself (~2 s) went on in the background
    assert fresh == "True" and still_up == "False"
