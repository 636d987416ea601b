"""LoRA tuning of a causal language model on the preference prompt (section 5.4).

The paper tunes its language model with LoRA on 1,000 sampled interactions so that it
learns the answer format of Table 1: the prompt holds a real user's history and ten
candidates, one of which is the user's real next item, and the target is that item's label.
Only the label is learned (prompt tokens are masked out of the loss). The result is a PEFT
adapter folder that the ``hf`` judge loads with ``adapter_path``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
"""Label value that the causal-LM loss skips (prompt and padding positions)."""


@dataclass(frozen=True)
class TuneExample:
    """One supervised example: a filled prompt and the label that should follow it."""

    prompt: str
    """The Table 1 prompt, ending in "the user will select"."""
    target: str
    """The answer label, e.g. "c" (written after one space)."""


@dataclass(frozen=True)
class LoraTuneConfig:
    """Hyperparameters of LoRA tuning."""

    rank: int = 8
    """LoRA rank r."""
    alpha: int = 16
    """LoRA scaling numerator (scale = alpha / rank)."""
    dropout: float = 0.05
    """Dropout on the LoRA branch."""
    target_modules: tuple[str, ...] | None = None
    """Module names to adapt; None lets PEFT pick the attention projections it knows."""
    lr: float = 2e-4
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    epochs: int = 1
    """Passes over the examples."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (None: run all epochs)."""
    batch_size: int = 4
    """Examples per optimizer step."""
    max_length: int = 1024
    """Longest tokenised prompt+target; longer prompts lose their oldest tokens."""
    grad_clip: float = 1.0
    """Gradient-norm clip (0 disables)."""
    seed: int = 0
    """Seeds the example order, LoRA initialisation and dropout."""
    device: str = "cpu"
    """Torch device."""
    dtype: str = "auto"
    """Base model dtype ("auto": float32 on CPU, bfloat16 on GPU)."""


@dataclass
class TuneResult:
    """What a tuning run did."""

    adapter_path: Path | None
    """Where the adapter was saved (None when not saved)."""
    losses: list[float] = field(default_factory=list)
    """Mean loss of every optimizer step."""
    examples: int = 0
    """Training examples."""
    truncated: int = 0
    """Examples whose prompt had to be shortened to fit ``max_length``."""
    seconds: float = 0.0
    """Wall time of training."""


def encode_example(tok: Any, ex: TuneExample, max_length: int) -> tuple[list[int], list[int], bool]:
    """(input_ids, labels, truncated): prompt tokens are masked, target + eos are learned."""
    prompt_ids = list(tok(ex.prompt, add_special_tokens=False)["input_ids"])
    target_ids = list(tok(" " + ex.target, add_special_tokens=False)["input_ids"])
    if tok.eos_token_id is not None:
        target_ids.append(int(tok.eos_token_id))
    room = max_length - len(target_ids)
    if room <= 0:
        raise ValueError(f"max_length {max_length} leaves no room for the prompt")
    truncated = len(prompt_ids) > room
    # Keep the end of the prompt: the candidates and the answer cue live there.
    prompt_ids = prompt_ids[-room:]
    return prompt_ids + target_ids, [IGNORE_INDEX] * len(prompt_ids) + target_ids, truncated


def collate(
    rows: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> dict[str, Any]:
    """Right-pad a list of (input_ids, labels) into tensors with an attention mask."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def add_lora(model: Any, config: LoraTuneConfig) -> Any:
    """Wrap ``model`` with fresh LoRA adapters (only they are trainable)."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    torch.manual_seed(config.seed)
    # GPT-2 style models store projections as Conv1D (weights transposed).
    conv1d = getattr(getattr(model, "config", None), "model_type", "") in ("gpt2", "gpt_bigcode")
    lora = LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=config.rank, lora_alpha=config.alpha,
        lora_dropout=config.dropout, fan_in_fan_out=conv1d,
        target_modules=list(config.target_modules) if config.target_modules else None,
    )
    with warnings.catch_warnings():
        # peft asks transformers for a property that newer transformers renamed; harmless.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                category=FutureWarning)
        return get_peft_model(model, lora)


def train_lora(
    model: Any, tok: Any, examples: Sequence[TuneExample], config: LoraTuneConfig,
    *, progress: bool = True,
) -> TuneResult:
    """Run AdamW on the trainable (LoRA) parameters of ``model``; returns per-step losses."""
    import torch
    from tqdm import tqdm

    if not examples:
        raise ValueError("no training examples")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    encoded = [encode_example(tok, ex, config.max_length) for ex in examples]
    truncated = sum(t for _, _, t in encoded)
    if truncated:
        log.warning("%d of %d prompts were longer than max_length=%d and lost their oldest "
                    "tokens", truncated, len(encoded), config.max_length)
    rows = [(ids, labels) for ids, labels, _ in encoded]
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (add LoRA adapters first)")
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(rows) / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    model.train()
    result = TuneResult(adapter_path=None, examples=len(rows), truncated=truncated)
    started = time.perf_counter()
    bar = tqdm(total=total, desc="lora tune", unit="step", disable=not progress)
    step = 0
    while step < total:
        order = list(range(len(rows)))
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            if step >= total:
                break
            batch = collate([rows[i] for i in order[start : start + config.batch_size]], pad_id)
            batch = {k: v.to(config.device) for k, v in batch.items()}
            out = model(**batch)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            opt.step()
            loss = float(out.loss.detach())
            result.losses.append(loss)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
    bar.close()
    model.eval()
    result.seconds = time.perf_counter() - started
    return result


def tune_lora(
    model_path: str | Path,
    examples: Sequence[TuneExample],
    out_dir: str | Path,
    config: LoraTuneConfig | None = None,
    *,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
) -> TuneResult:
    """Load a local causal LM, LoRA-tune it on ``examples`` and save the adapter to ``out_dir``.

    ``out_dir`` receives the PEFT adapter (``adapter_config.json``, weights) and
    ``tune.json`` with the configuration, losses and ``metadata``.
    """
    from policy.judge.hf import load_causal_lm

    config = config or LoraTuneConfig()
    model, tok = load_causal_lm(str(model_path), device=config.device, dtype=config.dtype)
    model = add_lora(model, config)
    model.to(config.device)
    result = train_lora(model, tok, examples, config, progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    from policy.judge.packaged import PACKAGED

    record = {
        # A packaged model by name ("smollm2"), else the folder it was loaded from.
        "base_model": (str(model_path) if str(model_path) in PACKAGED
                       else str(Path(model_path).resolve())),
        "config": asdict(config),
        "examples": result.examples,
        "truncated": result.truncated,
        "steps": len(result.losses),
        "losses": result.losses,
        "seconds": result.seconds,
        **(metadata or {}),
    }
    (out / "tune.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n",
                                   encoding="utf-8")
    result.adapter_path = out
    return result


def build_tiny_causal_lm(
    out_dir: str | Path, corpus: Sequence[str], *, seed: int = 0, vocab_size: int = 400,
    hidden: int = 32, layers: int = 2, heads: int = 2, max_positions: int = 1024,
) -> Path:
    """Write a tiny randomly initialised Llama-architecture model and a byte-level BPE
    tokenizer trained on ``corpus`` to ``out_dir``: a stand-in model for smoke tests and CI
    (nothing is downloaded).
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eos = "<|endoftext|>"
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[eos],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    bpe.train_from_iterator(list(corpus), trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=eos, bos_token=eos,
                                  pad_token=eos, unk_token=eos)
    tok.save_pretrained(str(out))
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id, tie_word_embeddings=True,
    )
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    return out
