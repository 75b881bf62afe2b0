"""The one training loop: a typed, frozen RunSpec in; epochs of gan_core.steps, the lr schedule, the
adaptive augmentation p, the EMA and the divergence stop inside; the probe, the progress report and the
checkpoint as hooks. The Ray worker (flows/run/worker.py: DDP, reports, checkpoints) and every benchmark
call `fit`, so what bench measures is what the product trains.

Epochs: `fit` counts 0-based epoch indices (a checkpoint's "epoch"); hooks get `done`, epochs completed.

Two ways a run ends before `epochs`: a time budget (the schedule, lr decay included, is shrunk to fit the
wall time measured on the first epochs; recorded in the history as SCHEDULE and kept by every resume) and
the stop rule (the probe's SCORE has not improved beyond the draw noise for a stretch of the decay)."""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DistributedSampler, RandomSampler

from gan_core.augment import AugmentConfig, adjust_p, mirror, resumed_p
from gan_core.checkpoint import training_state
from gan_core.config import LossConfig, ModelConfig, ResolvedOptim
from gan_core.ema import EMA
from gan_core.losses import GanLoss
from gan_core.models import build_discriminator, build_generator
from gan_core.schedules import lr_scale, progress, set_hyperparams
from gan_core.steps import build_optimizers, train_epoch, unwrap

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")

