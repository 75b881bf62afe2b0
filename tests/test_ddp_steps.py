"""Two CPU processes, gloo, DDP-wrapped G and D: the real distributed path of gan_core.steps.

DDP raises "Expected to have finished reduction in the prior iteration" on the *next* forward
when a step's backward missed parameters, so several steps per loss are needed to prove it."""
import datetime
import math
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from gan_core.config import LossConfig, ModelConfig, ResolvedOptim
from gan_core.losses import GanLoss
from gan_core.models import build_discriminator, build_generator
from gan_core.steps import build_optimizers, train_epoch

WORLD = 2
N_BATCHES = 4
ADAM = ResolvedOptim("adam", 1e-3, 1e-3, (0.5, 0.9), 1)
MLP = ModelConfig(arch="mlp", z_dim=4, width=16, depth=2)
DCGAN = ModelConfig(arch="dcgan", z_dim=8, width=4)


class CondG(nn.Module):
    """Stub class-conditional generator (the real ones are models.py's business)."""

    def __init__(self, z_dim: int = 4, classes: int = 3, dim: int = 2) -> None:
        super().__init__()
        self.z_dim, self.classes = z_dim, classes
        self.inp, self.emb, self.out = nn.Linear(z_dim, 16), nn.Embedding(classes, 16), nn.Linear(16, dim)

    def sample_z(self, n, device=None, generator=None):
        return torch.randn(n, self.z_dim, generator=generator).to(device or "cpu")

    def sample_labels(self, n, device=None, generator=None):
        return torch.randint(self.classes, (n,), generator=generator).to(device or "cpu")

    def forward(self, z, y):
        return self.out(torch.relu(self.inp(z) + self.emb(y)))


class CondD(nn.Module):
    def __init__(self, classes: int = 3, dim: int = 2) -> None:
        super().__init__()
        self.inp, self.emb, self.out = nn.Linear(dim, 16), nn.Embedding(classes, 16), nn.Linear(16, 1)

    def forward(self, x, y):
        return self.out(nn.functional.leaky_relu(self.inp(x) + self.emb(y), 0.2)).squeeze(1)


def models(cfg: ModelConfig | None, shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    if cfg is None:
        return CondG(), CondD()
    return build_generator(cfg, shape), build_discriminator(cfg, shape)


CASES = [
    # (model config or None for the conditional stubs, data shape, loss, optimiser, n_critic)
    (DCGAN, (1, 8, 8), LossConfig(name="non-saturating"), ADAM, 1),
    (DCGAN, (1, 8, 8), LossConfig(name="wgan-gp"), ADAM, 2),
    (MLP, (2,), LossConfig(name="wgan"), ResolvedOptim("rmsprop", 1e-3, 1e-3, (0.5, 0.9), 2), 2),
    (MLP, (2,), LossConfig(name="hinge", r1_gamma=1.0), ADAM, 1),
    (None, (2,), LossConfig(name="f-js", gp_weight=1.0, r1_gamma=1.0), ADAM, 1),
]


def _flat(*modules: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for m in modules for p in m.parameters()])


def _same_on_all_ranks(t: torch.Tensor) -> bool:
    gathered = [torch.empty_like(t) for _ in range(WORLD)]
    dist.all_gather(gathered, t)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


def _batches(shape, conditional: bool, n: int = N_BATCHES):
    xs = [torch.rand(6, *shape) * 2 - 1 for _ in range(n)]
    return [(x, torch.randint(3, (6,))) for x in xs] if conditional else xs


def _worker(rank: int, init_file: str) -> None:
    torch.set_num_threads(1)
    # A short timeout turns a rank left waiting in a collective into a failure, not a hang.
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        for cfg, shape, loss_cfg, optim, n_critic in CASES:
            # Different init and data per rank: only DDP's broadcast + all-reduce can keep them equal.
            torch.manual_seed(100 + rank)
            conditional = cfg is None
            g, d = models(cfg, shape)
            G, D = DDP(g), DDP(d)
            start = _flat(G, D)
            opt_g, opt_d = build_optimizers(G, D, optim)
            batches = _batches(shape, conditional)
            gen = torch.Generator().manual_seed(rank)
            loss = GanLoss(loss_cfg)
            m = train_epoch(G, D, batches, opt_g, opt_d, loss, n_critic=n_critic, gen=gen,
                            conditional=conditional)
            what = repr(loss)

            assert m["steps_d"] == N_BATCHES and m["steps_g"] == N_BATCHES // n_critic, (what, m)
            assert all(math.isfinite(v) for v in m.values()) and m["nonfinite"] == 0.0, (what, m)
            assert (m["gp"] > 0) == loss.uses_gp and (m["r1"] > 0) == loss.uses_r1, (what, m)
            if loss.clip:
                assert all(p.abs().max() <= loss.clip for p in D.parameters()), what
            # D params must require grad again after the G steps (g_step restores them).
            assert all(p.requires_grad for p in D.parameters())

            flat = _flat(G, D)
            assert not torch.equal(flat, start), f"{what}: no parameter moved"
            assert _same_on_all_ranks(flat), f"{what}: ranks diverged"
            # and a second epoch on the same wrappers: catches reduction left pending by the first
            train_epoch(G, D, batches[:2], opt_g, opt_d, loss, n_critic=n_critic, gen=gen,
                        conditional=conditional)
            assert _same_on_all_ranks(_flat(G, D)), f"{what}: ranks diverged in epoch 2"

        # Non-finite loss on ONE rank (NaN data in its 2nd batch): every rank must stop at the end of
        # that same batch, or the others would wait in their next all-reduce for a rank that has left.
        torch.manual_seed(100 + rank)
        G, D = (DDP(m) for m in models(MLP, (2,)))
        batches = _batches((2,), False)
        if rank == 0:
            batches[1][0, 0] = float("nan")
        m = train_epoch(G, D, batches, *build_optimizers(G, D, ADAM), GanLoss(LossConfig()))
        assert m["nonfinite"] == 1.0 and m["steps_d"] == 2 and m["steps_g"] == 2, (rank, m)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_train_epoch_two_ranks():
    with tempfile.TemporaryDirectory() as tmp:
        init_file = str(Path(tmp) / "ddp_init")
        mp.spawn(_worker, args=(init_file,), nprocs=WORLD, join=True)
