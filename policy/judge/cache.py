"""On-disk cache of judge replies, keyed by the backend's identity and the prompt.

Asking a language model is the slow, costly part of distillation; with the cache a run that
stops can be resumed and a finished run repeated without a single new request. Raw replies
are stored (not parsed answers) so that a better parser applies to old replies too.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path


def default_cache_dir() -> Path:
    """``$IALP_CACHE_DIR``, else ``$XDG_CACHE_HOME/ialp``, else ``~/.cache/ialp``."""
    env = os.environ.get("IALP_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ialp"


def cache_key(backend: str, prompt: str) -> str:
    """SHA-256 over the backend fingerprint and the exact prompt text."""
    h = hashlib.sha256()
    h.update(backend.encode("utf-8"))
    h.update(b"\x00")
    h.update(prompt.encode("utf-8"))
    return h.hexdigest()


class AnswerCache:
    """A SQLite table ``key -> reply`` (WAL mode, safe across processes)."""

    def __init__(self, path: str | Path | None = None) -> None:
        """Open (or create) the cache at ``path``; default ``<cache dir>/judge/answers.sqlite``."""
        self.path = Path(path) if path is not None else default_cache_dir() / "judge" / (
            "answers.sqlite"
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, backend TEXT NOT NULL, "
            "reply TEXT NOT NULL, created REAL NOT NULL)"
        )
        self._db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        """Stored replies of those ``keys`` that are present."""
        out: dict[str, str] = {}
        with self._lock:
            # SQLite limits bound parameters per statement; 500 is well under it.
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, reply FROM replies WHERE key IN ({marks})", chunk
                ).fetchall()
                out.update({str(k): str(v) for k, v in rows})
        return out

    def put_many(self, backend: str, items: Iterable[tuple[str, str]]) -> None:
        """Store ``(key, reply)`` pairs in one transaction (first writer wins)."""
        now = time.time()
        rows = [(k, backend, r, now) for k, r in items]
        if not rows:
            return
        with self._lock:
            self._db.executemany(
                "INSERT OR IGNORE INTO replies (key, backend, reply, created) VALUES (?,?,?,?)",
                rows,
            )
            self._db.commit()

    def __bool__(self) -> bool:
        # An empty cache is still a cache: ``cache or default`` must not discard it.
        return True

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()
