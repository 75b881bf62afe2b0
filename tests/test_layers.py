"""Layers (issue 14): the registry-side commands never load Ray Train or Tune. Each command runs in its own
interpreter, as a user runs it, and reports at exit which ray.train / ray.tune modules it had loaded."""
from __future__ import annotations

import os
import subprocess
import sys

from test_promote import empty_store, make_version, open_store, ring8_params  # noqa: F401 - a fixture

REPORT = ("import atexit, sys\n"
          "atexit.register(lambda: print('RAY_LOADED=' + ','.join(sorted(m for m in sys.modules\n"
          "    if m.split('.')[:2] in (['ray', 'train'], ['ray', 'tune']))), file=sys.stderr))\n")


def _ray_loaded(code: str) -> tuple[int, str, list[str]]:
    proc = subprocess.run([sys.executable, "-c", REPORT + code], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=300)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("RAY_LOADED=")]
    assert line, proc.stderr[-2000:]
    loaded = [m for m in line[-1][len("RAY_LOADED="):].split(",") if m]
    return proc.returncode, proc.stdout + proc.stderr, loaded


def _cli(*args: str) -> str:
    return f"sys.argv = ['ganflow', *{list(args)!r}]\nfrom flows.cli import main\nmain()\n"


def test_sample_promote_and_compare_end_without_ray_train_or_tune(tmp_path, empty_store, monkeypatch, registered):
    paths = open_store(tmp_path / "ws", tmp_path / "home", empty_store, monkeypatch)
    params = ring8_params()
    (paths.workspace / "params.yaml").parent.mkdir(parents=True, exist_ok=True)
    (paths.workspace / "params.yaml").write_text(
        "data: {name: ring8, points: 500}\nregistry: {model_name: ganflow-ring8, experiment: ganflow-ring8}\n")
    make_version(paths, params, 0.2)
    from flows.data import stages

    stages.prepare(params, paths.workspace)  # the gate measures on the workspace's holdout
    stages.train_classifier(params, paths.workspace)
    ws = str(paths.workspace)
    commands = {
        "sample": _cli("sample", "--model", str(registered), "-n", "4", "--out", str(tmp_path / "s.npy"),
                       "--workspace", ws),
        "promote": _cli("promote", "--version", "1", "--workspace", ws),
        "compare": _cli("compare", "--out", str(tmp_path / "c.html"), "--workspace", ws),
        # The gate's re-scoring path (a changed evaluator) runs in these modules.
        "promote re-scoring": "import flows.registry.promote, flows.evaluate, flows.data.load, flows.registry.versions\n",
    }
    for name, code in commands.items():
        rc, output, loaded = _ray_loaded(code)
        assert rc == 0, f"{name} failed:\n{output[-3000:]}"
        assert loaded == [], f"{name} loaded {loaded}"


def test_the_check_sees_ray_train_when_it_is_loaded():
    # The probe itself: a module that does import Ray Train is reported (the test above can fail).
    rc, output, loaded = _ray_loaded("import flows.run.train\nimport ray.train\n")
    assert rc == 0, output
    assert "ray.train" in loaded
