"""Reference judges: random (chance, seeded) and popular (training-log counts)."""

from __future__ import annotations

import numpy as np

from policy.judge.prompt import SCENARIOS, PromptBuilder
from policy.judge.reference import PopularJudge, RandomJudge

TEXTS = [f"artist {i}" for i in range(20)]


def _builder() -> PromptBuilder:
    return PromptBuilder(TEXTS, SCENARIOS["lfm"])


def test_popular_picks_the_candidate_with_the_most_training_interactions() -> None:
    counts = np.zeros(20)
    counts[[3, 7, 11]] = [5.0, 9.0, 2.0]
    judge = PopularJudge(_builder(), counts)
    picks = judge.choose_batch([[0], [1]], [[1, 3, 7, 11], [11, 2, 3]])
    assert picks == [2, 2]  # item 7, then item 3


def test_random_is_uniform_over_candidates_and_seeded() -> None:
    # Distinct prompts (a batch asks each distinct prompt once).
    hist = [[i // 20, i % 20] for i in range(400)]
    cands = [[1, 2, 3, 4, 5]] * 400
    picks = RandomJudge(_builder(), seed=4).choose_batch(hist, cands)
    assert picks == RandomJudge(_builder(), seed=4).choose_batch(hist, cands)
    freq = np.bincount(np.asarray(picks), minlength=5) / len(picks)
    assert np.all(np.abs(freq - 0.2) < 0.06)  # 3 standard deviations
    assert picks != RandomJudge(_builder(), seed=5).choose_batch(hist, cands)
