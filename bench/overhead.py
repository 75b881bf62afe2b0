"""What distribution and orchestration cost next to the training itself (issue 7, benchmarks 1-3).

1. Ray Train overhead: the default digits DCGAN, same run spec (flows.run.train.run_spec: data, batch,
   epochs, schedule), as the product's loop in this process without Ray (gan_core.training.fit, 1 thread)
   vs a 1-worker TorchTrainer (flows.run.train.fit, 1 CPU).
   Steady state = wall time per epoch between epoch ends after the first (reports included);
   start-up = from fit() to the end of the first epoch, minus that epoch's compute.
2. Worker scaling on this machine: 1 worker x 2 threads vs 2 workers x 1 thread (DDP), same global
   batch; ratio = throughput(2 x 1) / throughput(1 x 2).
3. Pipeline overhead: `ganflow pipeline --new-run` with 1 training epoch in a workspace whose data,
   classifier and Prefect database are already built (warm caches), vs its compute (the epoch's
   training and the evaluation); the difference is the fixed cost of the orchestration.

    .venv/bin/python -m bench.overhead               # 12 epochs per training, ~5 min on 2 cores
    .venv/bin/python -m bench.overhead --epochs 4    # quick
    .venv/bin/python -m bench.overhead --only-pipeline --repeat 3   # part 3 alone, median of 3
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from bench.common import footer, last_pipeline, make_workspace, run_ganflow, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _workspace(parent: Path) -> Path:
    return make_workspace(parent / "ws")


def _steady(history: list[dict]) -> float:
    ends = [h["epoch_end_unix"] for h in history]
    return (ends[-1] - ends[0]) / (len(ends) - 1)


def _run_params(params, workers: int, cpus: int):
    """params as a run of `workers` x `cpus`, one checkpoint (at the end)."""
    return params.model_copy(update={"train": params.train.model_copy(
        update={"num_workers": workers, "cpus_per_worker": cpus, "checkpoint_every": params.train.epochs})})


def bare_loop(params, paths, ws: Path, threads: int) -> dict:
    """The run a 1-worker TorchTrainer trains (its RunSpec, model, data and batches), through
    gan_core.training.fit in this process, without Ray: per-epoch wall times."""
    import torch

    from flows.data.load import load_manifest, load_split
    from flows.run.identity import resolve_model, run_identity
    from flows.run.train import run_spec
    from gan_core.training import build, fit, epoch_batches, prepare_data

    torch.set_num_threads(threads)
    p = _run_params(params, 1, threads)
    x, y = load_split(ws, "train")
    identity = run_identity(p, f"bench-bare-{threads}", paths, new_run=True)
    spec = run_spec(p, resolve_model(p, load_manifest(ws)), identity, "cpu", tuple(x.shape[1:]))
    parts = build(spec, tuple(x.shape[1:]))
    batches = epoch_batches(prepare_data(spec, x, y if spec.model.conditional else None), spec.batch_size)
    out = fit(spec, parts, batches)
    return {"epoch_s": _steady(out.history)}


def ray_fit(params, paths, workers: int, cpus: int) -> dict:
    from flows.run.identity import run_identity
    from flows.run.train import fit

    p = _run_params(params, workers, cpus)
    identity = run_identity(p, f"bench-{workers}x{cpus}", paths, new_run=True)
    started = time.time()
    out = fit(p, paths, identity)
    h = out.history
    first_end = h[0]["epoch_end_unix"]
    return {"epoch_s": _steady(h), "startup_s": first_end - h[0]["epoch_time_s"] - started,
            "wall_s": time.time() - started}


ONE_EPOCH = ("--set", "train.epochs=1", "--set", "train.num_workers=1")


def pipeline_overhead(ws: Path, repeat: int = 1) -> dict:
    """The median of `repeat` measured runs (one run's spread on a 2-core box is +-1-2 s)."""
    # Warm: data, classifier, DVC cache, Prefect's database.
    run_ganflow(ws, "pipeline", *ONE_EPOCH)
    runs = sorted((_measured_pipeline(ws) for _ in range(repeat)), key=lambda r: r["overhead_s"])
    return {**runs[len(runs) // 2], "all_overheads_s": [round(r["overhead_s"], 1) for r in runs]}


def _measured_pipeline(ws: Path) -> dict:
    wall = run_ganflow(ws, "pipeline", "--new-run", *ONE_EPOCH)  # --set is per run: the same values each time
    summary, history = last_pipeline(ws)
    train_compute = sum(h["epoch_time_s"] for h in history)
    stages = summary["timings_s"]
    compute = train_compute + stages["evaluate"]
    return {"wall_s": wall, "stages": stages, "train_compute_s": train_compute, "compute_s": compute,
            "overhead_s": wall - compute}


def _print_pipeline(pipe: dict) -> None:
    print(f"Pipeline: wall {pipe['wall_s']:.1f} s, compute {pipe['compute_s']:.1f} s (training "
          f"{pipe['train_compute_s']:.1f}, evaluation {pipe['stages']['evaluate']:.1f}) -> fixed overhead "
          f"{pipe['overhead_s']:.1f} s (goal <= 30; median of {pipe['all_overheads_s']}); stage wall times "
          f"{pipe['stages']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=None,
                    help="global batch for parts 1-2 (default: params.yaml's); more compute per step and collective")
    ap.add_argument("--no-pipeline", action="store_true", help="skip part 3")
    ap.add_argument("--only-pipeline", action="store_true", help="part 3 alone")
    ap.add_argument("--repeat", type=int, default=1, help="part 3: measured pipeline runs, median reported")
    args = ap.parse_args()
    if args.only_pipeline:
        t0, tmp = time.time(), Path(tempfile.mkdtemp(prefix="ganflow-bench-"))
        _print_pipeline(pipeline_overhead(_workspace(tmp), args.repeat))
        print("\n" + footer(t0))
        shutil.rmtree(tmp, ignore_errors=True)
        return
    t0 = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="ganflow-bench-"))
    ws = _workspace(tmp)
    from flows.env import configure

    paths = configure(ws)
    from flows import params as params_mod
    from flows.data import stages
    from flows.run import ray_runtime

    params_mod.write_overrides(ws, [f"train.epochs={args.epochs}", "eval.every=0"]
                               + ([f"train.batch_size={args.batch}"] if args.batch else []))
    params = params_mod.load(ws)
    stages.prepare(params, ws)

    print(f"1/3 bare loop vs 1-worker TorchTrainer ({args.epochs} epochs of digits, batch {params.train.batch_size})",
          flush=True)
    bare1 = bare_loop(params, paths, ws, 1)
    try:
        ray1 = ray_fit(params, paths, 1, 1)
        print("2/3 worker scaling: 1 x 2 threads vs 2 x 1 thread", flush=True)
        ray12 = ray_fit(params, paths, 1, 2)
        ray21 = ray_fit(params, paths, 2, 1)
    finally:
        ray_runtime.shutdown()
    bare2 = bare_loop(params, paths, ws, 2)

    pipe = None
    if not args.no_pipeline:
        print("3/3 pipeline overhead (warm caches)", flush=True)
        pws = _workspace(tmp / "pipe")
        pipe = pipeline_overhead(pws, args.repeat)

    n = len(__import__("flows.data.load", fromlist=["load_split"]).load_split(ws, "train")[0])
    rows = [
        ["bare loop, 1 thread", f"{bare1['epoch_s']:.3f}", f"{n / bare1['epoch_s']:.0f}", "-", "1.00"],
        ["TorchTrainer 1 worker x 1 CPU", f"{ray1['epoch_s']:.3f}", f"{n / ray1['epoch_s']:.0f}",
         f"{ray1['startup_s']:.1f}", f"{bare1['epoch_s'] / ray1['epoch_s']:.2f}"],
        ["bare loop, 2 threads", f"{bare2['epoch_s']:.3f}", f"{n / bare2['epoch_s']:.0f}", "-",
         f"{bare1['epoch_s'] / bare2['epoch_s']:.2f}"],
        ["TorchTrainer 1 worker x 2 CPUs", f"{ray12['epoch_s']:.3f}", f"{n / ray12['epoch_s']:.0f}",
         f"{ray12['startup_s']:.1f}", f"{bare1['epoch_s'] / ray12['epoch_s']:.2f}"],
        ["TorchTrainer 2 workers x 1 CPU (DDP)", f"{ray21['epoch_s']:.3f}", f"{n / ray21['epoch_s']:.0f}",
         f"{ray21['startup_s']:.1f}", f"{bare1['epoch_s'] / ray21['epoch_s']:.2f}"],
    ]
    print("\n" + table(["training", "s/epoch (steady)", "images/s", "start-up s", "speed vs bare 1 thread"], rows))
    print(f"\nRay Train overhead: steps/s ratio TorchTrainer/bare = {bare1['epoch_s'] / ray1['epoch_s']:.3f} "
          "(goal >= 0.95)")
    print(f"Worker scaling: throughput(2 workers x 1) / throughput(1 worker x 2) = "
          f"{ray12['epoch_s'] / ray21['epoch_s']:.3f} (goal >= 0.9)")
    if pipe:
        _print_pipeline(pipe)
    print("\n" + footer(t0))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
