"""The real `ganflow` CLI on bad input: exit code != 0, one clear message naming the problem, no traceback.

(Bad --set values on `pipeline` and params.load's own errors are in test_pipeline_integration.py and
test_params.py; a missing --source is in test_prepare_integration.py.)"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from conftest import BIN, ganflow
from flows import params
from test_bad_input import BAD, USABLE, _folder_zoo

pytestmark = pytest.mark.integration


def assert_clean_failure(proc, *needles: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    assert proc.stderr.startswith("ganflow: error: ") or "\nganflow: error: " in proc.stderr, out[-4000:]
    for needle in needles:
        assert needle in proc.stderr, (needle, out[-4000:])


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.lstat().st_size for p in root.rglob("*")}


# --- ganflow prepare --source ----------------------------------------------------------------------

def test_prepare_with_nothing_usable_is_one_clear_error(workspace, tmp_path):
    src = tmp_path / "allbad"
    src.mkdir()
    for name, (raw, _) in BAD.items():
        (src / name).write_bytes(raw)
    proc = ganflow(workspace, "prepare", "--source", str(src), "--channels", "3", timeout=300)
    assert_clean_failure(proc, "no usable images", f"{len(BAD)} files skipped", "bomb.png: decompression bomb guard")
    assert not (workspace / "data/processed/train.pt").exists()


def test_prepare_with_a_single_image_is_one_clear_error(workspace, tmp_path):
    src = tmp_path / "one"
    src.mkdir()
    (src / "only.png").write_bytes(USABLE["rgb.png"][0])
    proc = ganflow(workspace, "prepare", "--source", str(src), timeout=300)
    assert_clean_failure(proc, "1 usable images are too few to split into train and holdout")


def test_prepare_zoo_reports_skipped_files_and_lists_them_in_the_manifest(workspace, tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.png").write_bytes(USABLE["rgb.png"][0])
    src = tmp_path / "zoo"
    zoo = _folder_zoo(src)
    os.mkfifo(src / "fifo.png")  # cannot be copied into data/raw (nor versioned): left out at import
    links = sorted(n for n, r in zoo.items() if r == "symlink")  # left out too: DVC would store their targets
    expected = {n: r for n, r in zoo.items() if n not in links}
    params.write_overrides(workspace, ["classifier.epochs=1"])  # `prepare` also trains the classifier
    before = _tree(tmp_path / "outside"), _tree(src)

    proc = ganflow(workspace, "prepare", "--source", str(src), "--channels", "3", timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    manifest = json.loads((workspace / "data/processed/manifest.json").read_text())
    assert {s["file"]: s["reason"] for s in manifest["skipped"]} == expected
    assert sum(manifest["counts"].values()) == len(USABLE)  # train + val + holdout
    assert f"{len(expected)} files skipped" in proc.stdout
    for s in manifest["skipped"][:5]:
        assert f"  skipped {s['file']}: {s['reason']}\n" in proc.stdout
    assert f"  ... and {len(expected) - 5} more" in proc.stdout
    assert f"not imported: {src / 'fifo.png'} (not a regular file)" in proc.stdout
    assert links and all(f"not imported: {src / n} (symlink)" in proc.stdout for n in links)
    assert (_tree(tmp_path / "outside"), _tree(src)) == before  # the source and the links' targets untouched


# --- params.yaml ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, needle", [
    ("data:\n  name: digits\n  seed: [1, 2\n", "params.yaml is not valid YAML"),
    ("- just\n- a list\n", "params.yaml must be a mapping of sections"),
])
def test_unparsable_params_file(workspace, text, needle):
    (workspace / "params.yaml").write_text(text)
    assert_clean_failure(ganflow(workspace, "prepare", timeout=300), needle)


@pytest.mark.parametrize("command", ["prepare", "pipeline"])
def test_unknown_loss_written_in_the_file(workspace, command):
    path = workspace / "params.yaml"
    path.write_text(path.read_text().replace("loss: non-saturating", "loss: nope", 1))
    proc = ganflow(workspace, command, timeout=300)
    assert_clean_failure(proc, "invalid", "params.yaml", "loss.name", "'nope'")
    assert not (workspace / "data/processed").exists()


def test_unknown_loss_by_set_leaves_the_file_alone(workspace):
    before = (workspace / "params.yaml").read_text()
    proc = ganflow(workspace, "pipeline", "--set", "loss=nope", timeout=300)
    assert_clean_failure(proc, "with --set overrides", "loss.name", "'nope'")
    assert (workspace / "params.yaml").read_text() == before


# --- ganflow pipeline: its starting point -----------------------------------------------------------

def test_finish_with_new_run_is_one_clear_error(workspace):
    # Refused before anything starts (no lock, no server, no run folder): each flag picks the starting point.
    proc = ganflow(workspace, "pipeline", "--finish", "--new-run", timeout=300)
    assert_clean_failure(proc, "--new-run (from scratch)", "--finish (end a stopped run)", "pass one of them")
    assert proc.stderr.count("\n") == 1 and proc.stdout == "", proc.stdout + proc.stderr  # one line, nothing else
    assert not (workspace / ".ganflow" / "ray_results").exists()
    assert not (workspace / ".ganflow" / "mlflow.db").exists()


# --- ganflow sample --model -------------------------------------------------------------------------

@pytest.mark.parametrize("uri, needle", [
    ("models:/no-such-model/1", "Registered Model with name=no-such-model not found"),
    ("not-a-uri", "is neither a model URI"),
    ("models:/ganflow-digits/99", "name=ganflow-digits not found"),  # the store is empty
])
def test_sample_from_a_missing_model(workspace, uri, needle):
    proc = ganflow(workspace, "sample", "--model", uri, "-n", "4", "--out", "x.npy", timeout=300)
    assert_clean_failure(proc, f"cannot load model {uri!r}" if uri.startswith("models:") else repr(uri), needle)
    assert not (workspace / "x.npy").exists()


def test_ganflow_version_prints_the_installed_version_and_writes_nothing(tmp_path):
    from importlib.metadata import version

    proc = subprocess.run([str(BIN / "ganflow"), "--version"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == f"ganflow {version('ganflow')}", proc.stderr[-2000:]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, needle", [
    (["trian"], "No such command 'trian'. (see `ganflow --help`)"),
    (["sample", "-n", "-5", "--model", "m", "--out", "a.png"], "Invalid value for '-n'"),
    (["promote", "--bogus"], "No such option: --bogus (see `ganflow promote --help`)"),
])
def test_click_usage_errors_are_one_line_like_ganflows_own(tmp_path, args, needle):
    # Click's own errors (unknown command or option, a value out of range) in ganflow's style: one line
    # naming the problem and where the help is, exit 2, no boxed block.
    proc = subprocess.run([str(BIN / "ganflow"), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("ganflow: error: "), proc.stderr[-2000:]
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert "╭" not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
