"""Reference judges for comparisons: they answer the same question (which of k candidates
will the user pick next?) without a language model.

* :class:`RandomJudge`: a uniformly random candidate (chance level, 1/k).
* :class:`PopularJudge`: the candidate seen most often in the training users' logs (what a
  popularity list would answer; counts from operator data only, never test users').

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
