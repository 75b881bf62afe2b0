"""The promotion gate against the evaluation noise (issue 25), on digits through the product's own gate.

Trains, through `ganflow pipeline` in one workspace, the default recipe and the same recipe at a tenth of
its epochs for each training seed (retention off, so every version stays), then asks two gates:
* today's gate (`paired`): flows.registry.promote.promote, draws at fresh seeds, a t bound and a minimum
  effect (params.yaml `promotion`);
* the gate before it (`single`): one measurement of each version at the judge's frozen seed, promoted on
  a strict a < b. Evaluated here with the product's own measurement (promote._Gauge at that one seed).

Three experiments:
1. copies: N copies of a champion, each tensor nudged by 1e-4 of its std, offered in turn (a promoted
   copy becomes the champion the next copy faces). Also the paired differences of the copies against the
   champion at 5 shared seeds: their 95th percentile is what `min_effect` must exceed.
2. pairs: for each seed, full vs a tenth of the epochs, each pair in both orders (the better one as
   challenger must be promoted, as champion must be kept); then every pair of full runs whose 20-draw
   means differ by 6-14% ("about 10%"), both orders, the paired gate asked `--repeats` times per order.
3. cost: the wall time of one decision by the paired gate at 2, 5, 10 and 20 draws.

    .venv/bin/python -m bench.gate                                   # everything (~45 min on 2 quiet cores)
    .venv/bin/python -m bench.gate --workspace /tmp/gate-bench --only copies
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from bench.common import footer, make_workspace, mean_std, run_ganflow, run_paths, table  # noqa: E402

KEEP_ALL = ["--set", "retention.keep_versions=null", "--set", "retention.keep_runs=null"]
REFERENCE_DRAWS = 20  # the versions' "true" ordering: means over this many draws
HARD = (0.06, 0.14)  # "about 10%": relative difference of the 20-draw means


def train(ws: Path, seed: int, epochs: int | None) -> str:
    """A pipeline run of the default recipe (or at `epochs`); returns its registered version."""
    sets = ["--set", f"train.seed={seed}"] + (["--set", f"train.epochs={epochs}"] if epochs else [])
    wall = run_ganflow(ws, "pipeline", *sets, *KEEP_ALL)
    version = json.loads(run_paths(ws).last_pipeline.read_text())["version"]
    print(f"  seed {seed}, {'default epochs' if epochs is None else f'{epochs} epochs'}: version {version} "
          f"({wall:.0f} s)", flush=True)
    return version


class Bench:
    def __init__(self, ws: Path):
        from mlflow.tracking import MlflowClient

        from flows import params as params_mod
        from flows.env import configure
        from flows.evaluate import judge_protocol

        self.paths = configure(ws)
        self.params = params_mod.load(ws)
        self.name = self.params.model_name
        self.client = MlflowClient()
        self.frozen_seed = judge_protocol(ws, self.params)[1]
        self._gauges: dict[tuple[int, ...], object] = {}
        self._single: dict[str, float] = {}

    def gauge(self, seeds: list[int]):
        from flows.registry.promote import _Gauge

        key = tuple(seeds)
        if key not in self._gauges:  # the holdout's features once per seed list
            self._gauges[key] = _Gauge(self.client, self.name, self.paths, self.params, seeds=list(seeds))
        return self._gauges[key]

    def single(self, version: str) -> float:
        """The old gate's one measurement: the judge's frozen seed (deterministic, so cached)."""
        if version not in self._single:
            self._single[version] = self.gauge([self.frozen_seed]).measure(version)[0]
        return self._single[version]

    def single_promotes(self, challenger: str, champion: str) -> bool:
        return self.single(challenger) < self.single(champion)

    def paired_promotes(self, challenger: str, champion: str, draws: int | None = None) -> bool:
        """The product's gate, with `champion` made champion first (an operator's force, recorded)."""
        from flows.registry.promote import force, promote

        force(self.name, champion, self.paths, "bench.gate: set the champion", echo=False)
        params = self.params if draws is None else self.params.model_copy(
            update={"promotion": self.params.promotion.model_copy(update={"draws": draws})})
        return promote(self.name, challenger, self.paths, params, echo=False).decision == "promoted"

    def copy(self, version: str, i: int, scale: float = 1e-4) -> str:
        """A new version: `version`'s weights, each tensor nudged by N(0, (scale * its std)^2)."""
        import torch

        from flows.data.load import load_manifest
        from flows.registry import tracking, versions

        state = versions.load_training_state(f"models:/{self.name}/{version}")
        gen = torch.Generator().manual_seed(1000 + i)
        for part in ("generator", "ema"):
            weights = state.get(part)
            weights = weights.get("module", weights) if isinstance(weights, dict) and part == "ema" else weights
            for k, w in (weights or {}).items():
                if w.is_floating_point() and w.numel() > 1:
                    w.add_(torch.randn(w.shape, generator=gen) * (scale * float(w.std())))
        mv = self.client.get_model_version(self.name, version)
        tags = versions.VersionTags.read(mv.tags)
        tags = versions.VersionTags(**{**tags.__dict__, "ray_run": f"{tags.ray_run}-nudged-{i}", "promotion": None})
        run = self.client.create_run(tracking.experiment_id(self.params, self.paths),
                                     run_name=f"nudged copy {i} of version {version}")
        return versions.register(run.info.run_id, self.params, state, tags, load_manifest(self.paths.workspace)["classes"])

    def means(self, versions_: list[str], seeds: list[int]) -> dict[str, float]:
        import numpy as np

        g = self.gauge(seeds)
        return {v: float(np.mean(g.measure(v))) for v in versions_}


