"""Proposers: what suggests GenEE's next pool item. The :class:`Proposer` protocol, the
non-generative :class:`EmbeddingProposer`, the paper's :class:`LLMProposer`, and
:func:`make_proposer`, which builds the one a :class:`~trainer.gee.config.GEEConfig` names
(with :func:`sentence_encoder` mapping LLM replies onto the catalogue)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from trainer.gee.config import GEEConfig
from trainer.gee.prompts import (
    EXPLOIT_PROMPT,
    EXPLORE_PROMPT,
    MAX_ITEM_CHARS,
    MAX_LOG_CHARS,
    parse_reply,
)


class Proposer(Protocol):
    """Proposes one new catalogue item at a time, never one of ``exclude``."""

    def propose_exploit(self, pool_items: Sequence[int], ctrs: Sequence[float],
                        history_of_ctrs: Sequence[tuple[int, float]],
                        exclude: Iterable[int]) -> int:
        """An item like the best-CTR ones. ``ctrs`` align with ``pool_items`` (NaN: not
        shown); ``history_of_ctrs`` holds (item, CTR) of every finished iteration."""
        ...

    def propose_explore(self, pool_items: Sequence[int], exclude: Iterable[int]) -> int:
        """An item unlike the pool's (no CTR is used)."""
        ...

    def report(self) -> dict[str, Any]:
        """What the proposer did (counts, log), for the run's results."""
        ...

    def close(self) -> None:
        """Release the backend (called once the pool is final); idempotent."""
        ...


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2 or not len(v):
        raise ValueError("item vectors must be a non-empty [items, dim] matrix")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.asarray(v / np.maximum(norms, 1e-12), dtype=np.float32)


def _allowed(num_items: int, exclude: Iterable[int]) -> np.ndarray:
    """Boolean mask of catalogue items not in ``exclude`` (ids outside are ignored)."""
    ok = np.ones(num_items, dtype=bool)
    ex = np.fromiter((int(i) for i in exclude), dtype=np.int64)
    ex = ex[(ex >= 0) & (ex < num_items)]
    ok[ex] = False
    if not ok.any():
        raise ValueError("every catalogue item is excluded: nothing left to propose")
    return ok


def _best(pool_items: Sequence[int], ctrs: Sequence[float], top: int) -> list[int]:
    """The ``top`` pool items with the highest CTR (NaN never best; ties: lowest id)."""
    scored = [(float(c), int(i)) for i, c in zip(pool_items, ctrs, strict=True)
              if not math.isnan(float(c))]
    scored.sort(key=lambda t: (-t[0], t[1]))
    return [i for _, i in scored[:top]]


