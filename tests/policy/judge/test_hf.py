"""The transformers judge on a tiny randomly initialised causal LM built in the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy.judge import SCENARIOS, AnswerCache, PromptBuilder
from policy.judge.hf import HFJudge, HFJudgeConfig
from trainer.llm_tune import build_tiny_causal_lm

ITEMS = [f"{c} {t} jacket" for c in ("black", "blue", "red", "green", "grey")
         for t in ("bomber", "denim", "parka", "fleece")]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pb = PromptBuilder(item_text=ITEMS, scenario=SCENARIOS["coat"])
    corpus = [pb.build([i, (i + 3) % 20], [(i + k) % 20 for k in range(10)]) for i in range(6)]
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model", corpus, seed=0)


def _judge(path: Path, cache: AnswerCache | None = None, **kw: object) -> HFJudge:
    # Generation: the tiny model's tokenizer splits some labels (" e") into two tokens,
    # so label scoring is not available for it (tests/policy/judge/test_packaged.py
    # covers label scoring on the real model).
    pb = PromptBuilder(item_text=ITEMS, scenario=SCENARIOS["coat"])
    kw.setdefault("scoring", "generate")
    return HFJudge(pb, HFJudgeConfig(model_path=str(path), **kw), cache=cache)  # type: ignore[arg-type]


def test_label_scoring_says_when_labels_are_not_single_tokens(tiny_model: Path) -> None:
    judge = _judge(tiny_model, scoring="labels")
    with pytest.raises(ValueError, match="tokens in this tokenizer; use --scoring generate"):
        judge.choose_batch([[0, 1]], [list(range(10))])


def test_batched_generation_is_deterministic_and_padding_safe(tiny_model: Path) -> None:
    judge = _judge(tiny_model, batch_size=3, max_new_tokens=4)
    # Different history lengths force left padding inside one batch.
    histories = [[0], [1, 2, 3, 4, 5], [], [6, 7]]
    cands = [list(range(10)), list(range(5, 15)), list(range(10, 20)), list(range(3, 13))]
    prompts = [judge.prompts.build(h, c) for h, c in zip(histories, cands, strict=True)]
    batched = judge.generate(prompts)
    single = [judge.generate([p])[0] for p in prompts]
    assert batched == single
    assert all(isinstance(r, str) and r for r in batched)
    answers = judge.judge_batch(histories, cands)
    assert [a.reply for a in answers] == batched
    s = judge.stats
    assert s.requests == 4 and s.items + s.nones + s.unparseable == 4
    # Whatever a random model says, an unparseable reply is never turned into a choice.
    for a in answers:
        assert (a.index is None) == (a.kind != "item")


def test_cache_avoids_second_generation(tiny_model: Path, tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path / "c.sqlite")
    judge = _judge(tiny_model, cache=cache, max_new_tokens=2)
    first = judge.judge_batch([[1], [2]], [list(range(10)), list(range(10))])
    assert judge.stats.backend_calls == 1 and judge.stats.backend_prompts == 2
    second = judge.judge_batch([[1], [2]], [list(range(10)), list(range(10))])
    assert judge.stats.backend_calls == 1
    assert [a.reply for a in second] == [a.reply for a in first]
    assert all(a.cached for a in second)
    # Other decoding settings are another cache namespace.
    other = _judge(tiny_model, cache=cache, max_new_tokens=3)
    other.judge_batch([[1]], [list(range(10))])
    assert other.stats.backend_calls == 1


def test_missing_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        _judge(tmp_path / "no-such-model")
