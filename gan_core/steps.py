"""Alternating D / G training steps that are safe under DistributedDataParallel.

DDP all-reduces gradients from hooks armed by each forward of the wrapped module, and errors
("Expected to have finished reduction in the prior iteration") when a forward is not followed
by a backward reaching every parameter. So: the wrapped D runs exactly once per D step (real,
fake and GP interpolates in one batch, R1 and GP gradients taken from that same forward), the
wrapped G runs exactly once per G step, and every other forward goes through the unwrapped
module, outside DDP's bookkeeping.

Conditioning: a step is class-conditional exactly when it is given labels; models are then
called as G(z, y=...) / D(x, y=...). Unconditional calls pass no `y` at all.

Augmentation (gan_core.augment): given an `augment`, D never sees a raw image: real and fake rows
are augmented (with the step's `gen`) before the one D forward, and G's fakes before G's D call,
differentiably, so G learns through the ops. None is exactly the unaugmented step.

Speed options, each off by default (off is today's fp32 eager step, bit for bit):
  amp            the G and D forwards run under torch.autocast(<device type>, amp), e.g. torch.bfloat16;
                 everything between them (augmentation, the losses, on scores cast back with .float())
                 runs in fp32, and parameters, gradients and optimiser state stay fp32 (same checkpoint).
                 A D step that takes a penalty's double backward (R1, a GP) runs entirely in fp32.
  r1_every       lazy R1 (StyleGAN2, Karras et al. 2020, "lazy regularization"): the D step with global
                 index i takes R1 only when i % r1_every == 0, weighted by r1_every so the penalty's
                 average is unchanged; the other D steps skip the double backward (and may use amp).
  channels_last  real batches are made channels_last (to_device) for G / D converted with
                 module.to(memory_format=torch.channels_last).
  compiled nets  G / D compiled in place (module.compile(), before any DDP wrapping: state_dict keys
                 unchanged) train as they are, except that a D step with a penalty runs D eagerly
                 (torch.compile has no double backward).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Adam, Optimizer, RMSprop

from gan_core.augment import Augment, overfit_signal
from gan_core.config import ResolvedOptim
from gan_core.ema import EMA
from gan_core.losses import GanLoss
from gan_core.regularisers import clip_weights_, interpolate

SATURATION_LOGIT = 10.0  # |logit| > 10 means sigmoid within 5e-5 of 0/1: gradients have died.


def unwrap(m: nn.Module) -> nn.Module:
    """The bare module inside a DDP (or DataParallel) wrapper; the module itself otherwise."""
    return getattr(m, "module", m)


def grad_norm(module: nn.Module) -> float:
    """Total L2 norm of all parameter gradients (a vanishing/exploding-gradient signal)."""
    norms = [p.grad.detach().norm(2) for p in module.parameters() if p.grad is not None]
    if not norms:
        return 0.0
    return float(torch.stack(norms).norm(2))


def _device_of(m: nn.Module) -> torch.device:
    return next(unwrap(m).parameters()).device


def _call(m: nn.Module, x: Tensor, labels: Tensor | None) -> Tensor:
    return m(x) if labels is None else m(x, y=labels)


def to_device(x: Tensor, device: torch.device | str, channels_last: bool = False) -> Tensor:
    """A batch of images (or points) on `device`; NCHW batches in channels_last memory when asked, to match
    modules converted with module.to(memory_format=torch.channels_last)."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def _autocast(device: torch.device | str, amp: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `amp` on the device's type around a forward; None: nothing (fp32)."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=amp)


def _is_compiled(m: nn.Module) -> bool:
    # module.compile() (in place) sets _compiled_call_impl; torch.compile(module) wraps it (OptimizedModule).
    return any(getattr(x, "_compiled_call_impl", None) is not None or hasattr(x, "_orig_mod") for x in (m, unwrap(m)))


def _eager(m: nn.Module) -> contextlib.AbstractContextManager:
    """Run `m`'s forward eagerly even when compiled: torch.compile cannot take the double backward of a
    penalty ("aot_autograd does not currently support double backward")."""
    if not _is_compiled(m):
        return contextlib.nullcontext()
    return torch.compiler.set_stance("force_eager")


