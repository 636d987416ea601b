"""Judge backed by a local causal language model (``transformers``), optionally with a PEFT
LoRA adapter such as the one ``ialp llm tune`` writes.

The model and tokenizer are read from a local folder only (``local_files_only`` and the hub
switched off): a run never downloads anything. Generation is greedy and batched with left
padding, so the same prompt always gets the same reply.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policy.judge.base import BaseJudge, JudgeRequest
from policy.judge.cache import AnswerCache
from policy.judge.packaged import model_folder
from policy.judge.prompt import LABELS, PromptBuilder

_LABEL_RULE = 2
"""Revision of the label-scoring answer rule (part of the reply cache's identity)."""


@dataclass(frozen=True)
class HFJudgeConfig:
    """Settings of the local causal-LM judge."""

    model_path: str
    """Local folder with the model's config, weights and tokenizer, or the name of a
    packaged model (``policy.judge.packaged``: ``smollm2``, ``gemma3-270m``)."""
    adapter_path: str | None = None
    """Optional PEFT adapter folder (``ialp llm tune`` output)."""
    scoring: str = "labels"
    """"labels": one forward pass per prompt, the answer is the option label (a, b, ...,
    or the None label) with the highest next-token probability; "generate": greedy
    generation of ``max_new_tokens``, parsed."""
    debias: bool = True
    """labels: remove position bias (small models prefer some labels whatever they name).
    Each label's log-probability on a content-free prompt (every slot "N/A") is subtracted
    (contextual calibration), and each decision is scored under its candidate order and
    the reversed one, every candidate's two calibrated log-probabilities averaged."""
    max_new_tokens: int = 8
    """Tokens generated per reply; a label needs one or two."""
    batch_size: int = 8
    """Prompts per generate() call."""
    device: str = "cpu"
    """Torch device ("cpu", "cuda", "cuda:1")."""
    dtype: str = "auto"
    """"auto" (float32 on CPU, bfloat16 on GPU), "float32", "float16" or "bfloat16"."""


def _offline() -> None:
    # Set before transformers is imported, so no hub call can be attempted.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _require_dir(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(
            f"{what} {p} is not a local folder (models are never downloaded; "
            "point to a folder holding config.json and the weights)"
        )
    return p


