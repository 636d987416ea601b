"""Generative Explore-Exploit (GenEE): a training-free pool of items improved by proposals.

The setting (Senel et al., "Generative Explore-Exploit: Training-free Optimization of
Generative Recommender Systems using LLM Optimizers"): one small pool of items is served to
every user; after each iteration of served impressions, the items with the worst
click-through rate are dropped and new ones are asked for in two ways,

* *exploit*: the proposer is shown the pool with each item's CTR (and the best items seen so
  far) and asked for one new item similar to the best ones;
* *explore*: the proposer is shown the pool without any CTR and asked for one item of a
  different kind, to find preferences the pool does not cover yet.

Nothing is trained: the feedback loop is the only optimiser. The paper's setting is a pool
of 5, 1 item dropped per iteration, 15 iterations of 5,000 impressions; its ablations
(CTRs replaced by random numbers, nothing dropped) do not improve. The same knobs are the
fields of :class:`GEEConfig`.

Design choices (and why):

* **Items are catalogue items.** The paper's LLM writes free text (questions); here every
  proposal must be an item of the environment's catalogue, so a proposal is a *text*
  mapped to the catalogue item whose text embedding (all-MiniLM-L6-v2, the judge's
  sentence encoder) is nearest by cosine similarity. Items already in the pool or dropped
  earlier are never proposed again (the paper's LLM is likewise told not to repeat), so a
  reply that names a pool item maps to the nearest *other* item.
* **Three proposers.** :class:`EmbeddingProposer` (the default) is *not* generative: exploit
  is the catalogue item nearest the centroid of the best-CTR pool items' text embeddings,
  explore is an item drawn uniformly among the 5 % of items farthest (largest minimum cosine
  distance) from every pool item. It needs no language model, is fast and runs everywhere;
  it is the GenEE loop with a geometric stand-in for the LLM's judgement.
  :class:`LLMProposer` is the paper's method: it writes the exploit and explore prompts
  (:data:`EXPLOIT_PROMPT`, :data:`EXPLORE_PROMPT`) for any ``generate(prompts) -> replies``
  callable — a large model behind the OpenAI-compatible backend, or a local
  causal LM such as the packaged SmolLM2-135M. The paper warns that small models cannot
  act as the optimiser; SmolLM2 is supported so the loop runs offline and is tested, not
  because it is expected to optimise.
* **Replies are parsed leniently and never trusted.** The first non-empty line of a reply is
  taken, markup (bullets, numbering, quotes, the prompt's answer prefix) is stripped, and
  the text is mapped as above. An empty or garbled reply (no letter or digit) falls back to
  a uniformly random item not excluded, and is counted (``fallbacks``), so a bad backend is
  visible in the report instead of silently steering the pool. Backend errors are raised,
  not swallowed: a run against a dead server should stop, not turn into a random search.
* **CTR is the mean reward per impression.** The environments return graded rewards
  (ratings, engagement), not clicks; the CTR of an item in an iteration is the mean reward
  of its impressions in that iteration — the CTR analogue. Items not shown in an iteration
  (possible only with a pool larger than the iteration's impressions) have no CTR and are
  never dropped for it.
* **Dropping.** The ``drop`` items with the lowest CTR go; ties are broken by the lowest item
  id so runs are reproducible. With ``no_drop`` nothing is dropped and the new items are
  added, so the pool grows by ``drop`` items per iteration (the paper's ablation).
* **Explore or exploit, per new item.** A deterministic credit rule: a new item is an exploit
  proposal while the exploits made so far are fewer than ``exploit_share`` × (proposals so
  far + 1), else an explore one. With the default share 0.5 and one new item per iteration
  the two alternate (exploit first); with ``explore=False`` every proposal exploits.
* **Random-CTR ablation.** With ``random_ctr`` the CTRs used for dropping and shown to the
  exploit proposer are uniform random numbers (seeded); the real CTRs are still measured
  and logged, so the curve shows what the ablation achieves.
* **The initial pool** is ``pool_size`` items drawn uniformly at random from the catalogue
  (seeded), by default, so the first iteration's CTR is that of a random pool and every
  variant starts from the same pool; ``init="explore"`` builds it instead with the
  proposer's explore rule, one item at a time (the first uniformly at random).
* **Iterations.** ``iterations`` pools are measured; after each of the first
  ``iterations - 1`` measurements the pool is updated. The last measured pool is the final
  one (it is what is served afterwards), so the last point of the CTR curve is the CTR of
  the pool that is deployed, not of a pool holding an unmeasured newcomer.
* **Serving.** Each user gets a pool item drawn uniformly among those not yet in the user's
  history (else uniformly from the whole pool): the pool is a population-level list, not
  personalised, as in the paper; avoiding repeats only keeps a user from being shown the
  same item twice in a row when another pool item is available.

This module imports no environment (``simulator_client`` builds agents from it).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import numpy as np

PROPOSERS_BUILTIN = ("embedding",)
"""Proposers that need no language model; any other ``proposer`` string is a judge spec."""

EXPLOIT_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n"
    "Instruction: You choose the {item}s that a {scenario} platform shows to all of its "
    "users. Each {item} below has been shown to many users; its CTR is the mean engagement "
    "per impression (higher is better). Propose ONE new {item} that is not listed below and "
    "is similar to the {item}s with the highest CTR, so that it will get a high CTR too. "
    "Answer with its name only, on one line.\n"
    "Input: Current {item}s and their CTR:\n{pool}\n"
    "Best {item}s so far:\n{best}\n"
    "Response: The new {item} is:"
)
"""Exploit prompt. Placeholders: ``item`` (the scenario's item noun), ``scenario``,
``pool`` (one "- text (CTR 0.123)" line per pool item), ``best`` (the best items of all
finished iterations, same layout). Ends in an answer prefix so a completion model
continues with the name; chat models answer it as a question."""

EXPLORE_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n"
    "Instruction: You choose the {item}s that a {scenario} platform shows to all of its "
    "users. To discover what else users may like, propose ONE new {item} of a different "
    "kind, style or topic than all of the {item}s listed below. Answer with its name only, "
    "on one line.\n"
    "Input: Current {item}s:\n{pool}\n"
    "Response: The new {item} is:"
)
"""Explore prompt: the pool without CTRs. Placeholders: ``item``, ``scenario``, ``pool``
(one "- text" line per pool item)."""

MAX_ITEM_CHARS = 120
"""Item texts are cut to this length in prompts (Industry titles can be long)."""

MAX_LOG_CHARS = 300
"""Replies are cut to this length in the proposal log (prompts to 4× this)."""


@dataclass(frozen=True)
class GEEConfig:
    """Settings of GenEE (``--hyper '{"gee": {...}}'``)."""

    pool_size: int = 5
    """Items in the initial pool (the paper: 5)."""
    drop: int = 1
    """Items dropped (and new items proposed) per iteration (the paper: 1)."""
    iterations: int = 15
    """Pools measured; the pool is updated after each measurement but the last."""
    impressions: int | None = None
    """Impressions (served interactions) per iteration; None: inside an experiment of N
    training interactions, N // iterations (at least 1)."""
    exploit_share: float = 0.5
    """Share of new items proposed by exploit (the rest explore), by the deterministic
    credit rule of the module docstring (0.5 with ``drop=1``: exploit and explore
    alternate, exploit first)."""
    explore: bool = True
    """False: every new item is an exploit proposal (the "no exploration" ablation)."""
    random_ctr: bool = False
    """Replace the CTRs used for dropping and shown to the exploit proposer by uniform
    random numbers (ablation; the real CTRs are still logged)."""
    no_drop: bool = False
    """Drop nothing; new items are added, so the pool grows (ablation)."""
    exploit_top: int = 2
    """Best-CTR pool items the exploit rule builds on (the embedding centroid) and best
    items of the history listed in the exploit prompt."""
    init: str = "random"
    """Initial pool: ``random`` (uniform over the catalogue, seeded) or ``explore`` (the
    proposer's explore rule, one item at a time)."""
    proposer: str = "embedding"
    """``embedding`` (no language model; see :class:`EmbeddingProposer`) or judge options
    of an LLM backend, e.g. ``--judge openai --base-url URL --model M`` or
    ``--judge hf --model-path smollm2``."""
    max_new_tokens: int = 24
    """LLM proposers: reply length cap (a name or title fits)."""
    explore_fraction: float = 0.05
    """Embedding explore: draw among this share of items farthest from the pool."""
    seed: int | None = None
    """Seeds the initial pool, serving, the random CTRs and the proposers' draws; None:
    the experiment's seed."""

    def __post_init__(self) -> None:
        if self.pool_size < 1 or self.iterations < 1:
            raise ValueError("pool_size and iterations must be positive")
        if self.drop < 0 or (self.drop >= self.pool_size and not self.no_drop):
            raise ValueError(f"drop must lie in [0, pool_size) (got {self.drop} with "
                             f"pool_size {self.pool_size})")
        if self.impressions is not None and self.impressions < 1:
            raise ValueError("impressions must be positive")
        if not 0.0 <= self.exploit_share <= 1.0:
            raise ValueError("exploit_share must lie in [0, 1]")
        if self.exploit_top < 1:
            raise ValueError("exploit_top must be positive")
        if self.init not in ("random", "explore"):
            raise ValueError(f"init must be 'random' or 'explore', not {self.init!r}")
        if not 0.0 < self.explore_fraction <= 1.0:
            raise ValueError("explore_fraction must lie in (0, 1]")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be positive")

    @classmethod
    def from_hyper(cls, hyper: dict[str, Any]) -> GEEConfig:
        """The config of a method's hyperparameters; unknown keys are an error that names
        the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(hyper) - known)
        if unknown:
            raise ValueError(f"unknown gee setting(s) {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(known))}")
        return cls(**hyper)

    def impressions_for(self, steps: int) -> int:
        """Impressions per iteration inside a run of ``steps`` interactions."""
        if self.impressions is not None:
            return self.impressions
        return max(1, steps // self.iterations)


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


_CTR_NOTE = re.compile(r"\s*\((?:CTR\b[^)]*|not shown yet)\)\s*$", re.IGNORECASE)
_MARKUP = re.compile(r"^\s*(?:[-*•>#]+|\d+[.)]|[a-z][.)])\s+", re.IGNORECASE)


def parse_reply(reply: str, item_noun: str = "item") -> str:
    """The proposed name in a reply: its first non-empty line, without bullets, numbering,
    surrounding quotes or emphasis, the prompt's answer prefix or a copied "(CTR …)" note.
    Empty when nothing usable (no letter or digit) remains."""
    for raw in str(reply).splitlines():
        line = raw.strip()
        if not line:
            continue
        line = re.sub(rf"^(?:the\s+)?new\s+{re.escape(item_noun)}\s+is\s*:?\s*", "", line,
                      flags=re.IGNORECASE)
        line = _MARKUP.sub("", line)
        # A copied prompt line carries its CTR note; the name is what precedes it.
        line = _CTR_NOTE.sub("", line)
        # Emphasis, quotes and a closing full stop, in any nesting order.
        line = line.strip(" \t*_`\"'“”‘’.")
        return line if re.search(r"\w", line) else ""
    return ""


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


class GenEEPool:
    """The GenEE state machine: the served pool, this iteration's counts, and the log.

    Call :meth:`serve` to pick items, :meth:`record` with what was served and the rewards,
    and :meth:`end_iteration` once an iteration's impressions are in. :meth:`state_dict`
    and :meth:`load_state_dict` carry the whole state (pool, this iteration's counts, log,
    random generators, and the proposer's when it has those two methods) across a
    process restart, as JSON-safe data."""

    def __init__(self, config: GEEConfig, num_items: int, proposer: Proposer, *,
                 seed: int = 0) -> None:
        if num_items < 1:
            raise ValueError("the catalogue is empty")
        self.config = config
        self.num_items = num_items
        self.proposer = proposer
        root = np.random.SeedSequence([config.seed if config.seed is not None else seed, 89])
        init_seq, ctr_seq = root.spawn(2)
        self._ctr_rng = np.random.default_rng(ctr_seq)
        self.pool: list[int] = []
        self.ever: set[int] = set()
        """Every item that was ever in the pool (never proposed again)."""
        self.history_of_ctrs: list[tuple[int, float]] = []
        """(item, CTR used) of every finished iteration."""
        self.log: list[dict[str, Any]] = []
        self.iteration = 1
        """The iteration being measured (1-based); past ``config.iterations`` the pool is
        final."""
        self.invalid = 0
        """Proposals outside the catalogue or excluded (replaced by random items)."""
        self.impressions_after = 0
        """Impressions recorded after the last iteration (the final pool's serving)."""
        self._exploits = 0
        self._proposals = 0
        self._reset_counts()
        self.initial_how = config.init
        if config.init == "random" or num_items <= config.pool_size:
            rng = np.random.default_rng(init_seq)
            size = min(config.pool_size, num_items)
            self._extend([int(i) for i in rng.choice(num_items, size=size, replace=False)])
        else:
            for _ in range(config.pool_size):
                item = self.proposer.propose_explore(list(self.pool), self._exclude())
                self._extend([self._checked(item, self._exclude())])

    # -- state -------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """Whether every iteration has been measured (the pool is final)."""
        return self.iteration > self.config.iterations

    @property
    def impressions(self) -> int:
        """Impressions recorded for the pool in the iteration being measured."""
        return sum(self._impr.values())

    @property
    def running_ctr(self) -> float | None:
        """Mean reward per pool impression in the iteration being measured (None before
        its first impression)."""
        shown = self.impressions
        return sum(self._sums.values()) / shown if shown else None

    def _reset_counts(self) -> None:
        self._impr: dict[int, int] = {}
        self._sums: dict[int, float] = {}

    def _extend(self, items: Sequence[int]) -> None:
        for item in items:
            self.pool.append(int(item))
            self.ever.add(int(item))

    def _exclude(self, just_dropped: Iterable[int] = ()) -> set[int]:
        """Items a proposal may not be: the pool and every dropped item; once that covers
        the catalogue, the pool and the items dropped this iteration (older dropped items
        may return), and as a last resort the pool only."""
        ex = self.ever | set(self.pool)
        if len(ex) < self.num_items:
            return ex
        recent = set(self.pool) | {int(i) for i in just_dropped}
        return recent if len(recent) < self.num_items else set(self.pool)

    def _checked(self, item: Any, exclude: set[int]) -> int:
        """``item`` when it is an allowed catalogue id, else a random allowed item: the
        guarantee that the pool only ever holds catalogue ids."""
        try:
            value = int(item)
        except (TypeError, ValueError):
            value = -1
        if 0 <= value < self.num_items and value not in exclude:
            return value
        self.invalid += 1
        allowed = np.flatnonzero(_allowed(self.num_items, exclude))
        return int(self._ctr_rng.choice(allowed))

    # -- serving -----------------------------------------------------------------------
    def _fresh(self, histories: np.ndarray, items: np.ndarray) -> np.ndarray:
        """[B, K] mask of the pool items each row may be served: those not in its history,
        or the whole pool when it has seen them all."""
        hist = np.asarray(histories, dtype=np.int64).reshape(len(histories), -1)
        # Pool ids are >= 0, so PAD entries never match.
        fresh = ~(hist[:, :, None] == items[None, None, :]).any(axis=1)
        fresh[~fresh.any(axis=1)] = True
        return fresh

    def serve(self, histories: np.ndarray, rng: np.random.Generator,
              pool: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One pool item per row of ``histories`` ([B, W], PAD-padded): uniform among the
        pool items not in that row's history, else uniform over the pool. Returns
        (items, the probability each was served with). ``pool`` replaces the current pool
        (an evaluation snapshot)."""
        items = np.asarray(self.pool if pool is None else pool, dtype=np.int64)
        if not len(histories):
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        fresh = self._fresh(histories, items)
        # Uniform among the allowed columns: random keys, disallowed ones pushed below 0.
        keys = np.where(fresh, rng.random(fresh.shape), -1.0)
        return items[np.argmax(keys, axis=1)], 1.0 / fresh.sum(axis=1)

    def record(self, items: Sequence[int] | np.ndarray, rewards: Sequence[float] | np.ndarray
               ) -> None:
        """Count impressions and rewards of served ``items`` (non-pool items are ignored:
        they were not served by this pool)."""
        members = set(self.pool)
        for item, reward in zip(np.asarray(items).tolist(), np.asarray(rewards).tolist(),
                                strict=True):
            if self.done:
                self.impressions_after += 1
                continue
            if int(item) in members:
                self._impr[int(item)] = self._impr.get(int(item), 0) + 1
                self._sums[int(item)] = self._sums.get(int(item), 0.0) + float(reward)

    # -- one iteration -----------------------------------------------------------------
    def _use_exploit(self) -> bool:
        if not self.config.explore:
            return True
        # Deterministic credit rule: exploit while behind its share of the proposals.
        return self._exploits < self.config.exploit_share * (self._proposals + 1) - 1e-9

    def end_iteration(self) -> dict[str, Any]:
        """Measure this iteration's CTRs, log them and (but after the last iteration)
        drop the worst items and add proposals. Returns the log entry."""
        if self.done:
            raise RuntimeError("every iteration has been measured already")
        cfg = self.config
        pool = list(self.pool)
        ctr = [self._sums.get(i, 0.0) / self._impr[i] if self._impr.get(i) else math.nan
               for i in pool]
        impressions = sum(self._impr.get(i, 0) for i in pool)
        total = sum(self._sums.get(i, 0.0) for i in pool)
        # What drives dropping and the exploit prompt: the real CTRs, or random numbers.
        used = ([float(self._ctr_rng.random()) if not math.isnan(c) else math.nan for c in ctr]
                if cfg.random_ctr else list(ctr))
        entry: dict[str, Any] = {
            "iteration": self.iteration, "pool": pool,
            "ctr_items": {str(i): (None if math.isnan(c) else c) for i, c in zip(pool, ctr,
                                                                                 strict=True)},
            "impressions_items": {str(i): self._impr.get(i, 0) for i in pool},
            "impressions": impressions,
            "ctr": total / impressions if impressions else None,
            "dropped": [], "added": [], "how": [],
        }
        if cfg.random_ctr:
            entry["ctr_used"] = {str(i): (None if math.isnan(c) else c)
                                 for i, c in zip(pool, used, strict=True)}
        self.history_of_ctrs.extend((i, c) for i, c in zip(pool, used, strict=True)
                                    if not math.isnan(c))
        last = self.iteration == cfg.iterations
        if not last:
            self._update(pool, used, entry)
        self.log.append(entry)
        self.iteration += 1
        self._reset_counts()
        if last:
            self.proposer.close()  # the pool is final: no more proposals
        return entry

    def _update(self, pool: list[int], used: list[float], entry: dict[str, Any]) -> None:
        cfg = self.config
        dropped: list[int] = []
        if not cfg.no_drop:
            # Worst first; unshown items (NaN) are never dropped; ties: the lowest id.
            ranked = sorted((c, i) for i, c in zip(pool, used, strict=True) if not math.isnan(c))
            dropped = [i for _, i in ranked[: cfg.drop]]
            self.pool = [i for i in pool if i not in set(dropped)]
            entry["dropped"] = dropped
        kept = list(self.pool)
        kept_ctr = [used[pool.index(i)] for i in kept]
        for _ in range(cfg.drop):
            exclude = self._exclude(dropped)
            if len(exclude) >= self.num_items:
                entry.setdefault("note", "catalogue exhausted")
                break
            if self._use_exploit():
                item = self.proposer.propose_exploit(kept, kept_ctr, list(self.history_of_ctrs),
                                                     exclude)
                how = "exploit"
                self._exploits += 1
            else:
                item = self.proposer.propose_explore(list(self.pool), exclude)
                how = "explore"
            self._proposals += 1
            item = self._checked(item, exclude)
            self._extend([item])
            entry["added"].append(item)
            entry["how"].append(how)

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load_state_dict` needs to continue exactly where this pool
        is, as JSON-safe data (a deep copy: later calls do not change it). The config and
        the catalogue are the caller's; the proposer's state is included when the
        proposer has ``state_dict``."""
        state: dict[str, Any] = {
            "pool": list(self.pool), "ever": sorted(self.ever),
            "history_of_ctrs": [[i, c] for i, c in self.history_of_ctrs],
            "log": copy.deepcopy(self.log), "iteration": self.iteration,
            "invalid": self.invalid, "impressions_after": self.impressions_after,
            "exploits": self._exploits, "proposals": self._proposals,
            "impressions_items": {str(i): n for i, n in self._impr.items()},
            "reward_sums": {str(i): v for i, v in self._sums.items()},
            "initial_pool_from": self.initial_how,
            "ctr_rng": self._ctr_rng.bit_generator.state,
        }
        proposer_state = getattr(self.proposer, "state_dict", None)
        if callable(proposer_state):
            state["proposer"] = proposer_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`. Raises ValueError when the saved pool does
        not fit this catalogue (e.g. the items file changed)."""
        pool = [int(i) for i in state["pool"]]
        ever = {int(i) for i in state.get("ever", pool)}
        outside = sorted(i for i in ever | set(pool) if not 0 <= i < self.num_items)
        if not pool or outside:
            raise ValueError(f"saved GenEE pool {pool} does not fit a catalogue of "
                             f"{self.num_items} items (outside: {outside[:5]})")
        self.pool = pool
        self.ever = ever | set(pool)
        self.history_of_ctrs = [(int(i), float(c)) for i, c in state.get("history_of_ctrs", [])]
        self.log = copy.deepcopy(list(state.get("log", [])))
        self.iteration = int(state.get("iteration", 1))
        self.invalid = int(state.get("invalid", 0))
        self.impressions_after = int(state.get("impressions_after", 0))
        self._exploits = int(state.get("exploits", 0))
        self._proposals = int(state.get("proposals", 0))
        self._impr = {int(i): int(n) for i, n in state.get("impressions_items", {}).items()}
        self._sums = {int(i): float(v) for i, v in state.get("reward_sums", {}).items()}
        self.initial_how = str(state.get("initial_pool_from", self.initial_how))
        if "ctr_rng" in state:
            self._ctr_rng.bit_generator.state = state["ctr_rng"]
        load = getattr(self.proposer, "load_state_dict", None)
        if "proposer" in state and callable(load):
            load(state["proposer"])

    def report(self) -> dict[str, Any]:
        """The per-iteration log, the final pool and the proposer's report."""
        return {"iterations": self.log, "pool": list(self.pool),
                "initial_pool": self.log[0]["pool"] if self.log else list(self.pool),
                "initial_pool_from": self.initial_how, "invalid_proposals": self.invalid,
                "impressions_after": self.impressions_after,
                "proposer": self.proposer.report(), "config": asdict(self.config)}


def ctr_curve(report: dict[str, Any]) -> list[tuple[int, float]]:
    """(iteration, CTR) of every measured iteration of a GenEE report (the pool's
    :meth:`GenEEPool.report`, an agent's report, or a run's method result holding it
    under ``"report"``); iterations without impressions are left out."""
    if "iterations" not in report and isinstance(report.get("report"), dict):
        report = report["report"]
    return [(int(e["iteration"]), float(e["ctr"])) for e in report.get("iterations", [])
            if e.get("ctr") is not None]


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


__all__ = ["EXPLOIT_PROMPT", "EXPLORE_PROMPT", "PROPOSERS_BUILTIN", "EmbeddingProposer",
           "GEEConfig", "GenEEPool", "LLMProposer", "Proposer", "ctr_curve", "make_proposer",
           "parse_reply",
           "sentence_encoder"]
