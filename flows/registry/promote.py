"""The promotion gate: does a newly registered version replace the `champion`?

The gate trusts no score a version reports about itself, and no single evaluation draw. Per decision it
draws fresh evaluation seeds (recorded with the decision, so nobody can tune a version to a known draw),
measures the challenger and the champion from their registered weights at each of those seeds on the
workspace's current holdout with the workspace's judge at the judge's frozen sample count
(flows.evaluate.judge_protocol), and decides on the paired differences: the challenger is promoted only
when the one-sided upper confidence bound of the mean paired difference, relative to the champion's
score, lies below -min_effect (params.yaml `promotion`: draws, confidence, min_effect). Otherwise it is
"kept: not distinguishable" (or worse), with the difference and its bound. A generator's Frechet distance
moves 5-11% between draws (bench/RESULTS.md section 7); paired draws at the same latents cancel most of
that, and the minimum effect covers what remains for two versions that are equal in all but noise
(measured in bench/RESULTS.md section 8). The versions' own ``eval.*`` tags are shown beside the
measurement, never used. MLflow 3 deprecates registry stages, so the gate speaks in aliases and tags:

* every version put through the gate gets the alias ``challenger`` (the latest one judged);
* it takes the alias ``champion`` only if its run did not fail, its weights load and give a finite primary
  metric at every draw (lower is better; see flows.evaluate.PRIMARY), and it beats the champion beyond the
  noise; with no champion yet, a valid version becomes champion;
* the decision, its numbers (draws, seeds, scores, difference, bound) and the reason are written as
  ``promotion.*`` tags on the challenger (flows.registry.versions.PromotionTags), each measurement as
  ``reeval.*`` tags on the version measured; an operator may override with ``ganflow promote --force``.

Promoting the current champion again is harmless: "kept", "already champion", and no alias or tag
moves. A failed, unloadable or NaN version is "rejected": a recorded outcome, not an error. The gate
needs the prepared data (data/processed, data/classifier) in the workspace.

Every move of ``champion`` is also one entry in the model's history (flows.registry.history):
``ganflow history`` lists it and ``rollback`` walks it back, recording why. The entry is written first,
marked pending, and settled once the alias and the version's tags are written: a crash between them
leaves a pending entry that the next promotion, force or rollback completes before anything else.

Concurrency: read champion -> measure -> set alias runs as one promotion at a time per model. With a
Prefect server (PREFECT_API_URL) the promotion holds the slot of a global concurrency limit on it,
``ganflow-promote-<model>`` (limit 1, created on first use): every machine that shares the server and
the MLflow registry queues there, so two machines end with the better version as champion (MLflow has
no compare-and-set for aliases). Without one, a file lock in the run directory
(``<GANFLOW_HOME>/promote.lock``) serialises the promotions of one machine only.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from filelock import FileLock, Timeout

from flows import alerts, faults
from flows.env import RunPaths
from flows.errors import UserError
from flows.params import Params, PromotionConfig
from flows.registry import history
from flows.registry.card import with_promotion
from flows.registry.versions import PromotionTags, VersionTags
from flows.servers import redact_text

CHAMPION = "champion"
CHALLENGER = "challenger"
LOCK_FILE = "promote.lock"
LOCK_TIMEOUT_S = 900  # a re-evaluation of two image models under the lock can take a while
LEASE_S = 60  # a promoter that dies frees the Prefect slot after this long (renewed while it lives)
BAD_RUN_STATUSES = ("FAILED", "KILLED")

DecisionKind = Literal["promoted", "kept", "rejected", "rollback", "forced"]
MOVES_CHAMPION = ("promoted", "rollback", "forced")


@dataclass
class Decision:
    model: str
    version: str
    decision: DecisionKind
    reason: str
    metric: str | None
    challenger_score: float | None  # the mean over the decision's draws
    champion_score: float | None
    champion_before: str | None  # champion version when the gate started (None: there was none)
    champion_after: str | None
    reevaluated: bool = False  # measured by the gate (always, but for failed runs and the champion itself)
    recorded: bool = True  # False: nothing to record (re-promoting the champion)
    seeds: list[int] = field(default_factory=list)  # the evaluation seeds drawn for this decision
    difference: float | None = None  # mean paired (challenger - champion) / champion's mean
    bound: float | None = None  # its one-sided upper confidence bound
    min_effect: float | None = None

    def summary(self) -> str:
        """The one line the CLI (and the pipeline log) prints."""
        head = f"{self.model} version {self.version}: {self.decision.upper()}"
        if self.decision in ("promoted", "forced"):
            return f"{head} -> champion (was {_v(self.champion_before)}); {self.reason}"
        if self.decision == "rollback":
            return f"{self.model}: ROLLED BACK champion {_v(self.champion_before)} -> version {self.version}; {self.reason}"
        if self.decision == "kept":
            return f"{head}, champion stays {_v(self.champion_after)}; {self.reason}"
        return f"{head} (never promoted), champion stays {_v(self.champion_after)}; {self.reason}"

    def as_dict(self) -> dict:
        return asdict(self)


def _v(version: str | None) -> str:
    return f"version {version}" if version else "none"


def _fmt(x: float | None) -> str:
    return "none" if x is None else format(x, ".8g")


@dataclass(frozen=True)
class Verdict:
    """The paired comparison of two versions' scores at the same seeds (lower is better)."""

    difference: float  # mean of (challenger - champion) / champion's mean: -0.05 is 5% better
    bound: float  # its one-sided upper confidence bound
    lower: float  # and the lower one
    better: bool  # the bound is below -min_effect: better beyond the noise

    def describe(self, confidence: float, min_effect: float) -> str:
        return (f"paired difference {self.difference:+.2%} (its {confidence:.0%} upper bound {self.bound:+.2%}, "
                f"{'below' if self.better else 'not below'} the -{min_effect:.1%} a promotion needs)")