class EmbeddingProposer:
    """Non-generative proposer over the catalogue's text embeddings (no language model).

    Exploit: the non-excluded item nearest (cosine) the normalised centroid of the
    ``top`` best-CTR pool items' vectors (all pool items when none has a CTR). Explore: an
    item drawn uniformly among the ``explore_fraction`` of non-excluded items with the
    largest minimum cosine distance to the pool (uniform over all non-excluded items when
    the pool is empty). ``vectors`` are the catalogue's text vectors, computed once by the
    caller (an experiment reuses the on-disk cache of ``simulator_client.item_features``)."""

    name = "embedding"

    def __init__(self, vectors: np.ndarray, *, top: int = 2, explore_fraction: float = 0.05,
                 seed: int = 0, item_text: Sequence[str] | None = None) -> None:
        self.vectors = _unit_rows(vectors)
        self.top = top
        self.explore_fraction = explore_fraction
        self.item_text = item_text
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, 97]))
        self.log: list[dict[str, Any]] = []

    @property
    def num_items(self) -> int:
        """Catalogue size."""
        return int(self.vectors.shape[0])

    def _note(self, kind: str, item: int, **extra: Any) -> int:
        entry: dict[str, Any] = {"kind": kind, "item": item, **extra}
        if self.item_text is not None:
            entry["text"] = str(self.item_text[item])[:MAX_ITEM_CHARS]
        self.log.append(entry)
        return item

    def propose_exploit(self, pool_items: Sequence[int], ctrs: Sequence[float],
                        history_of_ctrs: Sequence[tuple[int, float]],
                        exclude: Iterable[int]) -> int:
        ok = _allowed(self.num_items, exclude)
        basis = _best(pool_items, ctrs, self.top) or [int(i) for i in pool_items]
        if not basis:
            return self._note("exploit", int(self._rng.choice(np.flatnonzero(ok))), basis=[])
        centroid = self.vectors[basis].mean(axis=0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        scores = np.where(ok, self.vectors @ centroid, -np.inf)
        # argmax takes the first maximum: ties go to the lowest id, deterministically.
        return self._note("exploit", int(np.argmax(scores)), basis=basis)

    def propose_explore(self, pool_items: Sequence[int], exclude: Iterable[int]) -> int:
        ok = _allowed(self.num_items, exclude)
        candidates = np.flatnonzero(ok)
        pool = [int(i) for i in pool_items]
        if not pool:
            return self._note("explore", int(self._rng.choice(candidates)))
        # Minimum cosine distance of each candidate to the pool = 1 − its best similarity.
        distance = 1.0 - (self.vectors[candidates] @ self.vectors[pool].T).max(axis=1)
        n = max(1, math.ceil(self.explore_fraction * len(candidates)))
        far = candidates[np.argsort(-distance, kind="stable")[:n]]
        return self._note("explore", int(self._rng.choice(far)))

    def report(self) -> dict[str, Any]:
        """Proposal count and log (the embedding proposer never falls back)."""
        return {"proposer": self.name, "proposals": len(self.log), "fallbacks": 0,
                "log": self.log}

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state (random generator and log) for :meth:`load_state_dict`."""
        return {"rng": self._rng.bit_generator.state, "log": copy.deepcopy(self.log)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (the vectors are the caller's)."""
        self._rng.bit_generator.state = state["rng"]
        self.log = copy.deepcopy(list(state.get("log", [])))

    def close(self) -> None:
        """Nothing to release."""


def _ctr_text(ctr: float) -> str:
    return "not shown yet" if math.isnan(ctr) else f"CTR {ctr:.3f}"


class LLMProposer:
    """The paper's proposer: a language model asked the exploit or explore prompt.

    ``generate`` maps prompts to replies (e.g. ``HFJudge.generate``, or
    ``OpenAIJudge.ask`` over a list). The reply's first non-empty line is encoded with
    ``encode`` (unit-norm vectors of the same encoder as ``vectors``) and mapped to the
    nearest catalogue item not excluded; an empty or garbled reply falls back to a
    uniformly random non-excluded item and is counted in ``fallbacks``. Every prompt,
    reply and mapped item is kept in :attr:`log`."""

    name = "llm"

    def __init__(self, generate: Callable[[list[str]], list[str]], item_text: Sequence[str],
                 vectors: np.ndarray, encode: Callable[[list[str]], np.ndarray], *,
                 scenario: str = "recommendation", item_noun: str = "item", top: int = 2,
                 seed: int = 0, label: str = "llm",
                 on_close: Callable[[], None] | None = None) -> None:
        self.generate = generate
        self.item_text = item_text
        self.vectors = _unit_rows(vectors)
        if len(item_text) != len(self.vectors):
            raise ValueError("item_text and vectors describe catalogues of different sizes")
        self.encode = encode
        self.scenario = scenario
        self.item_noun = item_noun
        self.top = top
        self.label = label
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, 98]))
        self.log: list[dict[str, Any]] = []
        self.fallbacks = 0
        self._on_close = on_close

    def _text(self, item: int) -> str:
        text = " ".join(str(self.item_text[item]).split())
        return text if len(text) <= MAX_ITEM_CHARS else text[: MAX_ITEM_CHARS - 1] + "…"

    def exploit_prompt(self, pool_items: Sequence[int], ctrs: Sequence[float],
                       history_of_ctrs: Sequence[tuple[int, float]]) -> str:
        """The exploit prompt: pool with CTRs, and the best items of all iterations."""
        pool = "\n".join(f"- {self._text(int(i))} ({_ctr_text(float(c))})"
                         for i, c in zip(pool_items, ctrs, strict=True))
        best_ctr: dict[int, float] = {}
        for item, c in history_of_ctrs:
            if not math.isnan(float(c)):
                best_ctr[int(item)] = max(float(c), best_ctr.get(int(item), -math.inf))
        ranked = _best(list(best_ctr), list(best_ctr.values()), self.top)
        best = "\n".join(f"- {self._text(i)} ({_ctr_text(best_ctr[i])})" for i in ranked)
        return EXPLOIT_PROMPT.format(item=self.item_noun, scenario=self.scenario,
                                     pool=pool or "- none", best=best or "- none yet")

    def explore_prompt(self, pool_items: Sequence[int]) -> str:
        """The explore prompt: the pool without CTRs."""
        pool = "\n".join(f"- {self._text(int(i))}" for i in pool_items)
        return EXPLORE_PROMPT.format(item=self.item_noun, scenario=self.scenario,
                                     pool=pool or "- none")

    def _ask(self, kind: str, prompt: str, exclude: Iterable[int]) -> int:
        ok = _allowed(len(self.vectors), exclude)
        replies = self.generate([prompt])
        reply = str(replies[0]) if replies else ""
        name = parse_reply(reply, self.item_noun)
        entry: dict[str, Any] = {"kind": kind, "prompt": prompt[: 4 * MAX_LOG_CHARS],
                                 "reply": reply[:MAX_LOG_CHARS], "parsed": name}
        if name:
            query = np.asarray(self.encode([name[:MAX_LOG_CHARS]]), dtype=np.float32).reshape(-1)
            query /= max(float(np.linalg.norm(query)), 1e-12)
            sims = np.where(ok, self.vectors @ query, -np.inf)
            item = int(np.argmax(sims))
            entry.update(similarity=float(sims[item]), fallback=False)
        else:
            # Nothing usable to map: a random allowed item, counted so it shows in results.
            self.fallbacks += 1
            item = int(self._rng.choice(np.flatnonzero(ok)))
            entry.update(fallback=True)
        entry.update(item=item, text=self._text(item))
        self.log.append(entry)
        return item

    def propose_exploit(self, pool_items: Sequence[int], ctrs: Sequence[float],
                        history_of_ctrs: Sequence[tuple[int, float]],
                        exclude: Iterable[int]) -> int:
        return self._ask("exploit", self.exploit_prompt(pool_items, ctrs, history_of_ctrs),
                         exclude)

    def propose_explore(self, pool_items: Sequence[int], exclude: Iterable[int]) -> int:
        return self._ask("explore", self.explore_prompt(pool_items), exclude)

    def report(self) -> dict[str, Any]:
        """Counts and the prompt/reply/item log."""
        return {"proposer": self.label, "proposals": len(self.log),
                "fallbacks": self.fallbacks, "log": self.log}

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state (random generator, fallbacks, log) for :meth:`load_state_dict`."""
        return {"rng": self._rng.bit_generator.state, "fallbacks": self.fallbacks,
                "log": copy.deepcopy(self.log)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (the backend is the caller's)."""
        self._rng.bit_generator.state = state["rng"]
        self.fallbacks = int(state.get("fallbacks", 0))
        self.log = copy.deepcopy(list(state.get("log", [])))

    def close(self) -> None:
        """Release the backend (``on_close``, e.g. the judge's HTTP client), once."""
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()


