"""LAAC's training data: D, the logged transitions of the training users (with
never-consumed negatives drawn by :class:`NegativeSampler`), and D_LLM, the reference
policy's picks among drawn candidates (:func:`draw_candidates`), built by asking the judge
(:func:`build_llm_dataset`) and cached on disk (:func:`dllm_cache_file`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policy.judge.base import BaseJudge
from policy.types import pad_histories

log = logging.getLogger(__name__)

_DLLM_FORMAT = 1


# -- D: logged transitions ----------------------------------------------------------------
@dataclass(frozen=True)
class LoggedTransitions:
    """D: every (s, a, r = 1, s', done) of the training logs."""

    histories: np.ndarray
    """[N, L] states, PAD-padded, right-aligned."""
    user_ids: np.ndarray
    """[N] user ids."""
    actions: np.ndarray
    """[N] the logged (consumed) item."""
    next_histories: np.ndarray
    """[N, L] next states (the state plus the action)."""
    dones: np.ndarray
    """[N] float32, 1 at the last position of a sequence."""
    sequences: np.ndarray
    """[N] index of the log the transition came from (for "never consumed" negatives)."""

    def __len__(self) -> int:
        return len(self.actions)

    def digest(self) -> str:
        """A hash of the whole data set (cache keys)."""
        h = hashlib.sha1()
        for arr in (self.histories, self.user_ids, self.actions, self.dones):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


def logged_transitions(logs: Sequence[Any], users: Sequence[int], max_len: int
                       ) -> LoggedTransitions:
    """D of the package docstring: positions t ≥ 1 of every sequence."""
    hist: list[Sequence[int]] = []
    nexts: list[Sequence[int]] = []
    uids: list[int] = []
    actions: list[int] = []
    dones: list[float] = []
    seqs: list[int] = []
    for s_idx, (seq, user) in enumerate(zip(logs, users, strict=True)):
        items = [int(i) for i in seq]
        for t in range(1, len(items)):
            hist.append(items[max(0, t - max_len):t])
            nexts.append(items[max(0, t + 1 - max_len):t + 1])
            uids.append(int(user))
            actions.append(items[t])
            dones.append(1.0 if t == len(items) - 1 else 0.0)
            seqs.append(s_idx)
    return LoggedTransitions(
        histories=pad_histories(hist, max_len),
        user_ids=np.asarray(uids, dtype=np.int64),
        actions=np.asarray(actions, dtype=np.int64),
        next_histories=pad_histories(nexts, max_len),
        dones=np.asarray(dones, dtype=np.float32),
        sequences=np.asarray(seqs, dtype=np.int64),
    )


class NegativeSampler:
    """Draws items a user never consumed (anywhere in their log)."""

    def __init__(self, logs: Sequence[Any], num_items: int, weights: np.ndarray | None) -> None:
        self.num_items = num_items
        keys = [np.asarray(seq, dtype=np.int64) + s * num_items for s, seq in enumerate(logs)
                if len(seq)]
        # Sorted (sequence, item) keys: membership is one searchsorted per draw.
        self._consumed = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
        self._cdf = None if weights is None else np.cumsum(weights / weights.sum())

    def _draw(self, size: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        if self._cdf is None:
            return rng.integers(self.num_items, size=size)
        idx = np.searchsorted(self._cdf, rng.random(size), side="right")
        return np.minimum(idx, self.num_items - 1)

    def consumed(self, sequences: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each (sequence, item) pair is in the logs (broadcast shapes)."""
        if not len(self._consumed):
            return np.zeros(np.broadcast(sequences, items).shape, dtype=bool)
        keys = sequences * self.num_items + items
        pos = np.minimum(np.searchsorted(self._consumed, keys), len(self._consumed) - 1)
        return self._consumed[pos] == keys

    def sample(self, sequences: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """[B, n] items never consumed by the users of ``sequences`` [B]."""
        seq = np.repeat(sequences[:, None], n, axis=1)  # [B, n]
        out = self._draw(seq.shape, rng)
        # Redraw collisions a few times; a user who consumed most of a tiny catalogue may
        # keep one (its r = 0 is then slightly wrong, never a crash).
        for _ in range(10):
            bad = self.consumed(seq, out)
            if not bad.any():
                break
            out[bad] = self._draw(int(bad.sum()), rng)
        return out


# -- D_LLM: the reference policy's suggestions ----------------------------------------------
@dataclass(frozen=True)
class LLMDataset:
    """D_LLM: states of D with the judge's pick among k popularity-drawn candidates."""

    histories: np.ndarray
    """[M, L] states."""
    user_ids: np.ndarray
    """[M] user ids."""
    llm_actions: np.ndarray
    """[M] a_LLM, the judge's pick."""
    data_actions: np.ndarray
    """[M] a_data, the logged next item at that state."""
    candidates: np.ndarray
    """[M, k] what the judge was shown."""
    asked: int
    """States the judge was asked about (M plus those answered None or unparseably)."""
    answers: dict[str, int]
    """Counts of the answer kinds (item, none, unparseable)."""

    def __len__(self) -> int:
        return len(self.llm_actions)

    @property
    def unexplored(self) -> np.ndarray:
        """[M] bool: a_LLM differs from the logged action at that state."""
        return self.llm_actions != self.data_actions


def _empty_llm(max_len: int, k: int) -> LLMDataset:
    return LLMDataset(np.zeros((0, max_len), np.int64), np.zeros(0, np.int64),
                      np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, k), np.int64),
                      0, {"item": 0, "none": 0, "unparseable": 0})


def dllm_cache_file(cache_dir: Path, tag: str, judge: BaseJudge, data: LoggedTransitions,
                    counts: np.ndarray, *, llm_states: int, k: int, seed: int) -> Path:
    """Where D_LLM of these inputs is cached (a hash of everything that decides it)."""
    ident = json.dumps({"format": _DLLM_FORMAT, "tag": tag, "judge": judge.cache_identity(),
                        "llm_states": llm_states, "k": k, "seed": seed,
                        "data": data.digest(),
                        "counts": hashlib.sha1(counts.tobytes()).hexdigest()}, sort_keys=True)
    key = hashlib.sha1(ident.encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in tag) or "dllm"
    return cache_dir / f"{safe}-{key}.npz"


def _load_llm(path: Path) -> LLMDataset | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return LLMDataset(z["histories"], z["user_ids"], z["llm_actions"],
                              z["data_actions"], z["candidates"], int(meta["asked"]),
                              {str(k): int(v) for k, v in meta["answers"].items()})
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring unreadable D_LLM cache %s (%s)", path, exc)
        return None


def _save_llm(path: Path, d: LLMDataset) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}.npz")
    meta = json.dumps({"asked": d.asked, "answers": d.answers})
    np.savez(tmp, histories=d.histories, user_ids=d.user_ids, llm_actions=d.llm_actions,
             data_actions=d.data_actions, candidates=d.candidates, meta=np.asarray(meta))
    os.replace(tmp, path)  # atomic: a concurrent or interrupted run never sees half a file


