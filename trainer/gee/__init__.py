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

This package imports no environment (``simulator_client`` builds agents from it).
"""

from __future__ import annotations

from trainer.gee.config import PROPOSERS_BUILTIN, GEEConfig
from trainer.gee.pool import GenEEPool, ctr_curve
from trainer.gee.prompts import EXPLOIT_PROMPT, EXPLORE_PROMPT, parse_reply
from trainer.gee.proposers import (
    EmbeddingProposer,
    LLMProposer,
    Proposer,
    make_proposer,
    sentence_encoder,
)

__all__ = ["EXPLOIT_PROMPT", "EXPLORE_PROMPT", "PROPOSERS_BUILTIN", "EmbeddingProposer",
           "GEEConfig", "GenEEPool", "LLMProposer", "Proposer", "ctr_curve", "make_proposer",
           "parse_reply",
           "sentence_encoder"]