def copies_experiment(b: Bench, champion: str, n: int) -> list[str]:
    import numpy as np

    from flows.registry.promote import force, promote

    copies = [b.copy(champion, i) for i in range(n)]
    # The paired differences at 5 shared seeds: what two versions equal in all but noise differ by.
    seeds = [11, 12, 13, 14, 15]
    g = b.gauge(seeds)
    base = np.asarray(g.measure(champion))
    rel = np.concatenate([(np.asarray(g.measure(c)) - base) / base.mean() for c in copies])
    means = [float(np.mean(rel[i * 5:(i + 1) * 5])) for i in range(n)]
    # Offered in turn: a promoted copy is the champion the next one faces.
    force(b.name, champion, b.paths, "bench.gate: the copies' champion", echo=False)
    paired = [promote(b.name, c, b.paths, b.params, echo=False).decision == "promoted" for c in copies]
    current, single = champion, []
    for c in copies:
        single.append(b.single_promotes(c, current))
        current = c if single[-1] else current
    lines = [f"copies of version {champion}, each tensor nudged by 1e-4 of its std, offered in turn:",
             f"  single-draw gate (before): {sum(single)} of {n} promoted",
             f"  paired gate (now, {b.params.promotion.draws} draws, min effect {b.params.promotion.min_effect:.0%}): "
             f"{sum(paired)} of {n} promoted",
             f"  paired difference copy - champion, relative, per draw (5 seeds x {n} copies): 95th percentile of "
             f"|d| {np.percentile(np.abs(rel), 95):.4%}, max {np.abs(rel).max():.4%}; of the 5-draw means: "
             f"95th percentile {np.percentile(np.abs(means), 95):.4%}"]
    return lines