def paired_verdict(challenger: Sequence[float], champion: Sequence[float], confidence: float,
                   min_effect: float) -> Verdict:
    """Student's t bound on the mean paired difference. Pairing (both versions drawn at the same seeds,
    so at the same latents) removes the draw-to-draw noise the two share; the t quantile covers what is
    left at few draws; `min_effect` keeps a difference too small to matter (two copies of one generator
    nudged by noise differ consistently at the 0.1% level) from counting as better."""
    from scipy import stats

    a, b = np.asarray(challenger, dtype=float), np.asarray(champion, dtype=float)
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"a paired verdict needs >= 2 draws of each, got {len(a)} and {len(b)}")
    scale = float(b.mean()) if b.mean() > 0 else 1.0  # a champion at 0 cannot be beaten; avoid 0/0
    d = (a - b) / scale
    half = float(stats.t.ppf(confidence, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    mean = float(d.mean())
    return Verdict(mean, mean + half, mean - half, mean + half < -min_effect)


def promote(model_name: str, version: str, paths: RunPaths, params: Params, echo: bool = True) -> Decision:
    """Put `version` of `model_name` through the gate; returns (and prints) the decision.

    Call after flows.env.configure() so MLflow points at the workspace's store."""
    from mlflow.tracking import MlflowClient

    version = str(version).strip()
    client = MlflowClient()
    # Unknown model/version fail here, before waiting for the lock; this also opens the store's
    # connection outside the lock, so concurrent promoters only queue for the decision itself.
    _model_version(client, model_name, version)
    with serialised(paths, model_name):
        decision = _decide(client, model_name, version, paths, params)
    if echo:
        print(decision.summary())
    if decision.decision == "rejected":  # not the ordinary "kept": something is wrong with the version
        alerts.send("promotion_rejected", decision.reason, workspace=str(paths.workspace), model=model_name,
                    version=version)
    return decision


def _decide(client, name: str, version: str, paths: RunPaths, params: Params) -> Decision:
    recover(client, name)
    mv = _model_version(client, name, version)  # read again under the lock: tags may have moved
    champion = _champion(client, name)
    made: list[_Gauge] = []

    def gauge() -> _Gauge:  # built only when something is measured (the holdout's features once)
        if not made:
            made.append(_Gauge(client, name, paths, params))
        return made[0]

    decision = judge(name, version, VersionTags.read(mv.tags),
                     (str(champion.version), VersionTags.read(champion.tags)) if champion is not None else None,
                     failure=_run_failure(client, mv.run_id) or _code_changed(name, version), gauge=gauge,
                     rule=params.promotion)
    apply(client, decision)
    return decision


def force(model_name: str, version: str, paths: RunPaths, reason: str, echo: bool = True) -> Decision:
    """An operator's override: `version` becomes champion without being measured, recorded in the history
    and on the version as "forced" with `reason`."""
    from mlflow.tracking import MlflowClient

    version = str(version).strip()
    client = MlflowClient()
    _model_version(client, model_name, version)
    with serialised(paths, model_name):
        recover(client, model_name)
        current = _champion(client, model_name)
        before = str(current.version) if current is not None else None
        if before == version:
            decision = Decision(model_name, version, "kept", "already champion", None, None, None, before, before,
                                recorded=False)
        else:
            decision = Decision(model_name, version, "forced", f"forced by an operator: {reason}", None, None, None,
                                before, version)
            apply(client, decision)
    if echo:
        print(decision.summary())
    return decision


def rollback(model_name: str, paths: RunPaths, reason: str, echo: bool = True) -> Decision:
    """Return `champion` to the one before it in the model's history (again: the one before that),
    skipping versions deleted since; recorded in the history and on the version with `reason`.
    An operator's decision: nothing is measured."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    require_model(client, model_name)
    with serialised(paths, model_name):
        recover(client, model_name)
        current = _champion(client, model_name)
        if current is None:
            raise UserError(f"model {model_name!r} has no champion: nothing to roll back")
        current = str(current.version)
        stack = history.lineage(history.read(client, model_name))
        if not stack or stack[-1] != current:
            raise UserError(f"{model_name} champion version {current} did not come through the gate's history "
                            f"(it ends at {_v(stack[-1] if stack else None)}): move the alias by hand "
                            "or promote a version")
        earlier = [v for v in reversed(stack[:-1]) if v != current]  # newest first
        target = next((v for v in earlier if _exists(client, model_name, v)), None)
        deleted = earlier[:earlier.index(target)] if target is not None else earlier
        if target is None:
            raise UserError(f"{model_name}: no earlier champion to return to "
                            f"(history: {', '.join(stack)}{'; deleted: ' + ', '.join(deleted) if deleted else ''})")
        why = reason + (f" (skipped deleted version(s) {', '.join(deleted)})" if deleted else "")
        decision = Decision(model_name, target, "rollback", why, None, None, None, current, target)
        apply(client, decision)
    if echo:
        print(decision.summary())
    return decision


def _exists(client, name: str, version: str) -> bool:
    try:
        client.get_model_version(name, version)
        return True
    except Exception:  # noqa: BLE001 - deleted (retention) or never there
        return False


@contextmanager
def serialised(paths: RunPaths, model: str) -> Iterator[None]:
    """One promotion (or rollback) at a time for `model`: across machines through the Prefect server's
    global concurrency limit when there is a server, on this machine through a file lock otherwise."""
    if os.environ.get("PREFECT_API_URL"):
        with _prefect_slot(f"ganflow-promote-{model}"):
            yield
        return
    lock = FileLock(str(paths.home / LOCK_FILE), timeout=LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"another promotion has held {lock.lock_file} for over {LOCK_TIMEOUT_S} s; "
                        "try again when it has finished") from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def _prefect_slot(name: str) -> Iterator[None]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as c:
        try:
            c.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                c.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass  # another machine created it first
    slot = concurrency(name, occupy=1, timeout_seconds=LOCK_TIMEOUT_S, lease_duration=LEASE_S, strict=True)
    try:
        slot.__enter__()
    except TimeoutError:
        raise UserError(f"another promotion of this model has held the Prefect concurrency limit {name!r} for "
                        f"over {LOCK_TIMEOUT_S} s; try again when it has finished") from None
    try:
        yield
    except BaseException as exc:
        if not slot.__exit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        slot.__exit__(None, None, None)


def judge(name: str, version: str, mine: VersionTags, champion: tuple[str, VersionTags] | None, *,
          failure: str | None, gauge: Callable[[], _Gauge], rule: PromotionConfig) -> Decision:
    """The gate's decision for `version` against the champion (its version and tags), moving nothing.
    Both are measured by `gauge()` at the gauge's seeds; their tags only decorate the reason."""
    before = champion[0] if champion is not None else None

    def decided(kind: DecisionKind, reason: str, metric: str | None, a: list[float] | None = None,
                b: list[float] | None = None, measured: bool = True, recorded: bool = True, seeds=(),
                verdict: Verdict | None = None) -> Decision:
        after = version if kind == "promoted" else before
        mean = lambda xs: float(np.mean(xs)) if xs else None  # noqa: E731
        return Decision(name, version, kind, reason, metric, mean(a), mean(b), before, after, measured, recorded,
                        list(seeds), verdict.difference if verdict else None, verdict.bound if verdict else None,
                        rule.min_effect if verdict else None)

    if before == version:
        # Idempotent: nothing changes, and the record of how it became champion stays intact.
        return decided("kept", "already champion", mine.primary_metric or None, measured=False, recorded=False)
    if failure:
        return decided("rejected", failure, mine.primary_metric or None, measured=False)
    g = gauge()
    metric, seeds = g.metric, g.seeds
    said = _claims(mine, champion[1] if champion is not None else None, metric)
    try:
        a = g.measure(version)
    except Exception as exc:  # noqa: BLE001 - weights that cannot be loaded or run cannot be promoted
        return decided("rejected", f"its weights could not be measured: {redact_text(str(exc))}"[:4900], metric,
                       seeds=seeds)
    if a is None:
        return decided("rejected", f"its samples give a {metric} that is not a finite number (NaN/Inf) at one "
                                   f"or more draws; measured on {g.where}{said}", metric, seeds=seeds)
    if champion is None:
        return decided("promoted", f"no champion yet; {metric} {_fmt(np.mean(a))} over {g.where}{said}", metric,
                       a, seeds=seeds)
    try:
        b = g.measure(before)
    except Exception as exc:  # noqa: BLE001 - fail closed: no decision without the champion's measurement
        raise UserError(f"{name} version {version}: cannot measure champion version {before} on the current "
                        f"holdout: {redact_text(str(exc))}; nothing was promoted") from None
    if b is None:
        return decided("promoted", f"the champion's {metric} is not a finite number; measured over "
                                   f"{g.where}{said}", metric, a, seeds=seeds)
    v = paired_verdict(a, b, rule.confidence, rule.min_effect)
    scores = f"{metric} {_fmt(np.mean(a))} vs {_fmt(np.mean(b))} of version {before}, {v.describe(rule.confidence, rule.min_effect)}; over {g.where}{said}"
    if v.better:
        return decided("promoted", f"better beyond the noise: {scores}", metric, a, b, seeds=seeds, verdict=v)
    verdict = "worse than the champion" if v.lower > rule.min_effect else "not distinguishable from the champion"
    return decided("kept", f"{verdict}: {scores}", metric, a, b, seeds=seeds, verdict=v)


def _claims(mine: VersionTags, theirs: VersionTags | None, metric: str) -> str:
    """What the versions' own tags say, shown beside the measurement and never used."""
    parts = [f"its tag says {mine.scores.get(metric, 'nothing')}"]
    if theirs is not None:
        parts.append(f"the champion's {theirs.scores.get(metric, 'nothing')}")
    return f"; self-reported eval.{metric}: {', '.join(parts)} (not used)"


def apply(client, d: Decision) -> None:
    """Move the aliases a decision names and record it: on its version as promotion.* tags and, when the
    champion changes, in the model's history. The history entry is written first, pending, and settled
    last, so a crash anywhere in between is completed by `recover` (see the module docstring)."""
    # Re-promoting the champion moves nothing, not even `challenger`; a rollback or a force judges no challenger.
    if d.champion_before != d.version and d.decision in ("promoted", "kept", "rejected"):
        client.set_registered_model_alias(d.model, CHALLENGER, d.version)
    if not d.recorded:
        return
    tags = _promotion_tags(d).as_mlflow()
    card = d.summary()
    if d.decision in MOVES_CHAMPION:
        change = history.Change.now(d.decision, d.version, d.champion_before, d.reason, d.metric, d.challenger_score,
                                    d.champion_score, draws=len(d.seeds) or None, seeds=d.seeds or None,
                                    difference=d.difference, bound=d.bound, min_effect=d.min_effect)
        pending = history.Change(**{**asdict(change), "pending": {"tags": _short(tags), "card": card[:1000]}})
        key = history.record(client, d.model, pending)
        faults.point("promote.history")
        _complete(client, d.model, d.version, tags, card)
        history.settle(client, d.model, key, change)
    else:
        _record_on_version(client, d.model, d.version, tags, card)


def _promotion_tags(d: Decision) -> PromotionTags:
    return PromotionTags(
        decision=d.decision, reason=d.reason[:4900], metric=d.metric or "none",
        challenger_score=_fmt(d.challenger_score), champion_score=_fmt(d.champion_score),
        champion_version=d.champion_before or "none", reevaluated=str(d.reevaluated).lower(),
        draws=str(len(d.seeds)), seeds=json.dumps(d.seeds), difference=_fmt(d.difference), bound=_fmt(d.bound),
        min_effect=_fmt(d.min_effect), at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def _short(tags: dict[str, str]) -> dict[str, str]:
    # The pending entry holds the reason already (Change.reason); one tag value holds 5,000 characters.
    return {k: (v[:history.REASON_CHARS // 2] if k.endswith(".reason") else v) for k, v in tags.items()}


def _complete(client, model: str, version: str, tags: dict[str, str], card: str) -> None:
    """The writes of a champion change after its history entry: the alias, then the version's record.
    Each is idempotent, so `recover` may repeat them all."""
    client.set_registered_model_alias(model, CHAMPION, version)
    faults.point("promote.alias")
    _record_on_version(client, model, version, tags, card)


def _record_on_version(client, model: str, version: str, tags: dict[str, str], card: str) -> None:
    for k, v in tags.items():  # promotion.decision last (PromotionTags.as_mlflow): the mark of a decided version
        client.set_model_version_tag(model, version, k, v)
    description = client.get_model_version(model, version).description
    client.update_model_version(model, version, description=with_promotion(description, card))


def recover(client, name: str) -> str | None:
    """Complete a champion change that a crash cut short (its history entry still pending): the alias and
    the version's tags as the decision had them. Returns the version it completed, else None. Called under
    the promotion lock before every decision, force and rollback."""
    try:
        found = history.entries(client, name)
    except Exception:  # noqa: BLE001 - no such model yet: nothing to recover
        return None
    if not found or found[-1][1].pending is None:
        return None
    key, change = found[-1]
    pending = change.pending or {}
    _complete(client, name, change.version, pending.get("tags", {}), pending.get("card", change.reason))
    history.settle(client, name, key, change)
    print(f"{name}: completed the {change.kind} of version {change.version} that an interrupted gate had "
          "recorded but not finished (alias and tags written now)")
    return change.version


def require_model(client, name: str, version: str | None = None) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            has = f" (so it has no version {version!r})" if version is not None else ""
            raise UserError(f"model {name!r} is not registered in {_uri()}{has}; registered models: "
                            f"{_names(client)}") from None
        raise UserError(f"cannot read model {name!r} from MLflow at {_uri()}: {exc.message}") from None


def _model_version(client, name: str, version: str):
    from mlflow.exceptions import MlflowException

    require_model(client, name, version)
    try:
        return client.get_model_version(name, version)
    except MlflowException:
        raise UserError(f"model {name!r} has no version {version!r}; its versions: "
                        f"{_versions(client, name)}") from None


def _names(client) -> str:
    try:
        names = sorted(m.name for m in client.search_registered_models())
    except Exception:  # noqa: BLE001 - only decorates the message
        return "(could not list)"
    return ", ".join(names) or "none"


def _versions(client, name: str) -> str:
    try:
        found = client.search_model_versions(f"name = '{name}'")
    except Exception:  # noqa: BLE001 - only decorates the message
        return "(could not list)"
    return ", ".join(sorted((str(v.version) for v in found), key=int)) or "none"


def _uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def _champion(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _code_changed(name: str, version: str) -> str | None:
    """Why the version's logged code (what serving runs) disqualifies it, or None: changed after registration."""
    from flows.registry.versions import check_code

    return check_code(name, version)


def _run_failure(client, run_id: str | None) -> str | None:
    """Why the version's run disqualifies it, or None. A deleted run is not held against it."""
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - run gone (store pruned): judge the version by its scores
        return None
    if run.info.status in BAD_RUN_STATUSES:
        why = run.data.tags.get("ganflow.failure", "no reason recorded")
        return f"its run {run_id} ended {run.info.status}: {why}"
    return None


class _Gauge:
    """The gate's measurement: a registered version's primary metric on the workspace's current holdout,
    by its current judge at the judge's frozen sample count, at each of `seeds` (drawn fresh for this
    decision), recorded on the version (reeval.*)."""

    def __init__(self, client, name: str, paths: RunPaths, params: Params, seeds: list[int] | None = None):
        from flows import evaluate as ev
        from flows.data.load import CLASSIFIER, CLASSIFIER_INFO, MANIFEST, PROCESSED, load_manifest

        ws = paths.workspace
        if not (ws / MANIFEST).exists() or not (ws / CLASSIFIER_INFO).exists():
            raise UserError(f"the gate measures {name!r}'s versions on the workspace's holdout, and {ws} has no "
                            f"prepared data ({PROCESSED} and {CLASSIFIER}): run `ganflow prepare` first")
        self.client, self.name = client, name
        manifest = load_manifest(ws)
        if manifest.get("name") != params.data.name:  # e.g. prepared by a one-off `--set data.name=...` run
            raise UserError(f"the gate measures on the holdout of {params.data.name}, and the prepared data in {ws} "
                            f"is {manifest.get('name')} (a run's --set left it): run `ganflow prepare` first")
        self.metric = ev.PRIMARY[manifest["kind"]]
        self.evaluator_version = json.loads((ws / CLASSIFIER_INFO).read_text())["evaluator_version"]
        self.data_version = _data_version(ws, manifest)
        self.evaluator = ev.Evaluator(ws, split="holdout")  # holdout features computed once, for both models
        self.samples = ev.judge_protocol(ws, params)[0]  # the sample count frozen with the judge
        # Fresh per decision, from the OS's entropy: no version can be fitted to a draw known in advance.
        self.seeds = seeds if seeds is not None else [secrets.randbelow(2**31) for _ in range(params.promotion.draws)]
        self.where = (f"{len(self.seeds)} paired draws of {self.samples} samples (seeds {self.seeds}) on holdout "
                      f"{self.data_version[:12]}, evaluator {self.evaluator_version}")

    def measure(self, version: str) -> list[float] | None:
        """The version's primary metric at each seed; None when any draw is not finite."""
        from flows.registry.versions import load_generator

        G = load_generator(f"models:/{self.name}/{version}")
        values = []
        for seed in self.seeds:
            # full=False: the primary metric (fd / reverse_kl) without the k-NN extras nobody compares here.
            metrics, samples = self.evaluator.measure(G, self.samples, seed, full=False)
            # NaN/Inf samples are no generator, whatever a metric that skips them would say.
            values.append(float(metrics[self.metric]) if bool(samples.isfinite().all()) else math.nan)
        finite = all(math.isfinite(v) for v in values)
        tags = {
            f"reeval.{self.metric}": _fmt(float(np.mean(values))),
            "reeval.draws": str(len(values)),
            "reeval.data_version": self.data_version,
            "reeval.evaluator_version": self.evaluator_version,
            "reeval.at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        for k, v in tags.items():
            self.client.set_model_version_tag(self.name, version, k, v)
        return values if finite else None


def _data_version(workspace: Path, manifest: dict) -> str:
    """DVC's md5 of data/processed; without a dvc.lock (data prepared outside DVC), a hash of the
    manifest's file checksums, prefixed so the two are never mistaken for each other."""
    from flows.data import dvc

    try:
        return dvc.data_version(workspace)
    except UserError:
        digest = hashlib.md5(json.dumps(manifest.get("md5", {}), sort_keys=True).encode()).hexdigest()
        return f"manifest-{digest[:12]}"
