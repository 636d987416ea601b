"""Reference judges for comparisons: they answer the same question (which of k candidates
will the user pick next?) without a language model.

* :class:`RandomJudge`: a uniformly random candidate (chance level, 1/k).
* :class:`PopularJudge`: the candidate seen most often in the training users' logs (what a
  popularity list would answer; counts from operator data only, never test users').
* :class:`CooccurrenceJudge`: the candidate that most often *followed* the user's recent
  items in the training users' logs, smoothed towards popularity (an item-to-item model
  of the operator's own logs, the collaborative signal a language model would have to
  learn from them).

Both are :class:`BaseJudge` s, so reports, the judge-as-policy evaluation and distillation
treat them like any backend; their replies are never cached (nothing to save).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from policy.judge.base import BaseJudge, JudgeRequest
from policy.judge.prompt import LABELS, PromptBuilder


class RandomJudge(BaseJudge):
    """A uniformly random candidate (seeded: the same seed, the same answers in order)."""

    name = "random"

    def __init__(self, prompts: PromptBuilder, *, seed: int = 0) -> None:
        super().__init__(prompts, cache=None)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def fingerprint(self) -> str:
        return json.dumps({"seed": self.seed})

    def _respond(self, requests: Sequence[JudgeRequest]) -> list[str]:
        return [" " + LABELS[int(self._rng.integers(len(r.candidates)))] for r in requests]


class PopularJudge(BaseJudge):
    """The candidate with the most training interactions (ties: the first listed)."""

    name = "popular"

    def __init__(self, prompts: PromptBuilder, counts: np.ndarray) -> None:
        super().__init__(prompts, cache=None)
        self.counts = np.asarray(counts, dtype=np.float64)

    def fingerprint(self) -> str:
        return json.dumps({"counts_sum": float(self.counts.sum()), "n": len(self.counts)})

    def _respond(self, requests: Sequence[JudgeRequest]) -> list[str]:
        return [" " + LABELS[int(np.argmax(self.counts[list(r.candidates)]))]
                for r in requests]


class CooccurrenceJudge(BaseJudge):
    """The candidate most likely to come next after the user's recent items, estimated
    from the training users' logs.

    The estimate is an interpolated item-to-item model: for each recent history item h
    (the last ``max_history``, weight ``recency`` per step back, normalised) the share of
    the items that followed h within ``window`` positions in the logs that are the
    candidate, mixed with the candidate's share of all interactions:

        P(c | history) = λ · Σ_h w_h · N(h → c) / N(h → ·) + (1 − λ) · (n_c + 1) / (N + I)

    Interpolation (λ = ``weight``) keeps items never seen after h comparable (by
    popularity) instead of tied at zero. ``window = 0`` is for logs without an order
    (Coat's rated sets): every other item of the same user counts, in both directions.
    Never answers None. Counts come from training logs only; a test user's sequence is
    never read.
    """

    name = "cooc"

    def __init__(self, prompts: PromptBuilder, logs: Sequence[np.ndarray], num_items: int,
                 *, window: int = 3, recency: float = 0.8, weight: float = 0.5,
                 max_history: int = 20) -> None:
        super().__init__(prompts, cache=None)
        if window < 0 or not 0.0 < recency <= 1.0 or not 0.0 <= weight <= 1.0:
            raise ValueError("cooc judge: window >= 0, 0 < recency <= 1, 0 <= weight <= 1")
        self.num_items = int(num_items)
        self.window, self.recency, self.weight = int(window), float(recency), float(weight)
        self.max_history = int(max_history)
        seqs = [np.asarray(s, dtype=np.int64) for s in logs if len(s)]
        flat = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)
        counts = np.bincount(flat, minlength=self.num_items)[: self.num_items]
        self.prior = (counts + 1.0) / (counts.sum() + self.num_items)  # [I]
        src, dst = [], []
        for s in seqs:
            if self.window == 0:
                off = ~np.eye(len(s), dtype=bool)  # [n, n] every ordered pair i != j
                src.append(np.repeat(s, len(s))[off.ravel()])
                dst.append(np.tile(s, len(s))[off.ravel()])
                continue
            for lag in range(1, self.window + 1):
                if len(s) > lag:
                    src.append(s[:-lag])
                    dst.append(s[lag:])
        a = np.concatenate(src) if src else np.zeros(0, dtype=np.int64)
        b = np.concatenate(dst) if dst else np.zeros(0, dtype=np.int64)
        # Sparse counts as sorted pair keys h * I + c: no dense I x I table.
        self._keys, self._pair_counts = np.unique(a * self.num_items + b, return_counts=True)
        self._out = np.bincount(a, minlength=self.num_items)[: self.num_items].astype(
            np.float64)  # [I] N(h -> .)

    def fingerprint(self) -> str:
        return json.dumps({"pairs": int(self._pair_counts.sum()), "n": self.num_items,
                           "window": self.window, "recency": self.recency,
                           "weight": self.weight, "max_history": self.max_history})

    def scores(self, history: Sequence[int], candidates: Sequence[int]) -> np.ndarray:
        """[k] P(c | history) of each candidate (the formula above)."""
        cand = np.asarray(candidates, dtype=np.int64)
        hist = np.asarray(list(history)[-self.max_history:], dtype=np.int64)
        hist = hist[(hist >= 0) & (hist < self.num_items)]
        follow = np.zeros(len(cand))
        if len(hist) and len(self._keys):
            w = self.recency ** np.arange(len(hist) - 1, -1, -1, dtype=np.float64)  # [H]
            w /= w.sum()
            keys = (hist[:, None] * self.num_items + cand[None, :]).ravel()  # [H * k]
            pos = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
            n = np.where(self._keys[pos] == keys, self._pair_counts[pos], 0.0)
            n = n.reshape(len(hist), len(cand))  # [H, k]
            share = n / np.maximum(self._out[hist], 1.0)[:, None]
            follow = w @ share  # [k]
        return self.weight * follow + (1.0 - self.weight) * self.prior[cand]

    def _respond(self, requests: Sequence[JudgeRequest]) -> list[str]:
        return [" " + LABELS[int(np.argmax(self.scores(r.history, r.candidates)))]
                for r in requests]
