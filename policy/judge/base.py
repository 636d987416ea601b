"""The judge interface (the "LLM" of section 4.1.1) and the machinery every backend shares.

A backend only turns prompts into raw replies (:meth:`BaseJudge._respond`). This base class
builds the prompts, consults the reply cache, parses replies, and keeps counts, so caching,
parsing and statistics behave the same for every backend.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from policy.judge.cache import AnswerCache, cache_key
from policy.judge.parse import AnswerKind, parse_answer
from policy.judge.prompt import PromptBuilder

log = logging.getLogger(__name__)


@runtime_checkable
class PreferenceJudge(Protocol):
    """Chooses which of k candidate items a user would prefer next, or None."""

    def choose(self, history: Sequence[int], candidates: Sequence[int]) -> int | None:
        """Index into ``candidates`` of the preferred item, or None (no candidate fits)."""
        ...

    def choose_batch(
        self, histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]
    ) -> list[int | None]:
        """:meth:`choose` for many decisions at once (one batched backend call)."""
        ...


@dataclass(frozen=True)
class JudgeRequest:
    """One decision to judge: item ids plus the rendered prompt."""

    history: tuple[int, ...]
    """History item ids, oldest first."""
    candidates: tuple[int, ...]
    """Candidate item ids in label order (a, b, ...)."""
    prompt: str
    """The filled template."""


@dataclass(frozen=True)
class JudgeAnswer:
    """A parsed judge decision and where it came from."""

    kind: AnswerKind
    """"item", "none" or "unparseable"."""
    index: int | None
    """Candidate index when ``kind == "item"``, else None."""
    reply: str
    """The raw reply text."""
    cached: bool
    """Whether the reply came from the cache (no backend call)."""

    @property
    def reward(self) -> float:
        """r^p of eq. 3: 1 when an item is selected, else 0."""
        return 1.0 if self.kind == "item" else 0.0


@dataclass
class JudgeStats:
    """Running counts of a judge's answers."""

    requests: int = 0
    """Decisions asked for."""
    cache_hits: int = 0
    """Decisions answered from the cache."""
    backend_calls: int = 0
    """Batched calls made to the backend."""
    backend_prompts: int = 0
    """Prompts sent to the backend."""
    items: int = 0
    """Answers that selected a candidate."""
    nones: int = 0
    """Answers of None."""
    unparseable: int = 0
    """Replies that named no candidate (never guessed)."""
    seconds: float = 0.0
    """Wall time spent in the backend."""

    def as_dict(self) -> dict[str, Any]:
        """Counts plus the rates a report needs."""
        out: dict[str, Any] = asdict(self)
        n = max(self.requests, 1)
        out["none_rate"] = self.nones / n
        out["unparseable_rate"] = self.unparseable / n
        out["select_rate"] = self.items / n
        return out


class BaseJudge(ABC):
    """Prompting, caching, parsing and counting around a backend's :meth:`_respond`."""

    name: str = "judge"
    """Short backend name used in logs and reports."""

    def __init__(self, prompts: PromptBuilder, *, cache: AnswerCache | None = None) -> None:
        self.prompts = prompts
        self.cache = cache
        self.stats = JudgeStats()
        self._logged_unparseable = 0

    @abstractmethod
    def fingerprint(self) -> str:
        """Everything that decides this backend's replies (model, adapter, decoding)."""

    @abstractmethod
    def _respond(self, requests: Sequence[JudgeRequest]) -> list[str]:
        """Raw reply text for each request, in order."""

    def cache_identity(self) -> str:
        """Cache namespace: backend fingerprint plus prompt settings."""
        return f"{self.name}|{self.fingerprint()}|{self.prompts.fingerprint()}"

    def judge_batch(
        self, histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]
    ) -> list[JudgeAnswer]:
        """Parsed answers for many decisions; only uncached prompts reach the backend."""
        if len(histories) != len(candidates):
            raise ValueError(f"{len(histories)} histories but {len(candidates)} candidate lists")
        requests = [
            JudgeRequest(
                history=tuple(int(i) for i in h),
                candidates=tuple(int(c) for c in cs),
                prompt=self.prompts.build(h, cs),
            )
            for h, cs in zip(histories, candidates, strict=True)
        ]
        identity = self.cache_identity()
        keys = [cache_key(identity, r.prompt) for r in requests]
        stored = self.cache.get_many(keys) if self.cache is not None else {}
        replies: list[str | None] = [stored.get(k) for k in keys]
        # Identical prompts in one batch are asked once.
        todo: dict[str, int] = {}
        for i, (k, reply) in enumerate(zip(keys, replies, strict=True)):
            if reply is None and k not in todo:
                todo[k] = i
        if todo:
            started = time.perf_counter()
            fresh = self._respond([requests[i] for i in todo.values()])
            self.stats.seconds += time.perf_counter() - started
            self.stats.backend_calls += 1
            self.stats.backend_prompts += len(todo)
            if len(fresh) != len(todo):
                raise RuntimeError(f"backend returned {len(fresh)} replies for {len(todo)}")
            by_key = dict(zip(todo, fresh, strict=True))
            if self.cache is not None:
                self.cache.put_many(identity, by_key.items())
        else:
            by_key = {}
        answers = []
        for k, req, reply in zip(keys, requests, replies, strict=True):
            cached = reply is not None
            text = reply if reply is not None else by_key[k]
            answers.append(self._parse(req, text, cached))
        return answers

    def _parse(self, req: JudgeRequest, reply: str, cached: bool) -> JudgeAnswer:
        texts = [self.prompts.text(c) for c in req.candidates]
        parsed = parse_answer(reply, len(req.candidates), texts)
        self.stats.requests += 1
        self.stats.cache_hits += int(cached)
        if parsed.kind == "item":
            self.stats.items += 1
        elif parsed.kind == "none":
            self.stats.nones += 1
        else:
            self.stats.unparseable += 1
            # Log the first few in full, then only count (a broken model floods logs).
            if self._logged_unparseable < 20:
                self._logged_unparseable += 1
                log.warning("%s: unparseable reply (%s): %r", self.name, parsed.reason,
                            reply[:200])
        return JudgeAnswer(kind=parsed.kind, index=parsed.index, reply=reply, cached=cached)

    def choose(self, history: Sequence[int], candidates: Sequence[int]) -> int | None:
        """Index of the preferred candidate, or None (also for unparseable replies)."""
        return self.choose_batch([history], [candidates])[0]

    def choose_batch(
        self, histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]
    ) -> list[int | None]:
        """:meth:`choose` for many decisions; see :meth:`judge_batch` for the answer kinds."""
        return [a.index for a in self.judge_batch(histories, candidates)]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release backend resources (HTTP clients, models)."""
