"""Every third-party module ganflow's own code imports is a declared runtime dependency: a package that only
arrives through another tool (Ray, MLflow, Prefect) may leave with that tool's next release."""
import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[\[<>=!~;\s]", req, maxsplit=1)[0].lower().replace("_", "-")


def _imported(folder: str) -> set[str]:
    mods: set[str] = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    return mods - set(sys.stdlib_module_names) - {"gan_core", "flows", "bench", "__future__"}


def test_runtime_imports_are_declared_and_test_only_ones_are_not():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    dev = {_name(r) for r in project["optional-dependencies"]["dev"]}
    dists = packages_distributions()

    # A module may come in several distributions (mlflow: mlflow and mlflow-skinny); one declared is enough.
    used = {m: {d.lower().replace("_", "-") for d in dists[m]} for m in _imported("gan_core") | _imported("flows")}
    undeclared = sorted(m for m, ds in used.items() if not ds & runtime)
    assert not undeclared, f"imported by ganflow but in no [project] dependency: {undeclared}"
    assert {"pandas", "filelock", "psutil", "requests"} <= {m for m in used}  # the check sees function-level imports
    assert "torchmetrics" in dev and "torchmetrics" not in runtime and "torchmetrics" not in used  # tests only
