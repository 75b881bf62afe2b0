"""Time to quality through the product (issue 7, benchmark 4): `ganflow pipeline` with the in-training
probe every few epochs, then the wall time from the command's start until the first probe that meets
the bar (the probe's timestamp is the end of that epoch):

  ring8   8/8 modes and >= 95% high-quality samples (probe: 1,000 samples from the EMA generator)
  digits  10/10 classes covered and Frechet distance <= 2x the real-vs-real baseline

Each run is the product's default recipe for the dataset (gan_core/recipes.py), probed more often. The wall time includes everything a user
waits for: install excluded, but data preparation, the classifier, Ray and Prefect start-up included.

    .venv/bin/python -m bench.time_to_quality               # both datasets
    .venv/bin/python -m bench.time_to_quality --only ring8
    .venv/bin/python -m bench.time_to_quality --only digits --seeds 3   # train.seed 0, 1, 2
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from bench.common import footer, last_pipeline, run_ganflow, table  # noqa: E402
from flows.conventions import completed  # noqa: E402
from bench.overhead import _workspace  # noqa: E402

# The product's own recipes (gan_core/recipes.py, `recipe: auto`): nothing set but the dataset and how
# often to probe, so this measures what a user gets.
RECIPES = {
    "ring8": ["data.name=ring8", "eval.every=5", "train.checkpoint_every=20"],
    "digits": ["eval.every=2", "train.checkpoint_every=20"],
}


def reached(h: dict, dataset: str) -> bool:
    if dataset == "ring8":
        return h.get("probe_modes", 0) >= 8 and h.get("probe_high_quality", 0) >= 0.95
    return h.get("probe_class_coverage", 0) >= 10 and h.get("probe_fd_ratio", 1e9) <= 2.0


def run(dataset: str, root: Path, seed: int = 0) -> dict:
    ws = _workspace(root / f"{dataset}-{seed}")
    started = time.time()
    wall = run_ganflow(ws, "pipeline", *[a for s in [*RECIPES[dataset], f"train.seed={seed}"] for a in ("--set", s)])
    summary, history = last_pipeline(ws)
    hit = next((h for h in history if reached(h, dataset)), None)
    probes = [h for h in history if "probe_fd" in h or "probe_modes" in h]
    return {"dataset": dataset, "wall": wall, "stages": summary["timings_s"], "final": summary["metrics"],
            "hit_epoch": None if hit is None else completed(hit["epoch"]),
            "time_to_quality": None if hit is None else hit["epoch_end_unix"] - started,
            "epochs": len(history), "last_probe": probes[-1] if probes else {}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(RECIPES))
    ap.add_argument("--seeds", type=int, default=1, help="train.seed 0..N-1, one pipeline each (default 1)")
    args = ap.parse_args()
    t0 = time.time()
    root = Path(tempfile.mkdtemp(prefix="ganflow-ttq-"))
    rows = []
    for dataset, seed in [(d, s) for d in ([args.only] if args.only else list(RECIPES)) for s in range(args.seeds)]:
        print(f"{dataset} seed {seed}: ganflow pipeline --set {' --set '.join(RECIPES[dataset])}", flush=True)
        r = run(dataset, root, seed)
        lp = r["last_probe"]
        last = (f"modes {lp.get('probe_modes', 0):.0f}, HQ {100 * lp.get('probe_high_quality', 0):.1f}%"
                if dataset == "ring8" else
                f"classes {lp.get('probe_class_coverage', 0):.0f}, FD ratio {lp.get('probe_fd_ratio', 0):.2f}")
        rows.append([f"{dataset} seed {seed}", "reached" if r["hit_epoch"] else "NOT reached",
                     "-" if r["hit_epoch"] is None else f"{r['time_to_quality']:.0f} s (epoch {r['hit_epoch']})",
                     f"{r['wall']:.0f} s ({r['epochs']} epochs)", last, str(r["stages"])])
    print("\n" + table(["data", "bar", "time to quality", "pipeline wall", "last probe", "stage wall s"], rows))
    print("\n" + footer(t0))


if __name__ == "__main__":
    main()
