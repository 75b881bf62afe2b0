"""The champion's history: every move of the `champion` alias, and the rollback that walks it back.

Each change is one tag on the registered model in MLflow (``champion.history.<UTC time>``, a JSON
record), so every machine that shares the tracking server reads one history, and nothing but MLflow is
needed to keep it. Writers: the gate's ``apply`` (promotions and rollbacks), under the promotion lock.
Versions promoted before this history existed (or aliases moved by hand) are not in it; a rollback
refuses to guess past them.
"""
from __future__ import annotations

import getpass
import json
import socket
import time
from dataclasses import asdict, dataclass
from typing import Literal

from flows.servers import redact_text

PREFIX = "champion.history."
REASON_CHARS = 2000  # a tag value holds 5,000 characters in the SQL stores

ChangeKind = Literal["promoted", "rollback", "forced"]


@dataclass(frozen=True)
class Change:
    at: str  # UTC, ISO 8601
    kind: ChangeKind
    version: str  # champion after the change
    previous: str | None  # champion before it (None: there was none)
    metric: str | None
    score: float | None  # the new champion's score as the gate measured it (None for a rollback)
    previous_score: float | None
    reason: str
    by: str  # user@host that made the change
    # The gate's numbers behind a promotion (entries written before the paired gate have none): draws,
    # their seeds, the mean paired difference relative to the champion and its upper confidence bound.
    draws: int | None = None
    seeds: list[int] | None = None
    difference: float | None = None
    bound: float | None = None
    min_effect: float | None = None
    # Written before the alias moves and cleared once every write of the change is done: what is left to
    # write ({"tags": the version's promotion.* tags, "card": its card line}). A change still pending
    # was cut short by a crash, and the next promotion or rollback completes it first.
    pending: dict | None = None

    @staticmethod
    def now(kind: ChangeKind, version: str, previous: str | None, reason: str, metric: str | None = None,
            score: float | None = None, previous_score: float | None = None, **gate) -> "Change":
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no login name (some containers): the host still says where
            user = "?"
        return Change(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), kind, version, previous, metric,
                      score, previous_score, redact_text(reason)[:REASON_CHARS], f"{user}@{socket.gethostname()}",
                      **gate)


def record(client, model: str, change: Change) -> str:
    """Write `change` as a new entry; returns its key (for settle)."""
    # Microseconds in the key: two changes in one second keep their order, and keys sort as times do.
    key = PREFIX + time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f".{time.time_ns() // 1000 % 1_000_000:06d}Z"
    client.set_registered_model_tag(model, key, json.dumps(asdict(change)))
    return key


def settle(client, model: str, key: str, change: Change) -> None:
    """Mark the entry at `key` done: nothing of it is left to write."""
    client.set_registered_model_tag(model, key, json.dumps({**asdict(change), "pending": None}))


def entries(client, model: str) -> list[tuple[str, Change]]:
    """(key, change) of every entry, oldest first."""
    tags = client.get_registered_model(model).tags
    return [(k, Change(**json.loads(tags[k]))) for k in sorted(k for k in tags if k.startswith(PREFIX))]


def read(client, model: str) -> list[Change]:
    """The model's champion changes, oldest first."""
    return [c for _, c in entries(client, model)]


def lineage(changes: list[Change]) -> list[str]:
    """The champions a rollback walks back through, oldest first; the last is the current champion.
    A promotion (forced or not) stacks its version; a rollback unstacks down to the version it returned to."""
    stack: list[str] = []
    for c in changes:
        if c.kind == "rollback" and c.version in stack:
            del stack[stack.index(c.version) + 1:]
        else:
            stack.append(c.version)
    return stack


def table(model: str, changes: list[Change], champion: str | None) -> str:
    """What `ganflow history` prints."""
    if not changes:
        return f"{model}: no champion changes recorded; champion now: {champion or 'none'}"
    fmt = lambda x: "-" if x is None else format(x, ".4g")  # noqa: E731
    lines = [f"{model}: {len(changes)} champion change(s), oldest first",
             f"{'when (UTC)':<21}{'version':>8}{'from':>6}  {'decision':<9}{'metric':<11}{'score':>9}{'was':>9}  by: why"]
    lines += [f"{c.at:<21}{c.version:>8}{c.previous or '-':>6}  {c.kind:<9}{c.metric or '-':<11}"
              f"{fmt(c.score):>9}{fmt(c.previous_score):>9}  {c.by}: {c.reason[:160]}" for c in changes]
    lines.append(f"champion now: version {champion or 'none'}")
    return "\n".join(lines)
