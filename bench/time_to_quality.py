"""Time to quality through the product (issue 7, benchmark 4): `ganflow pipeline` with the in-training
probe every few epochs, then the wall time from the command's start until the first probe that meets
the bar (the probe's timestamp is the end of that epoch):

  ring8   8/8 modes and >= 95% high-quality samples (probe: 1,000 samples from the EMA generator)
  digits  10/10 classes covered and Frechet distance <= 2x the real-vs-real baseline

Each recipe is a params.yaml override set (see RECIPES). The wall time includes everything a user
waits for: install excluded, but data preparation, the classifier, Ray and Prefect start-up included.

    .venv/bin/python -m bench.time_to_quality               # both datasets
    .venv/bin/python -m bench.time_to_quality --only ring8
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
from bench.overhead import _workspace  # noqa: E402

RECIPES = {
    # bench/mode_collapse.py's best recipe in pipeline terms: NS + R1, fast Adam, big batch, EMA.
    "ring8": ["data.name=ring8", "loss.name=ns", "loss.r1_gamma=0.01", "optim.optimizer=adam",
              "optim.lr_g=0.001", "optim.lr_d=0.002", "optim.betas=[0.5, 0.9]", "train.batch_size=256",
              "train.epochs=120", "eval.every=5", "train.checkpoint_every=20", "model.width=128", "model.z_dim=2"],
    # The default digits recipe (DCGAN, Adam 2e-4, batch 32, EMA), probed every 5 epochs.
    "digits": ["train.epochs=60", "eval.every=5", "train.checkpoint_every=20"],
}


def reached(h: dict, dataset: str) -> bool:
    if dataset == "ring8":
        return h.get("probe_modes", 0) >= 8 and h.get("probe_high_quality", 0) >= 0.95
    return h.get("probe_class_coverage", 0) >= 10 and h.get("probe_fd_ratio", 1e9) <= 2.0


def run(dataset: str, root: Path) -> dict:
    ws = _workspace(root / dataset)
    started = time.time()
    wall = run_ganflow(ws, "pipeline", *[a for s in RECIPES[dataset] for a in ("--set", s)])
    summary, history = last_pipeline(ws)
    hit = next((h for h in history if reached(h, dataset)), None)
    probes = [h for h in history if "probe_fd" in h or "probe_modes" in h]
    return {"dataset": dataset, "wall": wall, "stages": summary["timings_s"], "final": summary["metrics"],
            "hit_epoch": None if hit is None else int(hit["epoch"]) + 1,
            "time_to_quality": None if hit is None else hit["epoch_end_unix"] - started,
            "epochs": len(history), "last_probe": probes[-1] if probes else {}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(RECIPES))
    args = ap.parse_args()
    t0 = time.time()
    root = Path(tempfile.mkdtemp(prefix="ganflow-ttq-"))
    rows = []
    for dataset in [args.only] if args.only else list(RECIPES):
        print(f"{dataset}: ganflow pipeline --set {' --set '.join(RECIPES[dataset])}", flush=True)
        r = run(dataset, root)
        lp = r["last_probe"]
        last = (f"modes {lp.get('probe_modes', 0):.0f}, HQ {100 * lp.get('probe_high_quality', 0):.1f}%"
                if dataset == "ring8" else
                f"classes {lp.get('probe_class_coverage', 0):.0f}, FD ratio {lp.get('probe_fd_ratio', 0):.2f}")
        rows.append([dataset, "reached" if r["hit_epoch"] else "NOT reached",
                     "-" if r["hit_epoch"] is None else f"{r['time_to_quality']:.0f} s (epoch {r['hit_epoch']})",
                     f"{r['wall']:.0f} s ({r['epochs']} epochs)", last, str(r["stages"])])
    print("\n" + table(["data", "bar", "time to quality", "pipeline wall", "last probe", "stage wall s"], rows))
    print("\n" + footer(t0))


if __name__ == "__main__":
    main()