def pairs_experiment(b: Bench, full: dict[int, str], tenth: dict[int, str], repeats: int) -> list[str]:
    seeds = list(range(101, 101 + REFERENCE_DRAWS))
    ref = b.means([*full.values(), *tenth.values()], seeds)
    rows, lines = [], []
    single_right = paired_right = total = 0
    for s in full:
        better, worse = (full[s], tenth[s]) if ref[full[s]] < ref[tenth[s]] else (tenth[s], full[s])
        for challenger, champion, want in ((better, worse, True), (worse, better, False)):
            sp, pp = b.single_promotes(challenger, champion), b.paired_promotes(challenger, champion)
            single_right += sp == want
            paired_right += pp == want
            total += 1
            rows.append([str(s), f"{challenger} vs champion {champion}", f"{ref[challenger]:.2f} vs {ref[champion]:.2f}",
                         "promote" if want else "keep", "right" if sp == want else "WRONG",
                         "right" if pp == want else "WRONG"])
    lines.append("full recipe vs a tenth of its epochs, both orders (FD, 20-draw means):")
    lines.append(table(["seed", "decision", "FD", "right answer", "single draw", "paired"], rows))
    lines.append(f"  right: single-draw {single_right}/{total}, paired {paired_right}/{total}")

    hard = []
    for x, y in itertools.combinations(full.values(), 2):
        lo, hi = sorted((x, y), key=ref.get)
        gap = ref[hi] / ref[lo] - 1
        if HARD[0] <= gap <= HARD[1]:
            hard.append((lo, hi, gap))
    rows = []
    for lo, hi, gap in hard:
        single = [b.single_promotes(lo, hi), not b.single_promotes(hi, lo)]
        promoted = [b.paired_promotes(lo, hi) for _ in range(repeats)]
        kept = [not b.paired_promotes(hi, lo) for _ in range(repeats)]
        rows.append([f"{lo} vs {hi}", f"{ref[lo]:.2f} vs {ref[hi]:.2f} ({gap:+.1%})",
                     f"{sum(single)}/2", f"{sum(promoted)}/{repeats}", f"{sum(kept)}/{repeats}"])
    lines.append(f"full-run pairs whose {REFERENCE_DRAWS}-draw means differ by {HARD[0]:.0%}-{HARD[1]:.0%}:")
    lines.append(table(["better vs worse", "FD", "single draw right (2 orders)", "paired: better promoted",
                        "paired: worse kept"], rows) if rows else "  (none)")
    return lines


def cost_experiment(b: Bench, challenger: str, champion: str) -> list[str]:
    """The paired gate's wall time against its draws (a nudged copy against its original: both measured)."""
    rows = []
    for draws in (2, 5, 10, 20):
        walls = []
        for _ in range(2):
            t = time.perf_counter()
            b.paired_promotes(challenger, champion, draws)
            walls.append(time.perf_counter() - t)
        m, _ = mean_std(walls)
        rows.append([str(draws), f"{m:.1f}"])
    return ["wall time of one paired decision on digits (both versions measured; force included, ~0.1 s):",
            table(["draws", "seconds (mean of 2)"], rows)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/gate-bench"),
                    help="kept between runs: trained versions are reused (an unchanged pipeline skips)")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5, help="paired-gate decisions per order of a hard pair")
    ap.add_argument("--only", choices=("train", "copies", "pairs", "cost"))
    args = ap.parse_args()
    t0 = time.time()
    ws = args.workspace if (args.workspace / "params.yaml").exists() else make_workspace(args.workspace)
    from gan_core.recipes import RECIPES

    epochs = int(RECIPES["images-ns-r1"].values["train.epochs"])
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"training in {ws}: the default recipe ({epochs} epochs) and {epochs // 10} epochs", flush=True)
    champion = train(ws, seeds[0], None)
    b = Bench(ws)
    out = []
    if args.only in (None, "copies"):
        out += copies_experiment(b, champion, args.copies)
        print("\n".join(out), flush=True)
    if args.only in (None, "cost"):
        out += cost_experiment(b, b.copy(champion, 999), champion)
        print("\n".join(out[-8:]), flush=True)
    if args.only in (None, "train", "pairs"):
        full = {seeds[0]: champion, **{s: train(ws, s, None) for s in seeds[1:]}}
        tenth = {s: train(ws, s, epochs // 10) for s in seeds}
        if args.only != "train":
            out += pairs_experiment(b, full, tenth, args.repeats)
    print("\n" + "\n".join(out) + "\n\n" + footer(t0))

if __name__ == "__main__":
    main()
