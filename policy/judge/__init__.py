"""The preference judge of section 4.1.1: prompt (Table 1), reply parsing, backends, cache.

Backends are imported lazily by :func:`make_judge`, so importing this package never pulls
in transformers, peft or sentence-transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from policy.judge.base import BaseJudge, JudgeAnswer, JudgeRequest, JudgeStats, PreferenceJudge
from policy.judge.cache import AnswerCache, default_cache_dir
from policy.judge.parse import ParsedAnswer, parse_answer
from policy.judge.prompt import (
    ANSWER_PREFIX,
    DEFAULT_TEMPLATE,
    LABELS,
    SCENARIOS,
    PromptBuilder,
    PromptConfig,
    Scenario,
    load_scenario,
    load_template,
)

JUDGE_KINDS = ("embedding", "hf", "openai")
"""Backend names accepted by :func:`make_judge`."""

__all__ = [
    "ANSWER_PREFIX",
    "DEFAULT_TEMPLATE",
    "JUDGE_KINDS",
    "LABELS",
    "SCENARIOS",
    "AnswerCache",
    "BaseJudge",
    "JudgeAnswer",
    "JudgeRequest",
    "JudgeStats",
    "ParsedAnswer",
    "PreferenceJudge",
    "PromptBuilder",
    "PromptConfig",
    "Scenario",
    "default_cache_dir",
    "load_scenario",
    "load_template",
    "make_judge",
    "parse_answer",
]


def make_judge(
    kind: str,
    *,
    item_text: Sequence[str],
    scenario: str | Scenario,
    template: str | Path | None = None,
    prompt_config: PromptConfig | None = None,
    cache: AnswerCache | bool | None = True,
    **options: Any,
) -> BaseJudge:
    """Build a judge of backend ``kind`` for a catalogue with texts ``item_text``.

    ``scenario`` is a dataset name ("coat", "lfm", "industry"), a JSON file path, or a
    :class:`Scenario`; ``template`` a template file (default: Table 1). ``cache=True`` uses
    the default reply cache, ``False``/``None`` none. ``options`` go to the backend's config:

    * ``embedding``: threshold, history_mode, recency, model_path, device, batch_size;
    * ``hf``: model_path (required), adapter_path, max_new_tokens, batch_size, device, dtype;
    * ``openai``: base_url, model (required), api_key, mode, max_tokens, temperature,
      timeout_s, max_retries, backoff_s, concurrency.
    """
    scen = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    builder = PromptBuilder(
        item_text=item_text, scenario=scen, template=load_template(template),
        config=prompt_config or PromptConfig(),
    )
    store: AnswerCache | None
    if cache is True:
        store = AnswerCache()
    elif cache is False or cache is None:
        store = None
    else:
        store = cache
    if kind == "embedding":
        from policy.judge.embedding import EmbeddingJudge, EmbeddingJudgeConfig

        return EmbeddingJudge(builder, EmbeddingJudgeConfig(**options), cache=store)
    if kind == "hf":
        from policy.judge.hf import HFJudge, HFJudgeConfig

        if "model_path" not in options:
            raise ValueError("the hf judge needs model_path (a local model folder)")
        return HFJudge(builder, HFJudgeConfig(**options), cache=store)
    if kind == "openai":
        from policy.judge.openai_http import OpenAIJudge, OpenAIJudgeConfig

        missing = [k for k in ("base_url", "model") if not options.get(k)]
        if missing:
            raise ValueError(f"the openai judge needs {' and '.join(missing)}")
        return OpenAIJudge(builder, OpenAIJudgeConfig(**options), cache=store)
    raise KeyError(f"unknown judge {kind!r}; known: {', '.join(JUDGE_KINDS)}")
