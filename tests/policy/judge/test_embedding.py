"""The default offline judge: the bundled all-MiniLM-L6-v2 encoder, no network, no ratings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from policy.judge import SCENARIOS, AnswerCache, PromptBuilder
from policy.judge.embedding import EmbeddingJudge, EmbeddingJudgeConfig, bundled_model_path

ITEMS = [
    "women's black leather biker jacket",   # 0
    "women's black leather moto jacket",    # 1
    "men's blue denim jacket",              # 2
    "men's light blue denim trucker jacket",  # 3
    "women's red wool pea coat",            # 4
    "men's green rain parka",               # 5
    "children's yellow raincoat",           # 6
    "men's grey fleece jacket",             # 7
    "women's pink down puffer jacket",      # 8
    "men's brown suede bomber jacket",      # 9
    "women's white quilted vest",           # 10
]


def _judge(tmp_path: Path, **kw: object) -> EmbeddingJudge:
    pb = PromptBuilder(item_text=ITEMS, scenario=SCENARIOS["coat"])
    return EmbeddingJudge(pb, EmbeddingJudgeConfig(**kw),  # type: ignore[arg-type]
                          cache=AnswerCache(tmp_path / "a.sqlite"),
                          embedding_cache_dir=tmp_path / "emb")


def test_bundled_model_is_found_locally() -> None:
    path = bundled_model_path()
    assert (path / "model.safetensors").is_file()


def test_picks_the_candidate_closest_to_the_history(tmp_path: Path) -> None:
    judge = _judge(tmp_path, threshold=0.3)
    # A user of blue denim jackets prefers the other denim jacket; a leather fan the leather.
    assert judge.choose([2], [4, 5, 3, 6, 1, 7, 8, 9, 10, 0]) == 2
    answers = judge.judge_batch([[2], [0]], [[4, 5, 3, 6, 7], [4, 5, 1, 6, 7]])
    assert [(a.kind, a.index) for a in answers] == [("item", 2), ("item", 2)]
    # The reply is in the paper's answer form.
    assert answers[0].reply.endswith("will select c")
    scores = judge.scores([[2]], [[3, 6]])[0]
    assert scores[0] > scores[1]


def test_none_below_threshold_and_for_empty_history(tmp_path: Path) -> None:
    strict = _judge(tmp_path, threshold=0.99)
    assert strict.choose([2], [4, 5, 6]) is None
    assert strict.stats.nones == 1
    loose = _judge(tmp_path, threshold=-1.0)
    assert loose.choose([], [4, 5, 6]) is None
    assert np.isnan(loose.scores([[]], [[4, 5]])[0]).all()


def test_text_mode_and_embedding_cache(tmp_path: Path) -> None:
    text = _judge(tmp_path, threshold=0.3, history_mode="text")
    assert text.choose([0, 1], [2, 4, 9, 0]) == 3
    # A second judge reuses the item embeddings on disk and the cached replies: the
    # encoder is never loaded.
    again = _judge(tmp_path, threshold=0.3, history_mode="text")
    assert again.choose([0, 1], [2, 4, 9, 0]) == 3
    assert again.stats.backend_calls == 0 and again._encoder is None
    with pytest.raises(ValueError, match="history_mode"):
        _judge(tmp_path, history_mode="max")
