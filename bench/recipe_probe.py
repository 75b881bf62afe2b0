"""A recipe's quality curve on a prepared workspace, cheaply: the product's run spec for params.yaml with
`--set` values (flows.params, flows.run.identity.resolve_model, flows.run.train.run_spec: the spec
`ganflow pipeline` would train), trained by the one loop (gan_core.training.fit) in this process, without
Ray, Prefect or MLflow. Every `--every` epochs the EMA generator is scored as the pipeline's final
evaluation scores it: the workspace's judge on the holdout split, at the judge's frozen sample count and
seed (flows.evaluate.judge_protocol), so a row's FD ratio is the bar's number for a run of that length
stopped there (but the lr schedule is the whole run's: an early row is not a shorter run). The last
epoch also gets precision / recall and a sample grid (`--out` with .png).

Made for trying recipe changes at 32 px before a 15-minute pipeline run (issue 27): two probes side by
side with `--threads 1` use 2 cores better than one with 2 threads; their epoch times then say nothing
about the pipeline's.

    .venv/bin/python -m bench.recipe_probe WS --set model.width=16 --set train.kimg=160 --out /tmp/w16.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bench"

import torch  # noqa: E402

from bench.common import footer, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workspace", type=Path, help="a prepared workspace (ganflow prepare: data and judge)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as ganflow pipeline --set")
    ap.add_argument("--every", type=int, default=4, help="epochs between scores")
    ap.add_argument("--threads", type=int, help="torch threads (default: train.cpus_per_worker, as the pipeline's "
                    "worker)")
    ap.add_argument("--out", type=Path, help="rows as JSON; the grid beside it as .png")
    args = ap.parse_args()
    t0 = time.time()
    from flows import params as params_mod
    from flows.data.load import load_manifest, load_split
    from flows.evaluate import Evaluator, judge_protocol
    from flows.run.identity import RunIdentity, resolve_model
    from flows.run.train import run_spec
    from gan_core.images import save_comparison_png
    from gan_core.training import Hooks, build, epoch_batches, fit, prepare_data

    ws = args.workspace
    params = params_mod.load(ws, args.set)
    torch.set_num_threads(args.threads or params.train.cpus_per_worker)
    model = resolve_model(params, load_manifest(ws))
    x, y = load_split(ws, "train")
    fresh = RunIdentity("recipe-probe", params.training_hash(), "")  # a new run's: this machine's speed, no parent
    spec = run_spec(params, model, fresh, "cpu", tuple(x.shape[1:]))
    parts = build(spec, tuple(x.shape[1:]))
    judge, (n, seed) = Evaluator(ws, "holdout"), judge_protocol(ws, params)
    rows: list[dict] = []
    trained = [0.0]

    class Probe(Hooks):
        def progress(self, p) -> None:
            print(f"epoch {p.done}/{p.end} {p.metrics['epoch_time_s']:.1f}s lr_g {p.metrics['lr_g']:.2g}", flush=True)

        def end_epoch(self, metrics: dict, done: int, state) -> None:
            trained[0] += metrics["epoch_time_s"]
            last = done == spec.epochs
            if done % args.every and not last:
                return
            m, fake = judge.measure(parts.evaluated, n, seed, full=last)
            row = {"epoch": done, "kimg": done * metrics["steps_g"] * spec.batch_size / 1000, "train_s": trained[0],
                   **{k: m[k] for k in ("fd", "fd_ratio", "class_coverage", "precision", "recall") if k in m}}
            rows.append(row)
            print("score", json.dumps(row), flush=True)
            if args.out:
                args.out.write_text(json.dumps({"set": args.set, "rows": rows}, indent=1))
                if last:
                    real, _ = load_split(ws, "holdout")
                    save_comparison_png(fake[:100], real[:100], args.out.with_suffix(".png"),
                                        labels=("generated (EMA)", "real (holdout)"))

    print(f"{params.recipe}, {' '.join(args.set) or 'as params.yaml'}: {spec.epochs} epochs, width {model.width}",
          flush=True)
    fit(spec, parts, epoch_batches(prepare_data(spec, x, y if model.conditional else None), spec.batch_size),
        Probe())
    print("\n" + table(["epoch", "images (k)", "training s", "FD ratio", "precision / recall"],
                       [[str(r["epoch"]), f"{r['kimg']:.0f}", f"{r['train_s']:.0f}", f"{r['fd_ratio']:.2f}",
                         f"{r['precision']:.2f} / {r['recall']:.2f}" if "precision" in r else ""] for r in rows]))
    print(footer(t0))


if __name__ == "__main__":
    main()
