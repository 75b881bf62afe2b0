"""GPU throughput (issue 7, benchmark 6, and the GPU half of benchmark 2): a DCGAN at 64x64 trained
with gan_core.steps.train_epoch, images/s of each setting vs the plain fp32 loop on the same device:

    fp32 | bf16 autocast | channels_last | torch.compile | all three | 1-worker TorchTrainer (fp32)

The loss is non-saturating (DCGAN's recipe): it has no gradient penalty, which under autocast would
need its own fp32 forward. Data are random images already on the device, so the numbers measure the
training step, not a data pipeline. Each setting: `--warmup` steps (compilation included there), then
`--steps` timed steps with the device synchronised at both ends.

    .venv/bin/python -m bench.gpu                     # on a GPU machine (the device tool)
    .venv/bin/python -m bench.gpu --quick --device cpu  # smoke run anywhere (tiny model, few steps)
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from bench.common import footer, table  # noqa: E402

SETTINGS = ("fp32", "bf16", "channels_last", "compile", "bf16+channels_last+compile")


def _build(device: str, width: int, size: int, setting: str):
    import torch

    from gan_core.config import LossConfig, ModelConfig, OptimConfig
    from gan_core.losses import GanLoss
    from gan_core.models import build_discriminator, build_generator
    from gan_core.recipes import resolve
    from gan_core.steps import build_optimizers

    torch.manual_seed(0)
    cfg = ModelConfig(arch="dcgan", width=width, z_dim=100)
    shape = (3, size, size)
    G, D = build_generator(cfg, shape).to(device), build_discriminator(cfg, shape).to(device)
    if "channels_last" in setting:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    loss_cfg = LossConfig(name="non-saturating")
    opt_g, opt_d = build_optimizers(G, D, resolve(loss_cfg, OptimConfig()))
    if "compile" in setting:
        # The optimisers hold the same parameters; only the forwards are compiled.
        G, D = torch.compile(G), torch.compile(D)
    return G, D, opt_g, opt_d, GanLoss(loss_cfg)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(setting: str, device: str, batch: int, width: int, size: int, warmup: int, steps: int) -> float:
    """Images per second (real images through D, one D and one G step each) of one setting."""
    import torch

    from gan_core.steps import train_epoch

    G, D, opt_g, opt_d, loss = _build(device, width, size, setting)
    fmt = torch.channels_last if "channels_last" in setting else torch.contiguous_format
    data = [torch.randn(batch, 3, size, size, device=device).clamp_(-1, 1).contiguous(memory_format=fmt)
            for _ in range(max(warmup, steps))]
    amp = (torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if "bf16" in setting
           else contextlib.nullcontext())
    gen = torch.Generator(device=device).manual_seed(0)
    with amp:
        train_epoch(G, D, data[:warmup], opt_g, opt_d, loss, gen=gen)
        _sync(device)
        started = time.perf_counter()
        m = train_epoch(G, D, data[:steps], opt_g, opt_d, loss, gen=gen)
        _sync(device)
    if m["nonfinite"]:
        raise RuntimeError(f"{setting}: NaN/Inf during the timed steps")
    return steps * batch / (time.perf_counter() - started)


def measure_torchtrainer(device: str, batch: int, width: int, size: int, warmup: int, steps: int) -> float:
    """The fp32 loop inside a 1-worker TorchTrainer (1 GPU when the device is cuda)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def loop(cfg: dict) -> dict:
        import ray.train
        import ray.train.torch

        dev = str(ray.train.torch.get_device())
        rate = measure("fp32", dev, cfg["batch"], cfg["width"], cfg["size"], cfg["warmup"], cfg["steps"])
        return {"images_per_s": rate}  # rank 0's return value reaches the driver

    root = str(Path(__file__).resolve().parents[1])  # so the worker can import bench.gpu's function
    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": root}})
    try:
        use_gpu = device.startswith("cuda")
        trainer = TorchTrainer(loop, train_loop_config=dict(batch=batch, width=width, size=size, warmup=warmup,
                                                            steps=steps),
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
    ap.add_argument("--size", type=int, default=64, choices=(8, 16, 32, 64))
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of {', '.join(SETTINGS)}")
    ap.add_argument("--no-ray", action="store_true", help="skip the TorchTrainer row")
    ap.add_argument("--quick", action="store_true", help="batch 8, width 8, 16 px, 2 warm-up + 3 timed steps")
    a = ap.parse_args(argv)
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if a.quick:
        a.batch, a.width, a.size, a.warmup, a.steps = 8, 8, 16, 2, 3
    settings = [s.strip() for s in a.settings.split(",") if s.strip()]
    for s in settings:
        if s not in SETTINGS:
            ap.error(f"unknown setting {s!r}; known: {', '.join(SETTINGS)}")
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    print(f"gpu bench on {name}: DCGAN {a.size}x{a.size}, width {a.width}, batch {a.batch}, "
          f"{a.warmup} warm-up + {a.steps} timed steps, torch {torch.__version__}", flush=True)
    results: dict[str, float | str] = {}
    for s in settings:
        try:
            results[s] = measure(s, device, a.batch, a.width, a.size, a.warmup, a.steps)
        except Exception as exc:  # noqa: BLE001 - e.g. no compiler for torch.compile: report, go on
            results[s] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        print(f"  {s}: {results[s] if isinstance(results[s], str) else f'{results[s]:.0f} images/s'}", flush=True)
    if not a.no_ray:
        results["TorchTrainer 1 worker (fp32)"] = measure_torchtrainer(device, a.batch, a.width, a.size,
                                                                       a.warmup, a.steps)
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