def draw_candidates(histories: np.ndarray, weights: np.ndarray, k: int,
                    rng: np.random.Generator) -> np.ndarray:
    """[B, k] distinct items outside each state, drawn without replacement in proportion
    to ``weights`` [I] (Gumbel top-k: one vectorised draw per batch)."""
    n = len(weights)
    keys = np.log(weights)[None, :] + rng.gumbel(size=(len(histories), n))  # [B, I]
    rows, cols = np.nonzero(histories >= 0)
    keys[rows, histories[rows, cols]] = -np.inf
    top = np.argpartition(-keys, k - 1, axis=1)[:, :k]  # [B, k] unordered
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def build_llm_dataset(
    data: LoggedTransitions, judge: BaseJudge, counts: np.ndarray, *, llm_states: int, k: int,
    seed: int, cache_dir: Path | None = None, cache_tag: str = "", progress: bool = False,
    chunk: int = 256,
) -> tuple[LLMDataset, dict[str, Any]]:
    """D_LLM of the package docstring (from the cache when it holds it); returns it and
    ``{"cached": bool, "path": str | None, "seconds": float}``."""
    from tqdm import tqdm

    max_len = data.histories.shape[1]
    started = time.perf_counter()
    path = None
    if cache_dir is not None:
        path = dllm_cache_file(cache_dir, cache_tag, judge, data, counts,
                               llm_states=llm_states, k=k, seed=seed)
        if path.is_file() and (found := _load_llm(path)) is not None:
            return found, {"cached": True, "path": str(path),
                           "seconds": time.perf_counter() - started}
    n_items = len(counts)
    if llm_states == 0 or not len(data) or k > n_items - max_len:
        if llm_states and len(data):
            log.warning("catalogue of %d items is too small for k=%d outside a state of up "
                        "to %d items: no D_LLM", n_items, k, max_len)
        d = _empty_llm(max_len, k)
    else:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 59]))
        rows = np.sort(rng.choice(len(data), size=min(llm_states, len(data)), replace=False))
        weights = np.asarray(counts, dtype=np.float64) + 1.0  # + 1: unlogged items too
        keep_rows: list[int] = []
        picks: list[int] = []
        cands_all: list[np.ndarray] = []
        answers = {"item": 0, "none": 0, "unparseable": 0}
        bar = tqdm(total=len(rows), desc="LAAC: asking the judge", unit="state",
                   disable=not progress)
        for start in range(0, len(rows), chunk):
            idx = rows[start:start + chunk]
            states = data.histories[idx]  # [b, L]
            cands = draw_candidates(states, weights, k, rng)  # [b, k]
            hists = [[int(i) for i in row if i >= 0] for row in states]
            for j, ans in enumerate(judge.judge_batch(hists, cands.tolist())):
                answers[ans.kind] = answers.get(ans.kind, 0) + 1
                if ans.kind == "item" and ans.index is not None:
                    keep_rows.append(int(idx[j]))
                    picks.append(int(cands[j, ans.index]))
                    cands_all.append(cands[j])
            bar.update(len(idx))
        bar.close()
        kr = np.asarray(keep_rows, dtype=np.int64)
        d = LLMDataset(
            histories=data.histories[kr].reshape(len(kr), max_len),
            user_ids=data.user_ids[kr], llm_actions=np.asarray(picks, dtype=np.int64),
            data_actions=data.actions[kr],
            candidates=(np.stack(cands_all) if cands_all else np.zeros((0, k), np.int64)),
            asked=len(rows), answers=answers)
    if path is not None:
        _save_llm(path, d)
    return d, {"cached": False, "path": None if path is None else str(path),
               "seconds": time.perf_counter() - started}

