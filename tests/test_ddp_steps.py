"""Two CPU processes, gloo, DDP-wrapped G and D: the real distributed path of gan_core.steps.

DDP raises "Expected to have finished reduction in the prior iteration" on the *next* forward
when a step's backward missed parameters, so several steps per loss are needed to prove it."""
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from gan_core.config import LossConfig, ModelConfig
from gan_core.losses import GanLoss
from gan_core.models import build_discriminator, build_generator
from gan_core.steps import build_optimizers, train_epoch

WORLD = 2
CASES = [
    # (model, data shape, loss, n_critic)
    (ModelConfig(arch="dcgan", z_dim=8, width=4), (1, 8, 8), "non-saturating", 1),
    (ModelConfig(arch="dcgan", z_dim=8, width=4), (1, 8, 8), "wgan-gp", 2),
    (ModelConfig(arch="mlp", z_dim=4, width=16, depth=2), (2,), "wgan-gp", 2),
]
N_BATCHES = 4


def _flat(*modules: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for m in modules for p in m.parameters()])


def _worker(rank: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        for cfg, shape, loss_name, n_critic in CASES:
            # Different init and data per rank: only DDP's broadcast + all-reduce can keep them equal.
            torch.manual_seed(100 + rank)
            G = DDP(build_generator(cfg, shape))
            D = DDP(build_discriminator(cfg, shape))
            start = _flat(G, D)
            opt_g, opt_d = build_optimizers(G, D, 1e-3, 1e-3, (0.5, 0.9))
            batches = [torch.rand(6, *shape) * 2 - 1 for _ in range(N_BATCHES)]
            gen = torch.Generator().manual_seed(rank)
            loss = GanLoss(LossConfig(name=loss_name))
            m = train_epoch(G, D, batches, opt_g, opt_d, loss, n_critic=n_critic, gen=gen)

            assert m["steps_d"] == N_BATCHES and m["steps_g"] == N_BATCHES // n_critic, m
            assert all(torch.isfinite(torch.tensor(v)) for v in m.values()), m
            assert (m["gp"] > 0) == loss.is_critic, m
            # D params must require grad again after the G steps (g_step restores them).
            assert all(p.requires_grad for p in D.parameters())

            flat = _flat(G, D)
            assert not torch.equal(flat, start), "no parameter moved"
            gathered = [torch.empty_like(flat) for _ in range(WORLD)]
            dist.all_gather(gathered, flat)
            assert torch.equal(gathered[0], gathered[1]), (
                f"{loss_name}: ranks diverged, max diff {(gathered[0] - gathered[1]).abs().max()}"
            )
            # and a second epoch on the same wrappers: catches reduction left pending by the first
            train_epoch(G, D, batches[:2], opt_g, opt_d, loss, n_critic=n_critic, gen=gen)
    finally:
        dist.destroy_process_group()


def test_ddp_train_epoch_two_ranks():
    with tempfile.TemporaryDirectory() as tmp:
        init_file = str(Path(tmp) / "ddp_init")
        mp.spawn(_worker, args=(init_file,), nprocs=WORLD, join=True)
