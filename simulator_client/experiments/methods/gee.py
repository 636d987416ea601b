"""Generative Explore-Exploit (GenEE) as experiment methods (the algorithm: ``trainer.gee``).

Methods:

* ``gee`` — the method: a pool of ``pool_size`` items (default 5) served to every training
  user; every ``impressions`` interactions the worst-CTR ``drop`` items go and new ones are
  proposed, alternating exploit and explore;
* ``gee-exploit`` — every new item is an exploit proposal (no exploration);
* ``gee-random-ctr`` — the CTRs that drive dropping and the exploit proposals are random
  numbers (the paper's ablation);
* ``gee-no-drop`` — nothing is dropped; new items are added and the pool grows (ablation).

How it runs in an experiment:

* **Training interactions are the iterations' impressions.** The agent serves the pool to
  the run's training users; each served item and the environment's reward are counted
  (:meth:`GenEEAgent.observe`). An iteration ends once the run's cumulative interactions
  reach the next multiple of ``impressions`` (default: the run's ``steps // iterations``),
  so the last iteration ends with the run. Batches of parallel users are never split, so
  an iteration's impressions may differ from ``impressions`` by fewer than ``num_envs``.
* **CTR is the CTR analogue.** The environments return graded rewards, not clicks; an
  item's CTR in an iteration is its mean reward per impression, and an iteration's CTR is
  the pool's total reward over its impressions. They are measured on the *training*
  interactions — the paper's online setting — while the run's evaluations (Return, Length)
  serve the pool of the moment to the test users with the same rule (uniform among pool
  items not in the user's history), recording nothing. The two are different users and
  reward models, so an iteration's CTR and an evaluation's ``r_avg`` are not comparable
  numbers; and a higher CTR need not mean a higher Return, since Return also depends on
  how long users stay (a small pool runs out of unseen items, and similar items make
  Coat's users leave).
* **Settings** come from ``--hyper '{"gee": {...}}'`` (shared by every variant), with a
  variant's own entry (e.g. ``{"gee-no-drop": {...}}``) over it; the variant's flag is
  applied last, so ``gee-exploit`` never explores whatever the shared settings say. Fields:
  :class:`trainer.gee.GEEConfig`.
* **Proposers.** ``proposer="embedding"`` (default) needs the environment's item texts and
  the packaged sentence encoder only; its vectors are the on-disk cached text encodings of
  ``simulator_client.item_features`` (encoded once per catalogue). Any other value is a judge
  option string (``policy.judge.spec.JudgeSpec``) of a generating backend: ``--judge openai
  --base-url URL --model M`` (the paper's setting: a large model) or ``--judge hf
  --model-path smollm2`` (a 135M model: runs offline, but the paper warns such models do
  not optimise). The embedding judge cannot generate and is refused. Replies are capped at
  ``max_new_tokens`` tokens.

The agent's report holds the per-iteration log (``trainer.gee.ctr_curve`` turns it into
the CTR curve), the proposer's counts (fallbacks) and prompt/reply log, and the settings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from simulator_client.experiments.context import MethodContext, register_method
from simulator_client.item_features import _text_vectors
from trainer.agents import EvalActor, StepBatch
from trainer.gee import GEEConfig, GenEEPool, Proposer, make_proposer

METHOD_NAME = "gee"

VARIANTS: dict[str, dict[str, Any]] = {
    "gee": {},
    "gee-exploit": {"explore": False},
    "gee-random-ctr": {"random_ctr": True},
    "gee-no-drop": {"no_drop": True},
}
"""Registered method names and the setting each one forces."""


class GenEEAgent:
    """Serves the GenEE pool, counts its impressions and ends iterations on schedule."""

    def __init__(self, name: str, pool: GenEEPool, impressions: int) -> None:
        self.name = name
        self.pool = pool
        self.impressions = impressions
        self.seen = 0
        """Training interactions observed so far."""

    @property
    def updates(self) -> int:
        """Iterations measured (the runner reports it as the method's updates)."""
        return len(self.pool.log)

    def act(self, histories: np.ndarray, user_ids: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
        """Serve the current pool (users are not personalised: ``user_ids`` is unused)."""
        return self.pool.serve(histories, rng)

    def observe(self, step: StepBatch) -> dict[str, float]:
        """Count the step's impressions and rewards; end iterations on schedule. Returns
        the last finished iteration's CTR, if one ended."""
        self.pool.record(step.actions, step.rewards)
        self.seen += len(step.actions)
        metrics: dict[str, float] = {}
        # Cumulative schedule: iteration k ends at the first batch reaching k·impressions.
        while not self.pool.done and self.seen >= self.pool.iteration * self.impressions:
            entry = self.pool.end_iteration()
            if entry["ctr"] is not None:
                metrics = {"gee_iteration": float(entry["iteration"]),
                           "gee_ctr": float(entry["ctr"])}
        return metrics

    def evaluator(self) -> EvalActor:
        """Serves a frozen copy of the current pool; records nothing."""
        snapshot = list(self.pool.pool)  # the pool at evaluation time, frozen

        def act(histories: np.ndarray, user_ids: np.ndarray, rng: np.random.Generator
                ) -> np.ndarray:
            return self.pool.serve(histories, rng, pool=snapshot)[0]

        return act

    def ranking_scores(self, histories: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
        """1 for the items of the current pool, 0 elsewhere ``[B, I]``: the pool is served
        uniformly (:meth:`evaluator`), so its items tie and the ranking's random tie-break
        orders them as a uniform draw would."""
        scores = np.zeros((len(histories), self.pool.num_items), dtype=np.float64)
        scores[:, np.asarray(self.pool.pool, dtype=np.int64)] = 1.0
        return scores

    def report(self) -> dict[str, Any]:
        """Per-iteration log, final pool, proposer statistics and settings."""
        return {**self.pool.report(), "impressions_per_iteration": self.impressions}


def _settings(ctx: MethodContext) -> dict[str, Any]:
    shared = dict(ctx.experiment.hyper.get(METHOD_NAME, {}))
    return {**shared, **dict(ctx.hyper), **VARIANTS.get(ctx.name, {})}


def build_proposer(ctx: MethodContext, config: GEEConfig, seed: int) -> Proposer:
    """The proposer ``config.proposer`` names, for the training environment's catalogue
    (:func:`trainer.gee.make_proposer`; the dataset names the default scenario)."""
    env = ctx.train_env
    if env.item_text is None:
        raise ValueError(f"environment {env.name!r} has no item texts: GenEE proposes items "
                         "by text")
    texts = list(env.item_text)
    # Encoded once per catalogue and cached on disk (shared with the ``text`` features).
    vectors = _text_vectors(texts, env.num_items)
    return make_proposer(config, texts, vectors, seed=seed,
                         dataset=env.name.removesuffix("-train"))


def make_gee_agent(ctx: MethodContext, proposer: Proposer | None = None) -> GenEEAgent:
    """Factory of ``gee`` and its variants (``proposer`` replaces the configured one)."""
    config = GEEConfig.from_hyper(_settings(ctx))
    seed = config.seed if config.seed is not None else ctx.seed
    if proposer is None:
        proposer = build_proposer(ctx, config, seed)
    pool = GenEEPool(config, ctx.train_env.num_items, proposer, seed=seed)
    return GenEEAgent(ctx.name, pool, config.impressions_for(ctx.experiment.steps))


for _name in VARIANTS:
    register_method(_name, make_gee_agent)

__all__ = ["METHOD_NAME", "VARIANTS", "GenEEAgent", "build_proposer", "make_gee_agent"]