def d_step(
    G: nn.Module,
    D: nn.Module,
    real: Tensor,
    opt_d: Optimizer,
    loss: GanLoss,
    gen: torch.Generator | None = None,
    labels: Tensor | None = None,
    augment: Augment | None = None,
    *,
    amp: torch.dtype | None = None,
    r1_every: int = 1,
    step: int = 0,
) -> dict[str, float]:
    """One D update. `labels` are the classes of `real`; given them, fakes get labels drawn at the data's class
    mix (G.sample_labels).
    With `augment`, also returns `d_sign_real`, the overfitting signal the adaptive p follows.
    `amp`: the forwards under autocast, unless this step takes a penalty (then all fp32). `step` is this D
    step's global index: with R1 on, it is taken (weighted by `r1_every`) only when step % r1_every == 0, and
    "r1" is in the result only on the steps that took it."""
    if r1_every < 1:
        raise ValueError(f"r1_every must be >= 1, got {r1_every}")
    r1_now = loss.uses_r1 and step % r1_every == 0
    r2_now = r1_now and loss.uses_r2  # R2 rides on R1's lazy schedule, at its gamma
    penalised = r1_now or loss.uses_gp  # a double backward: fp32 and eager
    amp = None if penalised else amp
    n = real.shape[0]
    g = unwrap(G)
    with torch.no_grad():  # G is not being trained here; no graph, no DDP hooks on G
        z = g.sample_z(n, device=real.device, generator=gen)
        fake_labels = None if labels is None else g.sample_labels(n, device=real.device, generator=gen)
        if labels is not None and fake_labels is None:  # models.py's unconditional G returns None
            raise ValueError("labels were given but G is not class-conditional")
        with _autocast(real.device, amp):
            fake = _call(g, z, fake_labels)
        if amp is not None:
            fake = fake.to(real.dtype)  # the glue between the forwards stays fp32
    if augment is not None:
        # One call: every real and fake row gets its own draws. Nothing here needs a graph back to
        # the images (G is not trained, R1's leaf is made below), so the ops run without one.
        with torch.no_grad():
            seen = augment(torch.cat([real, fake]), gen)
        real, fake = seen[:n], seen[n:]

    # R1 needs d score / d real, so the real rows enter as a leaf that requires grad. Augmented:
    # the gradient is w.r.t. D's input, the augmented reals (R1 smooths D where it is trained, and
    # its strength does not drift with p as it would through cutout's zeroed pixels); ADA's code
    # differentiates through the ops to the raw reals instead.
    real_in = real.detach().requires_grad_(True) if r1_now else real
    fake_in = fake.detach().requires_grad_(True) if r2_now else fake  # R2: the same, on the fake rows
    parts, label_parts = [real_in, fake_in], [labels, fake_labels]
    x_hat: Tensor | None = None
    if loss.uses_gp:  # between the (augmented) rows D actually scores
        x_hat = interpolate(real, fake, gen).requires_grad_(True)
        parts.append(x_hat)
        label_parts.append(labels)  # interpolates are scored under the real rows' classes
    y = None if labels is None else torch.cat(label_parts)  # type: ignore[arg-type]
    with _autocast(real.device, amp), (_eager(D) if penalised else contextlib.nullcontext()):
        scores = _call(D, torch.cat(parts), y)  # the one DDP forward of this step
    if amp is not None:
        scores = scores.float()  # losses in fp32
    real_s, fake_s = scores[:n], scores[n : 2 * n]

    adv = loss.d_loss(real_s, fake_s)  # first, as before: autograd's node order, so the float sums, unchanged
    # Scores are per sample (no BN in D), so each penalty's gradient sees only its own rows;
    # both gradients come from one double-backward through this same forward.
    outs, ins = [], []
    if x_hat is not None:
        outs.append(scores[2 * n :].sum())
        ins.append(x_hat)
    if r1_now:
        outs.append(real_s.sum())
        ins.append(real_in)
    if r2_now:
        outs.append(fake_s.sum())
        ins.append(fake_in)
    grads = list(torch.autograd.grad(outs, ins, create_graph=True)) if ins else []
    gp_grad = grads.pop(0) if x_hat is not None else None
    r1_grad = grads.pop(0) if r1_now else None
    r2_grad = grads.pop(0) if r2_now else None
    total, gp, r1, r2 = loss.add_penalties(adv, gp_grad, r1_grad, r1_every=r1_every, r2_grad=r2_grad)

    opt_d.zero_grad(set_to_none=True)
    total.backward()
    gn = grad_norm(unwrap(D))
    opt_d.step()
    if loss.clip:
        # After the (all-reduced, identical) update, so every DDP rank clips the same weights.
        clip_weights_(unwrap(D), loss.clip)

    with torch.no_grad():
        rs, fs = real_s.detach(), fake_s.detach()
        both = torch.cat([rs, fs])
        saturated = 0.0 if loss.row.critic else float((both.abs() > SATURATION_LOGIT).float().mean())
        out = {
            "loss_d": float(total.detach()),
            "d_acc_real": float((rs > 0).float().mean()),
            "d_acc_fake": float((fs < 0).float().mean()),
            "d_real_score": float(rs.mean()),
            "d_fake_score": float(fs.mean()),
            "wasserstein": float(rs.mean() - fs.mean()),
            "grad_norm_d": gn,
            "gp": float(gp.detach()),
            "r1": float(r1.detach()),
            "d_saturated": saturated,
        }
        if loss.uses_r1 and not r1_now:
            del out["r1"]  # not taken on this lazy step: a 0 here would drag the epoch's mean down
        if r2_now:
            out["r2"] = float(r2.detach())
        if augment is not None:
            out["d_sign_real"] = float(overfit_signal(rs, fs, loss.row.critic))
        return out


