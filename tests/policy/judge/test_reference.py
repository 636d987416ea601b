"""Reference judges: random (chance, seeded), popular (training-log counts) and cooc (what
followed the user's recent items in the training logs)."""

from __future__ import annotations

import numpy as np
import pytest

from policy.judge.prompt import SCENARIOS, PromptBuilder
from policy.judge.reference import CooccurrenceJudge, PopularJudge, RandomJudge
from policy.judge.spec import JudgeSpec, JudgeSpecError, default_pretrain_judge

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


# Logs: 2 is followed by 5 (three users), 4 by 6; 9 is the most popular item overall.
LOGS = [np.array([1, 2, 5, 9]), np.array([2, 5, 9, 9]), np.array([0, 2, 5]),
        np.array([4, 6, 9, 9, 9]), np.array([9, 9, 8])]


def test_cooc_picks_what_followed_the_recent_history_in_the_logs() -> None:
    judge = CooccurrenceJudge(_builder(), LOGS, 20, window=1)
    # After 2 the logs saw 5, never 6 or 9 directly: 5 wins over the popular 9.
    assert judge.choose_batch([[2]], [[9, 6, 5]]) == [2]
    # The most recent item weighs most: ... 2, 4 -> 6 (4 was followed by 6).
    assert judge.choose([2, 4], [5, 6, 9]) == 1
    # Nothing ever followed 7: the popularity term decides (9 over 3).
    assert judge.choose([7], [3, 9]) == 1
    # An empty history is popularity alone, and the judge never answers None.
    assert judge.choose([], [8, 9, 1]) == 1


def test_cooc_scores_are_the_interpolated_estimate() -> None:
    judge = CooccurrenceJudge(_builder(), LOGS, 20, window=1, weight=0.5)
    n = sum(len(s) for s in LOGS)
    s = judge.scores([2], [5, 9])
    # N(2 -> 5) = 3 of N(2 -> .) = 3; 9 never follows 2 directly.
    assert s[0] == pytest.approx(0.5 * 1.0 + 0.5 * (3 + 1) / (n + 20))
    assert s[1] == pytest.approx(0.5 * 0.0 + 0.5 * (8 + 1) / (n + 20))  # 9 occurs 8 times


def test_cooc_window_zero_counts_every_pair_of_a_user_both_ways() -> None:
    ordered = CooccurrenceJudge(_builder(), [np.array([1, 2])] * 3 + [np.array([3, 0])],
                                20, window=1)
    unordered = CooccurrenceJudge(_builder(), [np.array([1, 2])] * 3 + [np.array([3, 0])],
                                  20, window=0)
    # Sequences only count forward: nothing followed 2; as sets, 2 came with 1.
    assert ordered.scores([2], [1])[0] < unordered.scores([2], [1])[0]
    assert unordered.choose([2], [0, 1, 3]) == 1


def test_cooc_spec_needs_training_logs_and_resolves_the_window() -> None:
    with pytest.raises(JudgeSpecError, match="training logs"):
        JudgeSpec(judge="cooc").build("lfm", TEXTS)
    spec = JudgeSpec(judge="cooc")
    judge = spec.build("coat", TEXTS, LOGS)
    assert isinstance(judge, CooccurrenceJudge) and judge.window == 0 == spec.cooc_window
    assert JudgeSpec.parse("--judge cooc --cooc-window 2").build("lfm", TEXTS, LOGS).window == 2
    assert "window 2" in JudgeSpec(judge="cooc", cooc_window=2).label()


def test_pretraining_default_judge_is_per_dataset() -> None:
    assert default_pretrain_judge("lfm") == "cooc"
    assert default_pretrain_judge("coat") == "embedding"
    assert default_pretrain_judge("somewhere-else") == "embedding"
