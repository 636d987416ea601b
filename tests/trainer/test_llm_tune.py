"""LoRA tuning of a tiny randomly initialised causal LM on the preference prompt."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from policy.judge import SCENARIOS, PromptBuilder
from policy.judge.hf import HFJudge, HFJudgeConfig, load_causal_lm
from trainer.llm_tune import (
    IGNORE_INDEX,
    LoraTuneConfig,
    TuneExample,
    add_lora,
    build_tiny_causal_lm,
    encode_example,
    train_lora,
    tune_lora,
)

ITEMS = [f"{c} {t} jacket" for c in ("black", "blue", "red", "green", "grey")
         for t in ("bomber", "denim", "parka", "fleece")]
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _examples(n: int, label: str | None = None) -> list[TuneExample]:
    pb = PromptBuilder(item_text=ITEMS, scenario=SCENARIOS["coat"])
    rng = random.Random(0)
    out = []
    for _ in range(n):
        cands = rng.sample(range(20), 10)
        target = rng.randrange(10)
        out.append(TuneExample(pb.build(rng.sample(range(20), 3), cands),
                               label or "abcdefghij"[target]))
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = [e.prompt for e in _examples(6)] + ["a b c d e f g h i j k None"]
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model", corpus, seed=0)


def test_only_the_label_is_learned(tiny_model: Path) -> None:
    _, tok = load_causal_lm(str(tiny_model))
    ex = _examples(1)[0]
    ids, labels, truncated = encode_example(tok, ex, 4096)
    assert not truncated and len(ids) == len(labels)
    learned = [t for t in labels if t != IGNORE_INDEX]
    assert tok.decode(learned[:-1]).strip() == ex.target and learned[-1] == tok.eos_token_id
    # Too long: the oldest prompt tokens go, the label stays.
    ids2, _, truncated2 = encode_example(tok, ex, 40)
    assert truncated2 and len(ids2) == 40 and ids2[-len(learned):] == learned


def test_lora_loss_goes_down_on_a_fixed_batch(tiny_model: Path) -> None:
    model, tok = load_causal_lm(str(tiny_model))
    base_params = {n: p.detach().clone() for n, p in model.named_parameters()}
    model = add_lora(model, LoraTuneConfig(seed=0))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    cfg = LoraTuneConfig(lr=3e-2, batch_size=4, epochs=10, seed=0)
    result = train_lora(model, tok, _examples(4), cfg, progress=False)
    assert len(result.losses) == 10
    assert sum(result.losses[-3:]) / 3 < result.losses[0] - 0.05
    # The base weights are untouched: LoRA learns beside them.
    for name, p in model.get_base_model().named_parameters():
        if "lora_" not in name and name in base_params:
            assert torch.equal(p, base_params[name]), name


def test_adapter_saves_loads_and_answers_in_format(tiny_model: Path, tmp_path: Path) -> None:
    # Every example's answer is "c": after tuning, the judge should answer c.
    cfg = LoraTuneConfig(lr=5e-2, batch_size=4, epochs=25, seed=0, dropout=0.0,
                         target_modules=ALL_LINEAR)
    out = tmp_path / "adapter"
    result = tune_lora(tiny_model, _examples(4, "c"), out, cfg, progress=False,
                       metadata={"env": "test"})
    assert (out / "adapter_config.json").is_file()
    record = json.loads((out / "tune.json").read_text())
    assert record["steps"] == 25 and record["env"] == "test"
    assert record["losses"] == result.losses and result.losses[-1] < result.losses[0]

    tuned, tok = load_causal_lm(str(tiny_model), adapter_path=str(out))
    base, _ = load_causal_lm(str(tiny_model))
    enc = tok(["History: none"], return_tensors="pt")
    with torch.no_grad():
        assert not torch.allclose(tuned(**enc).logits, base(**enc).logits)

    pb = PromptBuilder(item_text=ITEMS, scenario=SCENARIOS["coat"])
    judge = HFJudge(pb, HFJudgeConfig(model_path=str(tiny_model), adapter_path=str(out),
                                      max_new_tokens=1, scoring="generate"))
    assert judge.choose_batch([[0, 1], [7]], [list(range(10)), list(range(10, 20))]) == [2, 2]
