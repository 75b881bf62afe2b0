"""A run's --set is one-off (issue 16): laid over params.yaml into params.run.yaml, which DVC's stages read,
so a data override is what DVC prepares and dvc.lock records, and params.yaml stays byte-identical; the next
run without --set goes back to params.yaml's values. Real DVC on bundled 2-D point sets (no classifier)."""
from __future__ import annotations

import json

import pytest
import yaml

from flows import params as params_mod
from flows.data import dvc
from flows.env import RunPaths
from flows.errors import UserError


def _locked(ws) -> dict:
    return yaml.safe_load((ws / "dvc.lock").read_text())["stages"]["prepare"]["params"]


def test_a_one_off_data_override_reaches_dvc_and_leaves_params_yaml_alone(workspace):
    # The workspace's own choice (what a schedule retrains): gauss8, small.
    params_mod.write_overrides(workspace, ["data.name=gauss8", "data.points=400"])
    before = (workspace / "params.yaml").read_bytes()
    paths = RunPaths(workspace, workspace / ".ganflow")

    one_off, raw = dvc.repro(paths, ["data.name=ring8", "eval.seed=7"], push=False)
    assert (workspace / "params.yaml").read_bytes() == before
    assert raw["data"]["name"] == "ring8" and raw["data"]["points"] == 400  # params.yaml's, with the override
    assert json.loads((workspace / "data/processed/manifest.json").read_text())["name"] == "ring8"
    assert _locked(workspace) == {params_mod.RUN_PARAMS_FILE: {"data": raw["data"]}}
    classifier = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]["classifier"]["params"]
    assert classifier[params_mod.RUN_PARAMS_FILE]["eval.seed"] == 7
    run_file = (workspace / params_mod.RUN_PARAMS_FILE).read_text()
    assert '["data.name=ring8", "eval.seed=7"]' in run_file and "# global batch, split across workers" in run_file

    scheduled, raw = dvc.repro(paths, [], push=False)  # the next run without --set: params.yaml's data again
    assert scheduled != one_off and raw["data"]["name"] == "gauss8"
    assert json.loads((workspace / "data/processed/manifest.json").read_text())["name"] == "gauss8"
    assert _locked(workspace)[params_mod.RUN_PARAMS_FILE]["data"]["name"] == "gauss8"
    assert (workspace / "params.yaml").read_bytes() == before
    assert dvc.repro(paths, ["data.name=ring8"], push=False)[0] == one_off  # the same data, the same version

    with pytest.raises(UserError, match="data.points"):  # refused before anything is written
        dvc.repro(paths, ["data.points=3"], push=False)
    assert '["data.name=ring8"]' in (workspace / params_mod.RUN_PARAMS_FILE).read_text()


def test_an_older_dvc_yaml_refuses_one_off_values_it_would_not_see(workspace):
    # A workspace made before one-off --set: its stages read params.yaml, so a --set of those values would
    # never reach DVC. Everything else still runs there.
    old = (workspace / "dvc.yaml").read_text().replace(f"--params {params_mod.RUN_PARAMS_FILE}", "")
    old = old.replace(f"- {params_mod.RUN_PARAMS_FILE}:\n          - data", "- data")
    (workspace / "dvc.yaml").write_text(old)
    with pytest.raises(UserError, match=r"--set data.name: this workspace's dvc.yaml reads those from params.yaml"):
        dvc._check_reach(workspace, ["train.epochs=3", "data.name=ring8"])
    dvc._check_reach(workspace, ["train.epochs=3", "classifier.epochs=2"])  # classifier still reads the run file
