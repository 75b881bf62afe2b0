"""Drawing from a trained generator: latents (the generator's prior, optionally truncated), a fixed class, latent walks.

One request type for every way in: `ganflow sample`, the registered pyfunc's request form and the
evaluator's draws all go through `draw`, so one seed gives one set of samples everywhere."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class SampleRequest:
    n: int = 64               # samples; with `interpolate`, the number of keyframes (one per seed)
    seed: int = 0
    label: int | None = None  # a class id for every sample (conditional generators only)
    truncation: float | None = None
    interpolate: int | None = None  # frames from each keyframe to the next

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"-n must be at least 1, got {self.n}")
        if self.truncation is not None and not self.truncation > 0:
            raise ValueError(f"--truncation must be > 0 (latent entries are drawn within +-T), got {self.truncation}")
        if self.interpolate is not None:
            if self.interpolate < 1:
                raise ValueError(f"--interpolate must be at least 1 frame per step, got {self.interpolate}")
            if self.n < 2:
                raise ValueError("--interpolate walks between keyframes: -n must be at least 2 (one seed each)")


def truncate(z: Tensor, threshold: float | None) -> Tensor:
    """BigGAN's truncation trick (Brock et al. 2019): each N(0, 1) entry mapped to N(0, 1) truncated to
    [-T, T] (not clipped, which would pile mass on the bounds). Smaller T: more typical, cleaner samples,
    less variety. None: unchanged.

    Inverse-CDF sampling in bounded time whatever T (redrawing the entries beyond T took ~1/T rounds):
    u = Phi(z) is uniform, so Phi^-1 of u rescaled into [Phi(-T), Phi(T)] is exactly truncated normal.
    As erf(|z'|/sqrt2) = erf(|z|/sqrt2) * erf(T/sqrt2): small results through erfinv (exact for tiny T,
    where Phi(T) - Phi(-T) rounds away), large ones through the tails' ndtri (where erf rounds to 1).
    Monotone in z: one seed's latents shrink smoothly as T falls, and a large T leaves z as it is."""
    if threshold is None:
        return z
    x, t = z.double().abs(), torch.tensor(float(threshold), dtype=torch.float64)
    root2 = math.sqrt(2.0)
    small = root2 * torch.erfinv(torch.erf(x / root2) * torch.erf(t / root2))
    tail_x, tail_t = torch.special.ndtr(-x), torch.special.ndtr(-t)  # the same relation in Phi(-.), the tails'
    large = -torch.special.ndtri(tail_x + tail_t - 2 * tail_x * tail_t)
    out = torch.where(small < 1.0, small, large).clamp(max=float(threshold))
    return (out * z.sign()).to(z.dtype)


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between latent rows a and b at fractions t: a straight line between two
    Gaussian latents passes through norms the prior almost never draws (White 2016, 'Sampling
    generative networks'); the arc keeps them typical."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.arccos((a_n * b_n).sum(-1, keepdim=True).clamp(-1.0, 1.0))
    so = torch.sin(omega)
    t = t.unsqueeze(-1)
    lerp = (1 - t) * a + t * b
    arc = (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b
    return torch.where(so.abs() < 1e-6, lerp, arc)  # (anti)parallel rows: the line is the arc


def walk(keys: Tensor, steps: int) -> Tensor:
    """(K, z_dim) keyframes -> ((K - 1) * steps + 1, z_dim) latents along consecutive arcs."""
    t = torch.arange(steps, dtype=keys.dtype, device=keys.device) / steps
    legs = [slerp(keys[i].expand(steps, -1), keys[i + 1].expand(steps, -1), t) for i in range(len(keys) - 1)]
    return torch.cat([*legs, keys[-1:]])


def stratified_labels(n: int, num_classes: int, gen: torch.Generator, shares: list[float] | None = None) -> Tensor:
    """n class ids in the given shares (None: equal), each class's count n * share rounded by largest
    remainder (ties to the lower id), shuffled. Real splits are stratified; ids drawn independently add
    multinomial noise to the class mix that the real-vs-real baseline never pays: on digits it raised the
    Frechet ratio of one generator by 0.3 on average and tripled its spread between draws (bench/RESULTS.md
    section 7). The shares are the data's: on a 4:1 imbalanced folder equal shares put the ratio at 15."""
    p = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64) if shares is None else \
        torch.tensor(shares, dtype=torch.float64) / sum(shares)
    exact = p * n
    counts = exact.floor().long()
    rest = exact - counts
    order = sorted(range(num_classes), key=lambda k: (-round(float(rest[k]), 9), k))
    counts[order[:n - int(counts.sum())]] += 1
    ids = torch.repeat_interleave(torch.arange(num_classes), counts)
    return ids[torch.randperm(n, generator=gen)]


def class_index(name: str, class_names: list[str] | None) -> int:
    """The class id of `name` among a generator's class names (ValueError naming the known ones)."""
    if not class_names:
        raise ValueError("this generator is unconditional: it takes no class")
    if name not in class_names:
        shown = ", ".join(class_names[:20]) + (" ..." if len(class_names) > 20 else "")
        raise ValueError(f"unknown class {name!r}; this generator's classes: {shown}")
    return class_names.index(name)


@torch.no_grad()
def draw(G: nn.Module, req: SampleRequest) -> Tensor:
    """Samples for a request, G in eval mode, clamped to the data range for images. Keyframes of a walk
    use seeds seed, seed + 1, ...: the same seed gives the same first keyframe as a plain draw of 1."""
    num_classes = getattr(G, "num_classes", None)
    if req.label is not None and not num_classes:
        raise ValueError("this generator is unconditional: it takes no class")
    if req.label is not None and not 0 <= req.label < num_classes:
        raise ValueError(f"class id {req.label} is out of range for {num_classes} classes")
    gen = torch.Generator().manual_seed(req.seed)
    if req.interpolate:
        keys = []
        for i in range(req.n):
            key_gen = torch.Generator().manual_seed(req.seed + i)
            keys.append(truncate(G.sample_z(1, generator=key_gen), req.truncation))
        z = walk(torch.cat(keys), req.interpolate)
    else:
        z = truncate(G.sample_z(req.n, generator=gen), req.truncation)  # the generator's own prior
    y = None
    if num_classes:
        if req.label is not None:
            y = torch.full((len(z),), req.label, dtype=torch.long)
        elif req.interpolate:  # one class along the whole walk: only the latent moves
            y = torch.randint(num_classes, (1,), generator=gen).expand(len(z)).contiguous()
        else:  # the data's class mix, as the holdout it is judged against
            y = stratified_labels(len(z), num_classes, gen, getattr(G, "class_shares", None))
    was_training = G.training
    out = G.eval()(z) if y is None else G.eval()(z, y=y.to(z.device))
    G.train(was_training)
    return out.clamp(-1.0, 1.0) if out.dim() == 4 else out