def g_step(
    G: nn.Module,
    D: nn.Module,
    batch_size: int,
    opt_g: Optimizer,
    loss: GanLoss,
    device: torch.device | str,
    gen: torch.Generator | None = None,
    labels: Tensor | None = None,
    augment: Augment | None = None,
    *,
    amp: torch.dtype | None = None,
    real: Tensor | None = None,
    real_labels: Tensor | None = None,
) -> dict[str, float]:
    """One G update. `labels` are the classes to generate (conditional runs); None = unconditional.
    With `augment`, D scores augmented fakes and G's gradient flows back through the ops.
    `amp`: G's and D's forwards under autocast, the augmentation and the loss in fp32.
    A paired loss (loss.row.paired) also needs `real` (batch_size rows, with `real_labels` when
    conditional): D scores them as constants, since no gradient reaches G through them."""
    if loss.row.paired and (real is None or real.shape[0] != batch_size):
        raise ValueError(f"the {loss.row.name} loss pairs fakes with reals: g_step needs {batch_size} real rows")
    d = unwrap(D)
    # Freeze D so G's backward neither computes nor accumulates D grads, and score through the
    # unwrapped D so DDP(D) arms no reduction that would never complete.
    saved = [p.requires_grad for p in d.parameters()]
    d.requires_grad_(False)
    try:
        z = unwrap(G).sample_z(batch_size, device=device, generator=gen)
        with _autocast(device, amp):
            fake = _call(G, z, labels)  # the one DDP forward of G
        if amp is not None:
            fake = fake.float()
        if augment is not None:
            fake = augment(fake, gen)
        with _autocast(device, amp):
            scores = _call(d, fake, labels)
        real_scores = None
        if loss.row.paired:
            with torch.no_grad(), _autocast(device, amp):
                real_scores = _call(d, real if augment is None else augment(real, gen), real_labels).float()
        loss_g = loss.g_loss(scores if amp is None else scores.float(), real_scores)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        gn = grad_norm(unwrap(G))
        opt_g.step()
    finally:
        for p, flag in zip(d.parameters(), saved):
            p.requires_grad_(flag)
    return {"loss_g": float(loss_g.detach()), "grad_norm_g": gn}


