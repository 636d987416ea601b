"""The actor proposes k candidates and the judge picks: picks, None and garbage (eq. 3)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from policy.checkpoint import init_policy
from policy.config import PolicyConfig
from policy.judge import SCENARIOS, JudgeRequest, PromptBuilder
from policy.judge.base import BaseJudge
from policy.judge.propose import propose_and_judge
from policy.types import pad_histories

N_ITEMS = 40


class ScriptedJudge(BaseJudge):
    """Answers label c for user histories starting with 0, None for 1, garbage else."""

    name = "scripted"

    def __init__(self) -> None:
        super().__init__(PromptBuilder(item_text=[f"item {i}" for i in range(N_ITEMS)],
                                       scenario=SCENARIOS["coat"]))

    def fingerprint(self) -> str:
        return "scripted-v1"

    def _respond(self, requests: Sequence[JudgeRequest]) -> list[str]:
        replies = {0: "the user will select c", 1: "None"}
        return [replies.get(r.history[0], "no idea") for r in requests]


def test_pick_none_and_garbage_follow_eq3() -> None:
    policy = init_policy(PolicyConfig(num_items=N_ITEMS, max_len=6, hidden=16, heads=2,
                                      blocks=1, dropout=0.0), seed=0)
    histories = [[0, 5], [1, 7], [2, 9]]
    choice = propose_and_judge(policy, ScriptedJudge(), histories, k=5, mode="sample",
                               rng=np.random.default_rng(0), exclude=histories)
    assert [a.kind for a in choice.answers] == ["item", "none", "unparseable"]
    assert choice.items[0] == choice.candidates[0][2]
    for b in range(3):
        assert len(set(choice.candidates[b])) == 5
        assert not set(choice.candidates[b]) & set(histories[b])  # excluded
        assert int(choice.items[b]) in choice.candidates[b]
        assert 0.0 < choice.propensities[b] <= 1.0


def test_topk_is_deterministic_and_bad_mode_is_named() -> None:
    policy = init_policy(PolicyConfig(num_items=N_ITEMS, max_len=6, hidden=16, heads=2,
                                      blocks=1, dropout=0.0), seed=1)
    a = propose_and_judge(policy, ScriptedJudge(), [[0, 3]], k=4, mode="topk",
                          rng=np.random.default_rng(0))
    b = propose_and_judge(policy, ScriptedJudge(), [[0, 3]], k=4, mode="topk",
                          rng=np.random.default_rng(99))
    assert a.candidates == b.candidates
    probs = policy.probs(pad_histories([[0, 3]], 6), np.asarray([0]))[0]
    assert set(a.candidates[0]) == set(np.argsort(-probs)[:4].tolist())
    with pytest.raises(ValueError, match="'sample' or 'topk'"):
        propose_and_judge(policy, ScriptedJudge(), [[0]], k=2, mode="greedy",
                          rng=np.random.default_rng(0))
