"""Judge backed by any OpenAI-compatible HTTP endpoint (vLLM, Ollama, llama.cpp server, TGI).

Requests go out concurrently (bounded by ``concurrency``) with a per-request timeout; network
errors, timeouts, 429 and 5xx answers are retried with exponential backoff (honouring
``Retry-After``); other errors fail at once with the status and the server's message.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from policy.judge.base import BaseJudge, JudgeRequest
from policy.judge.cache import AnswerCache
from policy.judge.prompt import PromptBuilder

log = logging.getLogger(__name__)


class JudgeBackendError(RuntimeError):
    """The judge's backend could not produce a reply."""


@dataclass(frozen=True)
class OpenAIJudgeConfig:
    """Settings of the HTTP judge."""

    base_url: str
    """Server root including the API prefix, e.g. ``http://127.0.0.1:8000/v1``."""
    model: str
    """Model name the server knows."""
    api_key: str | None = None
    """Bearer token, if the server wants one (never written to logs or cache keys)."""
    mode: str = "chat"
    """"chat" (/chat/completions, prompt as one user message) or "completions"."""
    max_tokens: int = 16
    """Reply length cap."""
    temperature: float = 0.0
    """0 = greedy, so replies are repeatable."""
    timeout_s: float = 60.0
    """Per-request timeout (connect, read, write)."""
    max_retries: int = 4
    """Retries after the first attempt for retryable failures."""
    backoff_s: float = 0.5
    """First retry delay; doubles each retry (with jitter), capped at 30 s."""
    concurrency: int = 8
    """Requests in flight at once."""


_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class OpenAIJudge(BaseJudge):
    """Asks an OpenAI-compatible server (see module docstring)."""

    name = "openai"

    def __init__(
        self, prompts: PromptBuilder, config: OpenAIJudgeConfig, *,
        cache: AnswerCache | None = None, seed: int = 0,
    ) -> None:
        super().__init__(prompts, cache=cache)
        if config.mode not in ("chat", "completions"):
            raise ValueError(f"mode must be 'chat' or 'completions', not {config.mode!r}")
        if config.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.config = config
        self._rng = random.Random(seed)
        headers = {"Content-Type": "application/json"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._client = httpx.Client(
            base_url=config.base_url.rstrip("/"), headers=headers,
            timeout=httpx.Timeout(config.timeout_s),
            limits=httpx.Limits(max_connections=config.concurrency),
        )

    def fingerprint(self) -> str:
        c = self.config
        return json.dumps({"url": c.base_url.rstrip("/"), "model": c.model, "mode": c.mode,
                           "max_tokens": c.max_tokens, "temperature": c.temperature},
                          sort_keys=True)

    def _payload(self, prompt: str) -> tuple[str, dict[str, Any]]:
        c = self.config
        common = {"model": c.model, "max_tokens": c.max_tokens, "temperature": c.temperature}
        if c.mode == "chat":
            return "/chat/completions", {**common,
                                         "messages": [{"role": "user", "content": prompt}]}
        return "/completions", {**common, "prompt": prompt}

    @staticmethod
    def _extract(body: Any, mode: str) -> str:
        try:
            choice = body["choices"][0]
            text = choice["message"]["content"] if mode == "chat" else choice["text"]
        except (KeyError, IndexError, TypeError):
            raise JudgeBackendError(
                f"server reply has no choices[0].{'message.content' if mode == 'chat' else 'text'}"
                f": {json.dumps(body)[:300]}"
            ) from None
        return "" if text is None else str(text)

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(float(retry_after), 60.0)
            except ValueError:
                pass
        base = min(self.config.backoff_s * (2 ** attempt), 30.0)
        return base * (0.5 + self._rng.random() / 2)

    def ask(self, prompt: str) -> str:
        """One reply, with retries; raises :class:`JudgeBackendError` when it cannot."""
        path, payload = self._payload(prompt)
        url = f"{self.config.base_url.rstrip('/')}{path}"
        last = ""
        for attempt in range(self.config.max_retries + 1):
            retry_after = None
            try:
                resp = self._client.post(path, json=payload)
            except httpx.TimeoutException as exc:
                last = f"timed out after {self.config.timeout_s:g} s ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last = f"connection failed: {exc}"
            else:
                if resp.status_code == 200:
                    try:
                        body = resp.json()
                    except ValueError:
                        raise JudgeBackendError(
                            f"{url} answered 200 with a non-JSON body: {resp.text[:200]!r}"
                        ) from None
                    return self._extract(body, self.config.mode)
                last = f"HTTP {resp.status_code}: {resp.text[:300]}"
                if resp.status_code not in _RETRY_STATUS:
                    raise JudgeBackendError(f"{url} refused the request: {last}")
                retry_after = resp.headers.get("Retry-After")
            if attempt < self.config.max_retries:
                delay = self._delay(attempt, retry_after)
                log.warning("judge request to %s failed (%s); retry %d/%d in %.2f s", url, last,
                            attempt + 1, self.config.max_retries, delay)
                time.sleep(delay)
        raise JudgeBackendError(
            f"{url} failed after {self.config.max_retries + 1} attempts; last error: {last}"
        )

    def _respond(self, requests: Sequence[JudgeRequest]) -> list[str]:
        if len(requests) == 1:
            return [self.ask(requests[0].prompt)]
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            return list(pool.map(self.ask, [r.prompt for r in requests]))

    def close(self) -> None:
        self._client.close()