def _diverged(value: float, device: torch.device) -> bool:
    """True if `value` is NaN/Inf on any rank: every DDP rank must stop at the same step, or
    the ones still going would wait forever in their next all-reduce."""
    bad = not math.isfinite(value)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return bad
    flag = torch.tensor(float(bad), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _split(batch: Tensor | Sequence[Tensor]) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def train_epoch(
    G: nn.Module,
    D: nn.Module,
    batches: Iterable[Tensor | Sequence[Tensor]],
    opt_g: Optimizer,
    opt_d: Optimizer,
    loss: GanLoss,
    n_critic: int = 1,
    gen: torch.Generator | None = None,
    conditional: bool = False,
    ema: EMA | None = None,
    augment: Augment | None = None,
    *,
    amp: torch.dtype | None = None,
    r1_every: int = 1,
    step0: int = 0,
    channels_last: bool = False,
) -> dict[str, float]:
    """One pass over `batches` (x or (x, y)): a D step per batch, a G step (then an EMA update)
    after every `n_critic` D steps. Returns each metric's mean over the steps that produced it,
    step counts, and `nonfinite` (1.0 if a loss went NaN/Inf, which ends the epoch right there).
    `augment` (fixed for the epoch) goes to every D and G step; see gan_core.augment.
    `amp`, `r1_every`, `channels_last`: see the module docstring. `step0` is the global index of this
    epoch's first D step (D steps of all earlier epochs), so lazy R1's schedule runs on across epochs and
    resumes; "r1" is then the mean over this epoch's steps that took R1 (absent if none did), and `loss_d`
    includes r1_every x the penalty on those steps."""
    if n_critic < 1:
        raise ValueError(f"n_critic must be >= 1, got {n_critic}")
    if r1_every < 1:
        raise ValueError(f"r1_every must be >= 1, got {r1_every}")
    G.train()
    D.train()
    device = _device_of(D)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    steps_d = steps_g = 0
    nonfinite = False

    def add(metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1

    for batch in batches:
        real, y = _split(batch)
        if conditional and y is None:
            raise ValueError("conditional training needs (x, y) batches")
        real = to_device(real, device, channels_last)
        labels = y.to(device, non_blocking=True) if conditional and y is not None else None
        m = d_step(G, D, real, opt_d, loss, gen, labels=labels, augment=augment, amp=amp, r1_every=r1_every,
                   step=step0 + steps_d)
        add(m)
        steps_d += 1
        worst = m["loss_d"]
        if steps_d % n_critic == 0:
            n = real.shape[0]
            fake_labels = unwrap(G).sample_labels(n, device=device, generator=gen) if conditional else None
            m = g_step(G, D, n, opt_g, loss, device, gen, labels=fake_labels, augment=augment, amp=amp,
                       real=real, real_labels=labels)
            add(m)
            steps_g += 1
            worst = worst + m["loss_g"]  # NaN/Inf if either is
            if ema is not None and math.isfinite(worst):
                ema.update(G)
        # One agreement per batch, not per step: each collective costs DDP ranks a round trip.
        if nonfinite := _diverged(worst, device):
            break

    out = {k: sums[k] / counts[k] for k in sums}
    out["steps_d"] = float(steps_d)
    out["steps_g"] = float(steps_g)
    out["nonfinite"] = float(nonfinite)
    return out


def build_optimizers(G: nn.Module, D: nn.Module, optim: ResolvedOptim) -> tuple[Optimizer, Optimizer]:
    """Adam(lr, betas), or RMSprop(lr) without momentum as in WGAN (Arjovsky et al. 2017)."""
    if optim.optimizer == "adam":
        return (Adam(G.parameters(), lr=optim.lr_g, betas=optim.betas),
                Adam(D.parameters(), lr=optim.lr_d, betas=optim.betas))
    if optim.optimizer == "rmsprop":
        return RMSprop(G.parameters(), lr=optim.lr_g), RMSprop(D.parameters(), lr=optim.lr_d)
    raise ValueError(f"unknown optimizer {optim.optimizer!r}")