def _dir_signature(path: Path) -> str:
    """Cheap identity of a model folder: names, sizes and mtimes of its files."""
    h = hashlib.sha256(str(path.resolve()).encode())
    for f in sorted(path.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def _adapter_signature(path: Path) -> str:
    """Content hash of an adapter's weights (small), so a re-tuned adapter misses the cache."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json"):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def resolve_dtype(name: str, device: str) -> Any:
    """The torch dtype for ``name`` ("auto" picks by device)."""
    import torch

    if name == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    try:
        return {"float32": torch.float32, "float16": torch.float16,
                "bfloat16": torch.bfloat16}[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}") from None


def load_causal_lm(
    model_path: str, *, adapter_path: str | None = None, device: str = "cpu",
    dtype: str = "auto", trainable_adapter: bool = False,
) -> tuple[Any, Any]:
    """(model, tokenizer) from local folders; the tokenizer pads on the left."""
    _offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = _require_dir(model_folder(model_path), "model")
    tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    tok.padding_side = "left"
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"tokenizer in {base} has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(base), local_files_only=True, dtype=resolve_dtype(dtype, device)
    )
    if adapter_path is not None:
        from peft import PeftModel

        adapter = _require_dir(adapter_path, "adapter")
        with warnings.catch_warnings():
            # peft asks transformers for a property newer transformers renamed; harmless.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                    category=FutureWarning)
            model = PeftModel.from_pretrained(model, str(adapter),
                                              is_trainable=trainable_adapter)
    model.to(device)
    model.eval()
    return model, tok


class HFJudge(BaseJudge):
    """A local causal LM: option labels scored in one forward pass (default), or greedy,
    batched generation."""

    name = "hf"

    def __init__(
        self, prompts: PromptBuilder, config: HFJudgeConfig, *, cache: AnswerCache | None = None
    ) -> None:
        super().__init__(prompts, cache=cache)
        self.config = config
        base = _require_dir(model_folder(config.model_path), "model")
        self._base_sig = _dir_signature(base)
        self._adapter_sig = (
            _adapter_signature(_require_dir(config.adapter_path, "adapter"))
            if config.adapter_path else ""
        )
        if config.scoring not in ("labels", "generate"):
            raise ValueError(f"scoring must be 'labels' or 'generate', got {config.scoring!r}")
        self._model: Any = None
        self._tok: Any = None
        self._ids: list[int] | None = None
        self._priors: dict[int, np.ndarray] = {}  # k -> content-free label log-probs

    def fingerprint(self) -> str:
        cfg = asdict(self.config)
        cfg.pop("batch_size")
        cfg.pop("device")
        # The scoring rule's revision: a change of how label scores become an answer
        # (e.g. the calibration) must not be answered from replies cached before it.
        rule = _LABEL_RULE if self.config.scoring == "labels" else 0
        return json.dumps({"cfg": cfg, "base": self._base_sig, "adapter": self._adapter_sig,
                           "rule": rule}, sort_keys=True)

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            self._model, self._tok = load_causal_lm(
                self.config.model_path, adapter_path=self.config.adapter_path,
                device=self.config.device, dtype=self.config.dtype,
            )
        return self._model, self._tok

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Greedy continuations of ``prompts`` (new text only)."""
        import torch

        model, tok = self._load()
        out: list[str] = []
        for start in range(0, len(prompts), self.config.batch_size):
            chunk = list(prompts[start : start + self.config.batch_size])
            enc = tok(chunk, return_tensors="pt", padding=True).to(self.config.device)
            with torch.no_grad():
                gen = model.generate(
                    **enc, max_new_tokens=self.config.max_new_tokens, do_sample=False,
                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                )
            new = gen[:, enc["input_ids"].shape[1] :]
            out.extend(tok.batch_decode(new, skip_special_tokens=True))
        return out

    def label_scores(self, requests: Sequence[JudgeRequest]) -> list[np.ndarray]:
        """Per request, log-probabilities of its k candidates and of None [k + 1]
        (normalised over those labels): one forward pass per prompt, two with
        :attr:`HFJudgeConfig.debias` (the candidate order reversed; each candidate's two
        log-probabilities averaged, then renormalised)."""
        prompts = [r.prompt for r in requests]
        if self.config.debias:
            prompts += [self.prompts.build(r.history, r.candidates[::-1]) for r in requests]
        ks = [len(r.candidates) for r in requests] * (2 if self.config.debias else 1)
        raw = self._next_label_logprobs(prompts, ks)
        out = []
        for i, r in enumerate(requests):
            lp = raw[i]
            if self.config.debias:
                k = len(r.candidates)
                prior = self._label_prior(k)
                rev = raw[len(requests) + i] - prior
                # Candidate j sits at label k-1-j in the reversed prompt; None stays last.
                lp = 0.5 * ((lp - prior) + np.concatenate([rev[:k][::-1], rev[k:]]))
                lp = lp - np.logaddexp.reduce(lp)
            out.append(lp)
        return out

    def _label_prior(self, k: int) -> np.ndarray:
        """What calibration subtracts [k + 1]: the candidate labels' log-probabilities on
        the content-free prompt, centred on their mean (so the candidates' level against
        None is kept), and 0 for None: a model tuned on real next items almost never
        says None to "N/A" candidates, and subtracting that would make None win always."""
        if k not in self._priors:
            lp = self._next_label_logprobs([self.prompts.content_free(k)], [k])[0]
            prior = np.zeros(k + 1)
            prior[:k] = lp[:k] - lp[:k].mean()
            self._priors[k] = prior
        return self._priors[k]

    def _next_label_logprobs(self, prompts: Sequence[str], ks: Sequence[int]) -> list[np.ndarray]:
        import torch

        model, tok = self._load()
        ids = self._label_ids(tok)
        out: list[np.ndarray] = []
        for start in range(0, len(prompts), self.config.batch_size):
            chunk = list(prompts[start : start + self.config.batch_size])
            enc = tok(chunk, return_tensors="pt", padding=True).to(self.config.device)
            with torch.no_grad():
                logits = model(**enc).logits[:, -1, :].float()  # [B, V], left-padded
            logp = torch.log_softmax(logits, dim=-1).cpu().numpy()
            for row, k in zip(logp, ks[start : start + len(chunk)], strict=True):
                lp = row[ids[: k + 1]]
                out.append(lp - np.logaddexp.reduce(lp))
        return out

    def _label_ids(self, tok: Any) -> list[int]:
        """Token id of " a", " b", ...: the prompt ends before the label, which the model
        continues after a space (as ``ialp llm tune`` teaches it)."""
        if self._ids is None:
            ids = []
            for label in LABELS:
                pieces = tok(" " + label, add_special_tokens=False)["input_ids"]
                if len(pieces) != 1:
                    raise ValueError(f"label {label!r} is {len(pieces)} tokens in this "
                                     "tokenizer; use --scoring generate")
                ids.append(int(pieces[0]))
            self._ids = ids
        return self._ids

    def _respond(self, requests: Sequence[JudgeRequest]) -> list[str]:
        if self.config.scoring == "generate":
            return self.generate([r.prompt for r in requests])
        return [" " + LABELS[int(np.argmax(lp))] for lp in self.label_scores(requests)]

    def close(self) -> None:
        self._model = None
        self._tok = None
        self._priors = {}
