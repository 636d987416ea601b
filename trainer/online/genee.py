"""GenEE service mode: a Generative Explore-Exploit pool that restricts π_β.

With ``genee`` on (scheme ``ap``), the trainer holds a :class:`~trainer.gee.GenEEPool`
over the served catalogue and publishes every version with ``beta_pool`` set to the pool,
so the learnable policy β explores only among the pool's items (θ keeps the whole
catalogue; ``policy/mixed.py`` masks and renormalises π_β). The GenEE loop runs on the
live feedback:

* **What is measured.** Every transition the learner learns (after deduplication, A/B
  control-arm events excluded: :meth:`GenEEMode.feed` is called exactly where the learner
  is fed) whose action is a pool item counts one impression of that item with its reward,
  whichever network chose it: the CTR analogue of an item is its mean reward per
  impression, as in ``trainer/gee/``.
* **Iterations.** Once the pool items have ``impressions`` impressions in the current
  iteration (``GEEConfig.impressions``, default :data:`DEFAULT_IMPRESSIONS`), the
  iteration ends: the worst items are dropped and new ones proposed (exploit / explore).
  A batch is fed one transition at a time, so the transitions after an iteration's end
  count for the next pool. After ``iterations`` measurements the pool is final.
* **Proposals** come from the items' texts (``genee_items``): their sentence vectors
  (the packaged all-MiniLM-L6-v2, encoded once and cached in the state directory) for the
  embedding proposer, or an LLM backend named by judge options (``trainer.gee``).
* **Restarts.** :meth:`GenEEMode.state_dict` (pool, this iteration's counts, the log,
  random generators) is saved inside the trainer's state file with every publication, so
  it always describes exactly the events of the saved version: events learned after it
  are learned again after a crash, and the pool then counts them again from the saved
  state, never twice. In-process re-learning (a rollback, a rejected update) restores the
  state of the last publication the same way (``TrainerService._requeue_held``).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer.gee import GEEConfig, GenEEPool, make_proposer, sentence_encoder

if TYPE_CHECKING:
    from policy.types import Transition
    from trainer.online.settings import TrainerSettings

logger = logging.getLogger(__name__)

DEFAULT_IMPRESSIONS = 1000
"""Pool-item feedback events per iteration when ``GEEConfig.impressions`` is unset (an
experiment derives it from its length; a service has none)."""

VECTORS_PREFIX = "genee-item-vectors"
"""Cached text vectors in the state directory: ``{prefix}-{items}-{texts hash}.npy``."""


def read_item_texts(path: Path, num_items: int) -> list[str]:
    """The text of every item index, ``num_items`` of them, from ``path``.

    ``.tsv`` / ``.csv``: an items file of the bring-your-own dataset format (header with
    an ``item_id`` column, row i = item i); an item's text is its other non-empty fields
    joined with ``"; "`` in column order, as ``ialp env build`` reads it. Any other
    suffix: a UTF-8 text file with one line per item index. Raises ValueError naming the
    file when it is missing, holds an empty text or does not have ``num_items`` rows."""
    if not path.is_file():
        raise ValueError(f"genee_items: {path} does not exist")
    raw = path.read_text(encoding="utf-8")
    texts: list[str] = []
    if path.suffix.lower() in (".tsv", ".csv"):
        delimiter = "," if path.suffix.lower() == ".csv" else "\t"
        rows = list(csv.reader(raw.splitlines(), delimiter=delimiter))
        if not rows or "item_id" not in rows[0]:
            raise ValueError(f"{path}: the header must have an 'item_id' column")
        id_col = rows[0].index("item_id")
        for line, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            fields = [f.strip() for c, f in enumerate(row) if c != id_col and f.strip()]
            if not fields:
                raise ValueError(f"{path}:{line}: the item has no text (every attribute "
                                 "column is empty)")
            texts.append("; ".join(fields))
    else:
        for line, text in enumerate(raw.splitlines(), start=1):
            if not text.strip():
                # A blank line would shift every later item onto the wrong index.
                raise ValueError(f"{path}:{line}: empty line (one text per item index)")
            texts.append(text.strip())
    if len(texts) != num_items:
        raise ValueError(f"{path}: {len(texts)} item texts, but the policy's catalogue has "
                         f"{num_items} items (row i must be item index i)")
    return texts


def item_vectors(texts: Sequence[str], cache_dir: Path,
                 encode: Callable[[list[str]], np.ndarray] | None = None) -> np.ndarray:
    """Unit text vectors of ``texts`` [I, D], cached in ``cache_dir`` by the texts' hash
    (a restart does not encode the catalogue again). ``encode`` defaults to the packaged
    sentence encoder."""
    key = hashlib.sha1("\n".join(texts).encode("utf-8")).hexdigest()[:16]
    path = cache_dir / f"{VECTORS_PREFIX}-{len(texts)}-{key}.npy"
    if path.is_file():
        vectors = np.load(path)
        if vectors.ndim == 2 and len(vectors) == len(texts):
            return np.asarray(vectors, dtype=np.float32)
        logger.warning("ignoring %s: its shape %s does not fit %d texts", path,
                       vectors.shape, len(texts))
    vectors = np.asarray((encode or sentence_encoder())(list(texts)), dtype=np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)  # atomic: a reader never loads half a file
    return vectors


class GenEEMode:
    """The trainer's GenEE pool and its iteration schedule (see the module docstring)."""

    def __init__(self, pool: GenEEPool, impressions: int) -> None:
        """``impressions``: pool-item feedback events per iteration."""
        if impressions < 1:
            raise ValueError("impressions must be positive")
        self.pool = pool
        self.impressions = impressions
        self._members = frozenset(pool.pool)  # membership test per fed transition

    @classmethod
    def build(cls, settings: TrainerSettings, num_items: int, *,
              saved: dict[str, Any] | None = None,
              encode: Callable[[list[str]], np.ndarray] | None = None) -> GenEEMode:
        """The mode of ``settings`` over a catalogue of ``num_items``; ``saved`` (a
        :meth:`state_dict`) resumes it. Reads the texts, encodes them (cached in the state
        directory) and builds the proposer; slow the first time, so run it off the event
        loop."""
        if settings.genee_items is None:
            raise ValueError("genee needs genee_items, the items' texts file")
        config = GEEConfig.from_hyper(dict(settings.genee_options))
        seed = config.seed if config.seed is not None else settings.seed
        texts = read_item_texts(settings.genee_items, num_items)
        vectors = item_vectors(texts, settings.state_dir, encode)
        proposer = make_proposer(config, texts, vectors, seed=seed)
        if saved is not None:
            # The saved pool replaces the initial one: build it the cheap way (no
            # proposals, which may be language-model calls), then load the state.
            pool = GenEEPool(replace(config, init="random"), num_items, proposer, seed=seed)
            pool.load_state_dict(saved)
            if pool.done:
                proposer.close()  # the pool is final: no backend is needed any more
        else:
            pool = GenEEPool(config, num_items, proposer, seed=seed)
        mode = cls(pool, config.impressions or DEFAULT_IMPRESSIONS)
        logger.info("GenEE: iteration %d of %d, pool %s, %d impressions per iteration%s",
                    pool.iteration, config.iterations, mode.items, mode.impressions,
                    " (resumed)" if saved is not None else "")
        return mode

    # -- state -----------------------------------------------------------------------
    @property
    def items(self) -> tuple[int, ...]:
        """The pool, sorted: what ``beta_pool`` is set to."""
        return tuple(sorted(self.pool.pool))

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state (a copy) for :meth:`load_state_dict`."""
        return self.pool.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (restores the pool, counts and log)."""
        self.pool.load_state_dict(state)
        self._members = frozenset(self.pool.pool)

    def pool_ctr(self) -> float | None:
        """Mean reward per pool impression in the iteration being measured (None before
        the first one)."""
        return self.pool.running_ctr

    def last_ctr(self) -> float | None:
        """CTR of the last finished iteration (None before the first ends)."""
        for entry in reversed(self.pool.log):
            if entry.get("ctr") is not None:
                return float(entry["ctr"])
        return None

    def summary(self) -> dict[str, Any]:
        """Scalars for a published version's metadata (the full log stays in the
        trainer's state file)."""
        return {"genee_iteration": self.pool.iteration, "genee_done": self.pool.done,
                "genee_impressions": self.pool.impressions,
                "genee_last_ctr": self.last_ctr()}

    def report(self) -> dict[str, Any]:
        """The GenEE report: per-iteration log, pool, proposer log, settings."""
        return {**self.pool.report(), "impressions_per_iteration": self.impressions}

    # -- the loop --------------------------------------------------------------------
    def feed(self, transitions: Sequence[Transition]) -> list[dict[str, Any]]:
        """Count the learned ``transitions`` whose action is a pool item, one at a time,
        ending every iteration whose impressions are in; returns the ended iterations'
        log entries. May call the proposer (a language model): run it off the event
        loop."""
        ended: list[dict[str, Any]] = []
        for t in transitions:
            if t.action not in self._members:
                continue
            self.pool.record([t.action], [t.reward])
            if not self.pool.done and self.pool.impressions >= self.impressions:
                entry = self.pool.end_iteration()
                self._members = frozenset(self.pool.pool)
                ended.append(entry)
                logger.info(
                    "GenEE iteration %d: CTR %s over %d impressions; dropped %s, added %s "
                    "(%s); pool now %s", entry["iteration"],
                    "n/a" if entry["ctr"] is None else f"{entry['ctr']:.4f}",
                    entry["impressions"], entry["dropped"], entry["added"],
                    ", ".join(entry["how"]) or "final pool", self.items)
        return ended


def nan_if_none(value: float | None) -> float:
    """``value``, or NaN for a gauge without a value yet."""
    return math.nan if value is None else float(value)


__all__ = ["DEFAULT_IMPRESSIONS", "GenEEMode", "item_vectors", "nan_if_none",
           "read_item_texts"]