def make_proposer(config: GEEConfig, item_text: Sequence[str], vectors: np.ndarray, *,
                  seed: int, dataset: str | None = None) -> Proposer:
    """The proposer ``config.proposer`` names, over a catalogue whose item ``i`` reads
    ``item_text[i]`` and whose unit text vectors are ``vectors`` (all-MiniLM-L6-v2).

    ``embedding`` builds :class:`EmbeddingProposer`; any other value is a judge option
    string (``policy.judge.spec.JudgeSpec``) of a generating backend (``hf`` or
    ``openai``), wrapped in :class:`LLMProposer`. ``dataset`` names the built-in scenario
    (the prompts' item noun and platform) when the options give no ``--scenario``; without
    either an LLM proposer is refused. Invalid options raise ValueError."""
    texts = list(item_text)
    if config.proposer == "embedding":
        return EmbeddingProposer(vectors, top=config.exploit_top,
                                 explore_fraction=config.explore_fraction, seed=seed,
                                 item_text=texts)
    import dataclasses
    import weakref

    from policy.judge.hf import HFJudge
    from policy.judge.openai_http import OpenAIJudge
    from policy.judge.prompt import Scenario, load_scenario
    from policy.judge.spec import JudgeSpec, JudgeSpecError

    try:
        spec = JudgeSpec.parse(config.proposer)
        env = dataset if dataset is not None else spec.scenario
        if env is None:
            raise JudgeSpecError("no dataset names the scenario: add --scenario NAME|FILE")
        judge = spec.build(env, texts)
    except JudgeSpecError as exc:
        raise ValueError(f"invalid gee proposer {config.proposer!r}: {exc}") from exc
    generate: Callable[[list[str]], list[str]]
    if isinstance(judge, HFJudge):
        judge.config = dataclasses.replace(judge.config, max_new_tokens=config.max_new_tokens)
        generate = judge.generate
    elif isinstance(judge, OpenAIJudge):
        judge.config = dataclasses.replace(judge.config, max_tokens=config.max_new_tokens)
        ask = judge.ask

        def ask_each(prompts: list[str]) -> list[str]:
            return [ask(p) for p in prompts]

        generate = ask_each
    else:
        raise ValueError(f"gee proposer {config.proposer!r}: the {judge.name} judge cannot "
                         "generate text; use proposer 'embedding' or an hf/openai backend")
    try:
        # The scenario the judge options name (a dataset or a file), else the dataset's.
        scenario: Scenario | None = load_scenario(spec.scenario or env)
    except (KeyError, ValueError):
        scenario = None
    proposer = LLMProposer(generate, texts, vectors, sentence_encoder(),
                           scenario=scenario.scenario if scenario else "recommendation",
                           item_noun=scenario.item if scenario else "item",
                           top=config.exploit_top, seed=seed, label=spec.label(),
                           on_close=judge.close)
    # The pool closes the judge once it is final; a pool dropped early closes it on
    # collection.
    weakref.finalize(proposer, judge.close)
    return proposer


def sentence_encoder(device: str = "cpu") -> Callable[[list[str]], np.ndarray]:
    """``encode(texts) -> unit vectors`` with the packaged all-MiniLM-L6-v2 (loaded once,
    on first use): the encoder the catalogue's text vectors come from."""
    from policy.judge.embedding import bundled_model_path, load_sentence_encoder

    holder: list[Any] = []

    def encode(texts: list[str]) -> np.ndarray:
        if not holder:
            holder.append(load_sentence_encoder(bundled_model_path(), device))
        out = holder[0].encode(list(texts), batch_size=64, normalize_embeddings=True,
                               show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32)

    return encode
