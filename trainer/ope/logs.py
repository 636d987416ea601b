"""Logged decisions joined with their feedback: read from Redis, exported, re-read.

Source of truth is the feedback stream (``RedisKeys.stream``): every entry is one
transition as the trainer learns it (``trainer.transport.bus.transition_to_json``: event id, user,
history, action, reward, done, propensity under the serving policy, policy version,
source). Its entry id carries the time it was logged (milliseconds). The decision itself
(``RedisKeys.decision``) holds the whole slate while it has not expired; when present it
gives the *position* of the fed-back item in the slate (−1 when unknown).

Export format (JSON lines, one transition per line, UTF-8)::

    {"event_id": "...", "user_id": 3, "history": [4, 9], "action": 7, "reward": 1.0,
     "done": false, "propensity": 0.12, "policy_version": 5, "source": "theta",
     "entry_id": "1718000000000-0", "logged_at": "2024-06-10T06:13:20+00:00",
     "position": 0, "slate": [7, 2], "slate_propensities": [0.12, 0.3]}

``slate`` / ``slate_propensities`` are null when the decision had expired at export time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from policy.types import PAD, Transition
from trainer.transport.bus import transition_from_json
from trainer.transport.keys import RedisKeys


class LogError(ValueError):
    """Logged data are missing or unusable."""


@dataclass(frozen=True)
class LoggedRecord:
    """One exported row: a transition with where and when it was logged."""

    transition: Transition
    entry_id: str = ""
    """Feedback stream entry id ("" for records from another source)."""
    logged_at: float = float("nan")
    """Unix time the feedback was logged (from the entry id)."""
    position: int = -1
    """Position of the action in the served slate; −1 when unknown."""
    slate: tuple[int, ...] | None = None
    slate_propensities: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON lines row (see the module docstring)."""
        t = self.transition
        return {
            "event_id": t.event_id, "user_id": t.user_id, "history": list(t.history),
            "action": t.action, "reward": t.reward, "done": t.done,
            "propensity": t.propensity, "policy_version": t.policy_version,
            "source": t.source, "entry_id": self.entry_id,
            "logged_at": (None if not np.isfinite(self.logged_at) else
                          datetime.fromtimestamp(self.logged_at, UTC).isoformat()),
            "position": self.position,
            "slate": None if self.slate is None else list(self.slate),
            "slate_propensities": (None if self.slate_propensities is None
                                   else list(self.slate_propensities)),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoggedRecord:
        """Inverse of :meth:`to_dict`; raises :class:`LogError` on a malformed row."""
        try:
            t = transition_from_json(json.dumps(d))
            at = d.get("logged_at")
            ts = float("nan") if not at else parse_time(str(at))
            slate = d.get("slate")
            sp = d.get("slate_propensities")
            return cls(t, str(d.get("entry_id", "")), ts, int(d.get("position", -1)),
                       None if slate is None else tuple(int(x) for x in slate),
                       None if sp is None else tuple(float(x) for x in sp))
        except (ValueError, TypeError) as exc:
            raise LogError(f"malformed logged record: {exc}") from exc


def parse_time(text: str) -> float:
    """ISO 8601 (naive = UTC) or a Unix timestamp → Unix seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise LogError(f"not an ISO 8601 time or Unix timestamp: {text!r}") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes | bytearray) else str(x)


def read_stream(
    client: Any, keys: RedisKeys, *, since: float | None = None, count: int = 1000,
    join_decisions: bool = True,
) -> list[LoggedRecord]:
    """Every transition on the feedback stream logged at or after ``since`` (Unix seconds),
    oldest first, read with ``XRANGE`` pages of ``count``; ``client`` is a synchronous
    ``redis.Redis``. Malformed entries are skipped (the trainer dead-letters them too).
    With ``join_decisions`` the stored decision (if not expired) gives slate and position.
    """
    start = "-" if since is None else f"{int(since * 1000)}-0"
    out: list[LoggedRecord] = []
    while True:
        page = client.xrange(keys.stream, min=start, max="+", count=count)
        if not page:
            break
        for entry_id, fields in page:
            eid = _s(entry_id)
            raw = fields.get(b"t", fields.get("t"))
            if raw is None:
                continue
            try:
                t = transition_from_json(_s(raw))
            except ValueError:
                continue
            out.append(LoggedRecord(t, eid, int(eid.split("-")[0]) / 1000.0))
        last = _s(page[-1][0])
        ms, seq = last.split("-")
        start = f"{ms}-{int(seq) + 1}"
        if len(page) < count:
            break
    if join_decisions and out:
        out = _join(client, keys, out)
    return out


def _join(client: Any, keys: RedisKeys, records: list[LoggedRecord]) -> list[LoggedRecord]:
    joined: list[LoggedRecord] = []
    for start in range(0, len(records), 500):
        part = records[start:start + 500]
        raws = client.mget([keys.decision(r.transition.event_id) for r in part])
        for rec, raw in zip(part, raws, strict=True):
            if raw is None:
                joined.append(rec)
                continue
            d = json.loads(raw)
            items = tuple(int(x) for x in d.get("i", []))
            props = tuple(float(x) for x in d.get("p", []))
            a = rec.transition.action
            pos = items.index(a) if a in items else -1
            joined.append(LoggedRecord(rec.transition, rec.entry_id, rec.logged_at, pos,
                                       items, props))
    return joined


def write_jsonl(records: Iterable[LoggedRecord], path: str | Path) -> int:
    """Write records as JSON lines (atomically: a temporary file renamed); returns how
    many were written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec.to_dict(), separators=(",", ":"), allow_nan=False))
            fh.write("\n")
            n += 1
    tmp.replace(target)
    return n


def read_jsonl(path: str | Path) -> Iterator[LoggedRecord]:
    """Records of a JSON lines export (blank lines skipped); :class:`LogError` names the
    line of a malformed row."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield LoggedRecord.from_dict(json.loads(line))
            except (LogError, json.JSONDecodeError) as exc:
                raise LogError(f"{path}:{lineno}: {exc}") from exc


@dataclass(frozen=True)
class LoggedArrays:
    """Logged decisions as arrays, ready for the estimators."""

    histories: np.ndarray
    """[N, L] int64, right-aligned, ``PAD``-padded."""
    user_ids: np.ndarray
    actions: np.ndarray
    propensities: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    versions: np.ndarray

    def __len__(self) -> int:
        return len(self.actions)


def to_arrays(transitions: Sequence[Transition], *, max_len: int = 50) -> LoggedArrays:
    """Stack transitions (histories cut to their last ``max_len`` items)."""
    n = len(transitions)
    hist = np.full((n, max_len), PAD, dtype=np.int64)
    for i, t in enumerate(transitions):
        h = t.history[-max_len:]
        if h:
            hist[i, max_len - len(h):] = h
    return LoggedArrays(
        histories=hist,
        user_ids=np.asarray([t.user_id for t in transitions], dtype=np.int64),
        actions=np.asarray([t.action for t in transitions], dtype=np.int64),
        propensities=np.asarray([t.propensity for t in transitions], dtype=np.float64),
        rewards=np.asarray([t.reward for t in transitions], dtype=np.float64),
        dones=np.asarray([t.done for t in transitions], dtype=bool),
        versions=np.asarray([t.policy_version for t in transitions], dtype=np.int64),
    )
