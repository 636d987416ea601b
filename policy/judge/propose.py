"""The actor proposes k candidates, the judge picks one (Algorithm 1's acting step, eq. 3).

iALP pre-training (``trainer.pretrain``) and the LLMOnline method
(``simulator_client.experiments.methods.llm_online``) act this way; they differ only in the
reward they store afterwards (r^p of the judge vs. the user's feedback).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from policy.judge.base import BaseJudge, JudgeAnswer
from policy.mixed import MixedPolicy

CANDIDATE_MODES = ("sample", "topk")
"""How the actor proposes: "sample" draws k items from π(·|s) without replacement,
"topk" takes the k likeliest."""


def check_candidate_mode(mode: str) -> None:
    """Raise a ``ValueError`` naming the choices when ``mode`` is not one of them."""
    if mode not in CANDIDATE_MODES:
        raise ValueError(f"candidates must be 'sample' or 'topk', not {mode!r}")


@dataclass
class JudgedChoice:
    """What one proposing-and-judging step decided for a batch of users."""

    items: np.ndarray
    """[B] the recommended item: the judge's pick, else a random candidate (eq. 3)."""
    propensities: np.ndarray
    """[B] the actor's draw probability of the recommended candidate."""
    candidates: list[list[int]]
    """[B][k] the candidates the actor proposed."""
    answers: list[JudgeAnswer]
    """[B] the judge's answers (``kind`` item, none or unparseable)."""
    judge_seconds: float
    """Wall time spent in the judge."""


def propose_and_judge(
    policy: MixedPolicy,
    judge: BaseJudge,
    histories: Sequence[Sequence[int]],
    *,
    k: int,
    mode: str,
    rng: np.random.Generator,
    user_ids: Sequence[int] | None = None,
    exclude: Sequence[Sequence[int]] | None = None,
) -> JudgedChoice:
    """The actor of ``policy`` proposes ``k`` candidates per history, ``judge`` picks.

    An answer of None, or a reply that names no candidate (never guessed at), recommends
    a candidate drawn uniformly with ``rng`` (eq. 3)."""
    check_candidate_mode(mode)
    lists = [list(h) for h in histories]
    slates = policy.act_batch(lists, k=k, explore=mode == "sample", exclude=exclude,
                              user_ids=None if user_ids is None else list(user_ids), rng=rng)
    cands = [list(s.items) for s in slates]
    started = time.perf_counter()
    answers = judge.judge_batch(lists, cands)
    judge_seconds = time.perf_counter() - started
    items = np.empty(len(lists), dtype=np.int64)
    props = np.empty(len(lists), dtype=np.float64)
    for b, ans in enumerate(answers):
        if ans.kind == "item" and ans.index is not None:
            j = ans.index
        else:
            j = int(rng.integers(len(cands[b])))
        items[b], props[b] = cands[b][j], slates[b].propensities[j]
    return JudgedChoice(items, props, cands, answers, judge_seconds)