SCORE = "score"          # the key of a probe's selection value (lower is better), which the stop rule watches
SCHEDULE = "schedule_epochs"  # history key: the epochs a time budget fitted the schedule to (from then on)
FIT_AFTER = 2            # epochs timed before a time budget sizes the schedule (the first carries warm-up)
# A probe's Frechet ratio moves ~5% between draws of its 1,000 samples: a smaller gain is not an improvement.
PROBE_NOISE = 0.05


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides how a run trains, resolved once (flows.run.spec from params.yaml and the
    recipe; a benchmark directly). Nothing below reads a dict or restates a default."""

    model: ModelConfig          # concrete: arch, conditioning and class count resolved for the data
    loss: LossConfig
    optim: ResolvedOptim
    augment: AugmentConfig
    epochs: int                 # the run's length (train.epochs)
    batch_size: int             # global: split across DDP workers
    seed: int
    ema_decay: float = 0.999    # 0 = no EMA
    repeat: int = 1             # passes over the training set in one epoch (a small set, gan_core.recipes)
    mirror: bool = False        # x-flips doubled into the set (stylegan2-ada's --mirror)
    horizon: int | None = None  # epochs the lr schedule spans; None = epochs (a continued run: its parent's)
    stop_epoch: int | None = None  # end after this many epochs (a PBT segment); None = epochs
    checkpoint_every: int = 5
    probe_every: int = 0        # epochs between probes; 0 = never
    probe_budget: float = 0.1   # probes may cost at most this share of the training time (the last always runs)
    precision: Precision = "fp32"  # bf16: forwards under autocast; penalties' double backward stays fp32
    channels_last: bool = False
    compile: bool = False       # torch.compile of G's and D's forwards (in place: state dicts unchanged)
    r1_every: int = 1           # lazy R1 (StyleGAN2): on every k-th D step, weighted by k
    time_budget_s: float | None = None  # fit the schedule into this wall time (a fresh run, not a PBT segment)
    stop_patience: float | None = None  # stop when the decay has run this share of the schedule without a probe
                                        #   improving beyond PROBE_NOISE; None: never

    def __post_init__(self):
        for name in ("epochs", "batch_size", "repeat", "checkpoint_every", "r1_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"RunSpec.{name} must be >= 1, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"RunSpec.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.stop_epoch is not None and not 1 <= self.stop_epoch <= self.epochs:
            raise ValueError(f"RunSpec.stop_epoch must be in [1, {self.epochs}], got {self.stop_epoch}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"RunSpec.time_budget_s must be > 0, got {self.time_budget_s}")
        if self.stop_patience is not None and not 0 < self.stop_patience <= 1:
            raise ValueError(f"RunSpec.stop_patience must be in (0, 1], got {self.stop_patience}")
        if self.model.arch == "auto" or self.model.conditional == "auto":
            raise ValueError("RunSpec.model must be resolved for the data (no 'auto' arch or conditioning)")

    @property
    def schedule_epochs(self) -> int:
        return self.horizon or self.epochs

    @property
    def end(self) -> int:
        """Epochs completed when this call of `fit` ends."""
        return self.stop_epoch or self.epochs

    @property
    def amp(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None


@dataclass
class Parts:
    """What trains: G and D (possibly DDP-wrapped after `build`), their optimisers and the EMA of G."""

    G: nn.Module
    D: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: EMA | None
    data_shape: tuple[int, ...]

    @property
    def evaluated(self) -> nn.Module:
        """The generator a probe or an evaluation scores: the EMA when there is one."""
        return self.ema.module if self.ema is not None else unwrap(self.G)

    def state(self, spec: RunSpec, epoch: int, history: list[dict]) -> dict:
        return training_state(self.G, self.D, self.opt_g, self.opt_d, self.ema, epoch, history, spec.model,
                              self.data_shape)


def build(spec: RunSpec, data_shape: tuple[int, ...]) -> Parts:
    """Fresh G, D, optimisers and EMA, seeded by spec.seed: identical on every DDP rank."""
    torch.manual_seed(spec.seed)
    G, D = build_generator(spec.model, data_shape), build_discriminator(spec.model, data_shape)
    if spec.channels_last and len(data_shape) == 3:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    opt_g, opt_d = build_optimizers(G, D, spec.optim)
    ema = EMA(G, spec.ema_decay) if spec.ema_decay > 0 else None
    if spec.compile:
        G.compile()  # in place: parameter names (so checkpoints) stay as eager ones
        D.compile()
    return Parts(G, D, opt_g, opt_d, ema, tuple(data_shape))


def prepare_data(spec: RunSpec, x: Tensor, y: Tensor | None = None) -> list[Tensor]:
    """The tensors an epoch passes over: mirrored if asked, repeated `spec.repeat` times."""
    tensors = [x] if y is None else [x, y]
    if x.dim() != 4 and (spec.augment.policy != "off" or spec.mirror):
        raise ValueError(f"augment/mirror need image data; this data has shape {tuple(x.shape[1:])}")
    if spec.mirror:
        tensors = mirror(*tensors)
    if spec.repeat > 1:  # a small set, repeated so an epoch has the recipe's G steps (gan_core.recipes)
        tensors = [v.repeat(spec.repeat, *[1] * (v.dim() - 1)) for v in tensors]
    return tensors


def whole_batches(n: int, batch_size: int) -> bool:
    """Whether an epoch over `n` items (a rank's shard) drops its ragged last batch: equal batches, since a
    ragged one skews D's statistics, unless the shard is smaller than one batch."""
    return n >= batch_size


def images_per_epoch(n: int, batch_size: int) -> int:
    """Items one process's epoch over `n` items shows (whole_batches)."""
    return n // batch_size * batch_size if whole_batches(n, batch_size) else n


def epoch_batches(tensors: list[Tensor], batch_size: int, rank: int = 0, world: int = 1) -> Callable[[int], Iterable]:
    """`batches(epoch)`: this rank's shuffled pass over `tensors`, in whole batches gathered by index on the
    tensors' own device (a GPU run keeps its set there; no per-item indexing and stacking). One process: a
    RandomSampler, which draws its order from the global RNG that `fit` seeds per epoch. DDP: the
    DistributedSampler Ray Train's prepare_data_loader would add (seed 0, set_epoch each epoch)."""
    n = len(tensors[0])
    sampler = RandomSampler(range(n)) if world == 1 else DistributedSampler(
        range(n), num_replicas=world, rank=rank, shuffle=True)
    index = BatchSampler(sampler, batch_size, drop_last=whole_batches(math.ceil(n / world), batch_size))

    def batches(epoch: int) -> Iterable[tuple[Tensor, ...]]:
        if world > 1:
            sampler.set_epoch(epoch)
        return _gather(tensors, index)
    return batches


def _gather(tensors: list[Tensor], index: BatchSampler) -> Iterator[tuple[Tensor, ...]]:
    # The draw a DataLoader makes for its workers' base seed, kept so that a seed trains the same weights
    # as the DataLoader this replaced.
    torch.empty((), dtype=torch.int64).random_()
    for idx in index:
        i = torch.as_tensor(idx)
        yield tuple(t[i] for t in tensors)


@dataclass
class Progress:
    """What the progress hook gets after each epoch (wall times of this call of `fit`)."""

    done: int          # epochs completed
    end: int           # epochs completed when this call ends
    total: int         # the run's epochs
    epoch_s: float     # this epoch's training time
    elapsed_s: float   # since `fit` started, probes and checkpoints included
    eta_s: float       # remaining epochs at the mean wall time of the epochs so far
    metrics: dict[str, float]
    finite: bool
    first: bool        # the first epoch of this call: the time the whole run will take is known from here
    fitted: bool = False  # this epoch sized the schedule to the time budget (total is the fitted length)
    stopped: bool = False  # the stop rule ended the run here


class Hooks:
    """What `fit` calls around the science; the defaults do nothing. The Ray worker's hooks do DDP's
    averaging, the probe on the validation split, Ray's reports and checkpoints."""

    def reduce(self, metrics: dict[str, float]) -> dict[str, float]:
        """An epoch's metrics made identical on every rank (DDP: averaged)."""
        return metrics

    def probe(self, G: nn.Module, done: int) -> dict[str, float] | None:
        """Quality of `G` (the EMA if any) as training goes: metrics to add to the epoch's, or None."""
        return None

    def progress(self, p: Progress) -> None:
        pass

    def end_epoch(self, metrics: dict[str, float], done: int, state: dict | None) -> None:
        """After each epoch: `state` is the training state when a checkpoint is due, else None."""


@dataclass
class Outcome:
    history: list[dict] = field(default_factory=list)
    diverged_at: int | None = None  # epochs completed when a NaN/Inf stopped the run
    state: dict | None = None       # the last training state handed to end_epoch
    schedule_epochs: int | None = None  # what a time budget fitted the schedule to
    stopped_at: int | None = None   # epochs completed when the stop rule ended the run


def _seed_epoch(spec: RunSpec, epoch: int, rank: int) -> torch.Generator:
    # Per-(epoch, rank) seeds: a resumed run draws the same noise and batches as an uninterrupted one.
    seed = spec.seed * 1_000_003 + epoch * 1009 + rank
    torch.manual_seed(seed)
    return torch.Generator(device="cpu").manual_seed(seed)


def fit(spec: RunSpec, parts: Parts, batches: Callable[[int], Iterable], hooks: Hooks | None = None,
        start_epoch: int = 0, history: list[dict] | None = None, rank: int = 0, world: int = 1) -> Outcome:
    """Train epochs start_epoch .. spec.end - 1 (fewer under a time budget or the stop rule). `batches(epoch)`
    gives the epoch's (x,) or (x, y) batches (this rank's shard under DDP); `history` is the resumed run's
    (it carries the adaptive p, the fitted schedule and the stop rule's best probe)."""
    hooks = hooks or Hooks()
    history = list(history or [])
    loss = GanLoss(spec.loss)
    p = resumed_p(spec.augment, history)
    per_worker = max(1, spec.batch_size // world)
    d_steps = int(sum(h.get("steps_d", 0) for h in history))  # lazy R1 continues its count on resume
    fitted = recorded_schedule(history)  # a resume keeps the schedule its run was fitted to, on any machine
    epochs, horizon = (fitted, fitted) if fitted else (spec.epochs, spec.schedule_epochs)
    end = min(spec.end, epochs)
    stop = _StopRule(spec, history)
    started, probe_s, out = time.perf_counter(), 0.0, Outcome(history, schedule_epochs=fitted)
    walls: list[float] = []  # each epoch's wall time in this call, probes and checkpoints included
    trained: list[float] = []  # each epoch's training time in this call (what a time budget sizes by)
    epoch = start_epoch
    while epoch < end:  # not a range: a time budget may shorten the run (end) after its first epochs
        done = epoch + 1
        t0 = time.perf_counter()
        # Every epoch: the schedule's lr, and after a restore the configured (PBT: mutated) values rather
        # than the ones the loaded optimiser state carries.
        set_hyperparams(parts.opt_g, parts.opt_d, spec.optim, lr_scale(spec.optim, progress(epoch, horizon)))
        gen = _seed_epoch(spec, epoch, rank)
        metrics = train_epoch(parts.G, parts.D, batches(epoch), parts.opt_g, parts.opt_d, loss,
                              n_critic=spec.optim.n_critic, gen=gen, conditional=spec.model.conditional,
                              ema=parts.ema, augment=spec.augment.pipeline(p), amp=spec.amp,
                              r1_every=spec.r1_every, step0=d_steps, channels_last=spec.channels_last)
        metrics = hooks.reduce(metrics)
        d_steps += int(metrics["steps_d"])
        metrics["lr_g"], metrics["lr_d"] = parts.opt_g.param_groups[0]["lr"], parts.opt_d.param_groups[0]["lr"]
        metrics["epoch_time_s"] = time.perf_counter() - t0
        metrics["epoch_end_unix"] = time.time()  # wall clock incl. reports/checkpoints (bench/overhead.py)
        metrics["epoch"] = epoch
        trained.append(metrics["epoch_time_s"])
        if spec.augment.policy == "adaptive" and metrics.get("nonfinite", 0.0) == 0.0:
            # From rank-averaged values only, so every rank steps p identically (no extra collective).
            p = adjust_p(p, metrics["d_sign_real"], metrics["steps_d"] * per_worker * world, spec.augment)
        if spec.augment.policy != "off":
            metrics["augment_p"] = p  # after this epoch's step: the p the next epoch (or a resume) uses
        finite = metrics.get("nonfinite", 0.0) == 0.0 and all(math.isfinite(v) for v in metrics.values())
        metrics["nonfinite"] = 0.0 if finite else 1.0
        just_fitted = fitted is None and _budget_applies(spec) and done - start_epoch == FIT_AFTER
        if just_fitted:
            # Sized once, from this machine's speed; every rank takes the same (rank-averaged) answer.
            elapsed = time.perf_counter() - started
            fitted = round(hooks.reduce({"n": float(fit_schedule(spec, done, elapsed, trained))})["n"])
            epochs, horizon, end = fitted, fitted, min(end, fitted)
            out.schedule_epochs = fitted
        if fitted is not None:
            metrics[SCHEDULE] = float(fitted)
        last = done in (end, epochs)
        # The probe: every probe_every epochs while probes stay within their share of the training time.
        if finite and spec.probe_every and (last or (done % spec.probe_every == 0
                                                     and probe_s <= spec.probe_budget * sum(trained))):
            t1 = time.perf_counter()
            found = hooks.probe(parts.evaluated, done)
            probe_s += time.perf_counter() - t1
            if found:
                metrics.update(found)
                if not last and stop.should_stop(found.get(SCORE), done, horizon):
                    out.stopped_at, last = done, True
        history.append(metrics)
        elapsed = time.perf_counter() - started
        walls.append(elapsed - sum(walls))
        # The ETA from the recent epochs' wall time: the first carries one-time costs (warm-up, the
        # first probe) and the machine's load changes over a long run.
        recent = walls[1:][-10:] or walls
        remaining = 0 if out.stopped_at else end - done
        hooks.progress(Progress(done, done if out.stopped_at else end, epochs, metrics["epoch_time_s"], elapsed,
                                sum(recent) / len(recent) * remaining, dict(metrics), finite,
                                epoch == start_epoch, just_fitted, bool(out.stopped_at)))
        if not finite:
            # A NaN/Inf poisons every later step: stop, keep the last good checkpoint (the caller marks
            # the run failed from `diverged_at`).
            hooks.end_epoch(metrics, done, None)
            out.diverged_at = done
            break
        due = done % spec.checkpoint_every == 0 or last
        out.state = parts.state(spec, epoch, history) if due else None
        hooks.end_epoch(metrics, done, out.state)
        if out.stopped_at:
            break
        epoch += 1
    return out


def recorded_schedule(history: list[dict]) -> int | None:
    """The epochs a time budget fitted this run's schedule to, once it has (None: not fitted)."""
    for h in reversed(history):
        if SCHEDULE in h:
            return int(h[SCHEDULE])
    return None


def _budget_applies(spec: RunSpec) -> bool:
    # A PBT segment or a continued run has its schedule from elsewhere (the search, the parent run).
    return spec.time_budget_s is not None and spec.stop_epoch is None and spec.horizon is None


def fit_schedule(spec: RunSpec, done: int, elapsed_s: float, epoch_times: list[float]) -> int:
    """Epochs (the whole run's, lr decay included) that fit spec.time_budget_s, given `done` epochs took
    `elapsed_s` of wall time: the later epochs cost their mean training time (the first is warm-up) plus
    the probes' share of it; never more than spec.epochs, never fewer than done + 1."""
    times = epoch_times[1:] or epoch_times
    per_epoch = sum(times) / len(times) * (1 + (spec.probe_budget if spec.probe_every else 0.0)) * 1.03  # + reports
    more = math.floor(max(0.0, spec.time_budget_s - elapsed_s) / max(per_epoch, 1e-9))
    return int(max(done + 1, min(spec.epochs, done + more)))


class _StopRule:
    """Stop when the lr decay has been on for `stop_patience` of the schedule and, over the last such
    stretch, no probe beat the best by more than PROBE_NOISE: the decay is where a run still improves, so a
    flat stretch inside it means the rest would not (issue 27: at 32 px the best came long before the end)."""

    def __init__(self, spec: RunSpec, history: list[dict]):
        self.spec, self.best, self.best_at = spec, math.inf, 0
        for h in history:  # a resumed run picks its best up where it was
            self._see(h.get(SCORE), int(h["epoch"]) + 1)

    def _see(self, score: float | None, done: int) -> None:
        if score is not None and math.isfinite(score) and score < self.best * (1 - PROBE_NOISE):
            # Gains within the noise neither count nor move the bar: five 3% steps are one real gain.
            self.best, self.best_at = score, done

    def should_stop(self, score: float | None, done: int, horizon: int) -> bool:
        self._see(score, done)
        if self.spec.stop_patience is None or self.spec.optim.lr_decay_start is None:
            return False
        stretch = max(1, math.ceil(self.spec.stop_patience * horizon))
        decay_from = self.spec.optim.lr_decay_start * horizon
        return done - max(decay_from, self.best_at) >= stretch


def format_duration(seconds: float) -> str:
    """4s, 3m20s, 1h05m: the unit a person plans by."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def progress_line(p: Progress, bar: bool = False, width: int = 20) -> str:
    """`epoch 3/200 [##..] 1% elapsed 6s ETA 6m54s`: with a bar for a terminal, plain for a log."""
    share = p.done / p.total
    drawn = f" [{'#' * round(share * width):.<{width}}] {share:4.0%}" if bar else ""
    return f"epoch {p.done}/{p.total}{drawn} elapsed {format_duration(p.elapsed_s)} ETA {format_duration(p.eta_s)}"


def estimate_line(p: Progress) -> str:
    """Said once, after the first epoch: how long the whole call will take here."""
    minutes = p.eta_s / 60 + p.elapsed_s / 60
    about = f"{minutes:.0f} min" if minutes >= 1.5 else f"{max(1, round(minutes * 60))} s"
    return (f"estimate: about {about} for {p.end - p.done + 1} epochs on this machine "
            f"({p.epoch_s:.1f}s an epoch)")


# Below this image side the step is dominated by per-op overhead, and neither bf16 nor NHWC pays (bench/speed.py).
FAST_MIN_SIDE = 32


def bf16_fast(device_type: str) -> bool:
    """Whether bf16 runs natively here: a CUDA card with bf16, or a CPU with AVX-512 BF16 / AMX. Elsewhere
    autocast emulates it, slower than fp32."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_speed(precision: str, channels_last: str | bool, device_type: str,
                  data_shape: tuple[int, ...]) -> tuple[Precision, bool]:
    """`auto` made concrete for this device and data: (precision, channels_last)."""
    big_images = len(data_shape) == 3 and data_shape[-1] >= FAST_MIN_SIDE
    if precision == "auto":
        precision = "bf16" if big_images and bf16_fast(device_type) else "fp32"
    if channels_last == "auto":
        channels_last = big_images
    return precision, bool(channels_last) and len(data_shape) == 3  # type: ignore[return-value]


# StyleGAN2's interval. Measured on images (8 px digits, 3 seeds; 32 px digits): quality within the draw
# noise of R1 on every step, the step 1.43x as fast at 32 px (bench/RESULTS.md section 9). Points keep R1
# on every step: their recipes were measured so, and an MLP's double backward is cheap.
LAZY_R1 = 16


def resolve_r1_every(r1_every: int | str, data_shape: tuple[int, ...]) -> int:
    """`auto` made concrete: lazy R1 for images, every D step for points."""
    if r1_every == "auto":
        return LAZY_R1 if len(data_shape) == 3 else 1
    return int(r1_every)

