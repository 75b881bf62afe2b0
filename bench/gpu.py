"""GPU throughput (issue 7, benchmark 6, and the GPU half of benchmark 2): a DCGAN at 64x64 trained with
the product's loop (gan_core.training.fit), images/s of each setting vs the plain fp32 loop on the same
device:

    fp32 | bf16 autocast | channels_last | torch.compile | all three | 1-worker TorchTrainer (fp32)

Each setting is a RunSpec field (precision="bf16", channels_last=True, compile=True), on the product's
`images-paper` recipe with the non-saturating loss (DCGAN's: its paper Adam, the recipe's EMA 0.999; no
gradient penalty, which under autocast would need its own fp32 forward) and this benchmark's model and
batch (DCGAN's z_dim 100, --width, --batch). Data are random images already on the device, so the numbers
measure the training loop, not a data pipeline. Each setting: a warm-up epoch of `--warmup` steps
(compilation included there), then `--epochs` epochs of `--steps` steps, timed from the end of the
warm-up epoch to the end of the last (the device synchronised at both ends, bench.fitting.EpochClock).

    .venv/bin/python -m bench.gpu                     # on a GPU machine (the device tool)
    .venv/bin/python -m bench.gpu --quick --device cpu  # smoke run anywhere (tiny model, few steps)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from bench.common import footer, table  # noqa: E402
from gan_core.sizes import NATIVE_SIZES  # noqa: E402

SETTINGS = ("fp32", "bf16", "channels_last", "compile", "bf16+channels_last+compile")


def setting_spec(setting: str, batch: int, width: int, epochs: int):
    """The RunSpec of one setting: a warm-up epoch and `epochs` timed ones."""
    from bench.fitting import recipe_spec

    return recipe_spec("images-paper", "non-saturating", model={"width": width, "z_dim": 100}, batch_size=batch,
                       epochs=1 + epochs, checkpoint_every=1 + epochs,
                       precision="bf16" if "bf16" in setting else "fp32", channels_last="channels_last" in setting,
                       compile="compile" in setting)


def measure(setting: str, device: str, batch: int, width: int, size: int, warmup: int, steps: int,
            epochs: int) -> float:
    """Images per second (real images through D, one D and one G step each) of one setting, over the timed
    epochs of fit."""
    import torch

    from bench.fitting import EpochClock, on_device
    from gan_core.training import build, fit

    spec = setting_spec(setting, batch, width, epochs)
    parts = build(spec, (3, size, size))
    on_device(parts, spec, device)
    data = [torch.randn(batch, 3, size, size, device=device).clamp_(-1, 1) for _ in range(max(warmup, steps))]
    clock = EpochClock(device)
    out = fit(spec, parts, lambda epoch: data[:warmup] if epoch == 0 else data[:steps], clock)
    if out.diverged_at is not None:
        raise RuntimeError(f"{setting}: NaN/Inf at epoch {out.diverged_at}")
    images = batch * sum(m["steps_d"] for m in clock.metrics[1:])
    return images / (clock.ends[-1] - clock.ends[0])


def measure_torchtrainer(device: str, batch: int, width: int, size: int, warmup: int, steps: int,
                         epochs: int) -> float:
    """The fp32 loop inside a 1-worker TorchTrainer (1 GPU when the device is cuda)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def loop(cfg: dict) -> dict:
        import ray.train
        import ray.train.torch

        dev = str(ray.train.torch.get_device())
        rate = measure("fp32", dev, cfg["batch"], cfg["width"], cfg["size"], cfg["warmup"], cfg["steps"],
                       cfg["epochs"])
        return {"images_per_s": rate}  # rank 0's return value reaches the driver

    root = str(Path(__file__).resolve().parents[1])  # so the worker can import bench.gpu's function
    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": root}})
    try:
        use_gpu = device.startswith("cuda")
        trainer = TorchTrainer(loop, train_loop_config=dict(batch=batch, width=width, size=size, warmup=warmup,
                                                            steps=steps, epochs=epochs),
                               scaling_config=ScalingConfig(num_workers=1, use_gpu=use_gpu),
                               run_config=RunConfig(storage_path=str(Path("/tmp/ganflow-bench-gpu").resolve())))
        return float(trainer.fit().return_value["images_per_s"])
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    t0 = time.time()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, help="cuda (default when there is one) or cpu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--width", type=int, default=64, help="DCGAN base channels")
    ap.add_argument("--size", type=int, default=64, choices=NATIVE_SIZES)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--steps", type=int, default=50, help="steps per timed epoch")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs (after the warm-up epoch)")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of {', '.join(SETTINGS)}")
    ap.add_argument("--no-ray", action="store_true", help="skip the TorchTrainer row")
    ap.add_argument("--quick", action="store_true",
                    help="batch 8, width 8, 16 px, a warm-up epoch of 2 steps, 2 timed epochs of 2 steps")
    a = ap.parse_args(argv)
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if a.quick:
        a.batch, a.width, a.size, a.warmup, a.steps, a.epochs = 8, 8, 16, 2, 2, 2
    settings = [s.strip() for s in a.settings.split(",") if s.strip()]
    for s in settings:
        if s not in SETTINGS:
            ap.error(f"unknown setting {s!r}; known: {', '.join(SETTINGS)}")
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    print(f"gpu bench on {name}: DCGAN {a.size}x{a.size}, width {a.width}, batch {a.batch}, "
          f"a warm-up epoch of {a.warmup} steps + {a.epochs} timed epochs of {a.steps}, gan_core.training.fit, "
          f"torch {torch.__version__}", flush=True)
    results: dict[str, float | str] = {}
    for s in settings:
        try:
            results[s] = measure(s, device, a.batch, a.width, a.size, a.warmup, a.steps, a.epochs)
        except Exception as exc:  # noqa: BLE001 - e.g. no compiler for torch.compile: report, go on
            results[s] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        print(f"  {s}: {results[s] if isinstance(results[s], str) else f'{results[s]:.0f} images/s'}", flush=True)
    if not a.no_ray:
        results["TorchTrainer 1 worker (fp32)"] = measure_torchtrainer(device, a.batch, a.width, a.size,
                                                                       a.warmup, a.steps, a.epochs)
    base = results.get("fp32")
    rows = []
    for s, v in results.items():
        if isinstance(v, str):
            rows.append([s, v, "-"])
        else:
            rows.append([s, f"{v:.0f}", f"{v / base:.2f}" if isinstance(base, float) else "-"])
    print("\n" + table(["setting", "images/s", "vs fp32 bare loop"], rows))
    print("\n" + footer(t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
