"""The learning audit: which feedback events went into which saved policy state.

Counters alone cannot prove exactly-once: a lost event and an event learned twice leave
every total unchanged. With ``IALP_AUDIT_LOG`` set, the trainer appends one JSON line per
step of its lineage, and :func:`learned_counts` replays the file into the number of times
each event id is inside the state the trainer would resume from:

* ``{"kind": "learn", "updates": u, "events": [...]}`` — written just *before* the state
  after update ``u`` is saved (a crash in between leaves a record of a state that was
  never saved; the next ``resume`` record discards it). Re-publishing the same state
  after an error writes the same ``u`` again and replaces the earlier record.
* ``{"kind": "resume", "updates": u}`` — the trainer (re)started from, or rolled back to,
  the saved state after update ``u``: every ``learn`` record with a larger ``u`` is
  discarded.
* ``{"kind": "reject", "updates": u, "events": [...], "reason": ...}`` — transitions of
  a refused update (non-finite), consumed without being learned.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class LearnAudit:
    """Appends lineage records to one file (each line flushed to the kernel at once, so a
    killed process keeps every line it wrote)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)

    def learn(self, updates: int, event_ids: Sequence[str]) -> None:
        """The state after update ``updates`` holds ``event_ids`` (besides older ones)."""
        self._write({"kind": "learn", "updates": int(updates), "events": list(event_ids)})

    def resume(self, updates: int) -> None:
        """The trainer continues from the saved state after update ``updates``."""
        self._write({"kind": "resume", "updates": int(updates)})

    def reject(self, updates: int, event_ids: Sequence[str], reason: str) -> None:
        """``event_ids`` were consumed by a refused update."""
        self._write({"kind": "reject", "updates": int(updates), "events": list(event_ids),
                     "reason": reason})


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of the file (a torn last line is ignored)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def learned_counts(path: str | Path) -> tuple[Counter[str], Counter[str]]:
    """``(learned, rejected)``: per event id, how often it is inside the resumable state,
    and how often it was consumed by a refused update."""
    learned: dict[int, list[str]] = {}
    rejected: dict[int, list[str]] = {}
    for rec in read_records(path):
        u = int(rec["updates"])
        if rec["kind"] == "resume":
            for table in (learned, rejected):
                for key in [k for k in table if k > u]:
                    del table[key]
        elif rec["kind"] == "learn":
            learned[u] = list(rec["events"])
        elif rec["kind"] == "reject":
            # A refused update does not advance ``updates``: key it apart from learning.
            rejected.setdefault(u, []).extend(rec["events"])
    counts: Counter[str] = Counter(e for ids in learned.values() for e in ids)
    refused: Counter[str] = Counter(e for ids in rejected.values() for e in ids)
    return counts, refused
