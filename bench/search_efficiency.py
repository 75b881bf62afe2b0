"""Search efficiency (issue 7, benchmark 5): ASHA and synchronous successive halving (SHA) vs the
full-budget grid on the same space, all through `ganflow tune` on digits. Compute = training epochs
summed over trials (each trial's epoch count is its `score` history in its MLflow child run); also
wall time. A scheduler's cost to come
within 5% of the grid's best probe score (Frechet distance, lower is better) is its compute up to and
including the first trial that reached that score, in the order trials finished; goal <= 40% of the
grid's.

    .venv/bin/python -m bench.search_efficiency             # 6-point grid, 16 epochs
    .venv/bin/python -m bench.search_efficiency --epochs 6  # quick
    .venv/bin/python -m bench.search_efficiency --space large  # 18-point grid
    .venv/bin/python -m bench.search_efficiency --space large --grace 1 --reduction-factor 3
    .venv/bin/python -m bench.search_efficiency --schedulers sha   # grid vs SHA only
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from bench.common import footer, make_workspace, run_ganflow, run_paths, table  # noqa: E402

SPACES = {
    "small": {"loss": {"grid": ["non-saturating", "hinge"]}, "optim.lr_g": {"grid": [5e-5, 2e-4, 8e-4]}},
    "large": {"loss": {"grid": ["non-saturating", "hinge", "least-squares"]},
              "optim.lr_g": {"grid": [5e-5, 2e-4, 8e-4]}, "optim.lr_d": {"grid": [2e-4, 8e-4]}},
}


def search(root: Path, scheduler: str, epochs: int, space: dict, grace: int = 2, factor: int = 2) -> dict:
    ws = make_workspace(root / scheduler)
    sets = [f"tune.scheduler={scheduler}", f"tune.space={yaml.safe_dump(space, default_flow_style=True).strip()}", "tune.num_samples=1",
            f"tune.grace_period={grace}", f"tune.reduction_factor={factor}", f"train.epochs={epochs}", "eval.every=1",
            "eval.probe_samples=500", "train.num_workers=1"]
    wall = run_ganflow(ws, "tune", *[a for s in sets for a in ("--set", s)])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run_paths(ws).mlflow_db}")
    exp = client.get_experiment_by_name("ganflow-digits")
    runs = client.search_runs([exp.experiment_id], "tags.`ganflow.trial_id` != ''", order_by=["attributes.end_time ASC"])
    trials = []
    for r in runs:
        scores = [m.value for m in client.get_metric_history(r.info.run_id, "score")]
        trials.append({"config": r.data.tags.get("ganflow.trial_config"), "epochs": len(scores),
                       "best": min(scores) if scores else float("inf"), "end": r.info.end_time or 0})
    return {"wall": wall, "trials": trials}


def compute_to_reach(trials: list[dict], target: float) -> int | None:
    spent = 0
    for t in sorted(trials, key=lambda t: t["end"]):
        spent += t["epochs"]
        if t["best"] <= target:
            return spent
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--space", choices=sorted(SPACES), default="small", help="small: 6 points; large: 18")
    ap.add_argument("--grace", type=int, default=2, help="ASHA/SHA grace period, epochs (default 2)")
    ap.add_argument("--reduction-factor", type=int, default=2, help="ASHA/SHA reduction factor (default 2)")
    ap.add_argument("--schedulers", default="asha,sha", help="compared with the grid (default asha,sha)")
    args = ap.parse_args()
    t0 = time.time()
    root = Path(tempfile.mkdtemp(prefix="ganflow-search-"))
    space = SPACES[args.space]
    names = [n for n in args.schedulers.split(",") if n]
    print(f"space ({args.space}): {space}; grace {args.grace}, reduction factor {args.reduction_factor}; "
          f"grid vs {', '.join(names)}", flush=True)
    runs = {"grid, full budget (FIFO)": search(root, "fifo", args.epochs, space)}
    for name in names:
        runs[name.upper()] = search(root, name, args.epochs, space, args.grace, args.reduction_factor)
    grid = runs["grid, full budget (FIFO)"]
    target = 1.05 * min(t["best"] for t in grid["trials"])
    g_total = sum(t["epochs"] for t in grid["trials"])
    rows = [[name, str(len(r["trials"])), str(sum(t["epochs"] for t in r["trials"])),
             f"{min(t['best'] for t in r['trials']):.2f}", f"{r['wall']:.0f}"] for name, r in runs.items()]
    print(table(["search", "trials", "epochs (compute)", "best probe FD", "wall s"], rows))
    for name, r in runs.items():
        print(f"\n{name} trials (finish order):")
        for t in sorted(r["trials"], key=lambda t: t["end"]):
            print(f"  {t['config']}: {t['epochs']} epochs, best FD {t['best']:.2f}")
    for name in list(runs)[1:]:
        r = runs[name]
        total, reach = sum(t["epochs"] for t in r["trials"]), compute_to_reach(r["trials"], target)
        said = "never" if reach is None else f"{reach} epochs = {reach / g_total:.0%} of the grid's {g_total}"
        print(f"\n{name} total compute {total} / grid {g_total} = {total / g_total:.0%}; to come within 5% of "
              f"the grid's best ({target:.2f}): {said} (goal <= 40%); wall {r['wall'] / grid['wall']:.0%} of the grid's")
    print("\n" + footer(t0))


if __name__ == "__main__":
    main()
