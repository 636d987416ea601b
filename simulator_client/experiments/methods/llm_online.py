"""LLMOnline (section 6.3): the preference judge used online, as a sub-agent of the policy.

The acting loop is that of iALP pre-training (Algorithm 1, ``trainer.pretrain``): for each
user the actor of π samples k distinct candidates, the judge is asked the Table 1 prompt,
and the candidate it names is recommended; when it answers None (or its reply names no
candidate) a random candidate is recommended instead (eq. 3). The difference is where
the learning signal comes from: the transition stored in the replay buffer carries the
*environment's* reward (the user's feedback), not r^p, and the A2C learner is updated from
it online, exactly as the ``a2c`` method is. Evaluation acts the same way (the judge stays
in the loop; that is the method), so every recommendation costs a judge call, which is the
time cost the paper points out. Wall time per decision (actor + judge) is kept in
:attr:`LLMOnlineAgent.timing` and reported in the experiment's results.

Settings (``--hyper '{"llm-online": {...}}'``): the fields of :class:`LLMOnlineConfig`
plus any A2C hyperparameter. The judge defaults to the offline embedding judge with the
dataset's own threshold, as ``ialp pretrain`` builds it; ``"judge"`` takes the same judge
options as ``ialp pretrain`` (e.g. ``"--judge hf --model-path M --adapter A"``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from policy.judge.base import BaseJudge
from policy.judge.propose import check_candidate_mode, propose_and_judge
from policy.mixed import MixedPolicy
from simulator_client.experiments.context import MethodContext, register_method
from trainer.agents import EvalActor, LearnerAgent, OnlineConfig
from trainer.learners import ONLINE_A2C, make_learner
from trainer.learners.base import Learner

METHOD_NAME = "llm-online"

A2C_DEFAULTS: dict[str, Any] = dict(ONLINE_A2C)
"""The online A2C settings of the ``a2c`` baseline rows (docs/experiments-baselines.md);
hyperparameters given for the method override them."""


@dataclass(frozen=True)
class LLMOnlineConfig:
    """Settings of LLMOnline that are not learner hyperparameters."""

    k: int = 10
    """Candidates the actor proposes per decision (labels a..j; the next label is None)."""
    candidates: str = "sample"
    """"sample": k items drawn from π(·|s) without replacement; "topk": the k likeliest.
    Evaluation with ``--eval-greedy`` always uses the top k."""
    judge: str = ""
    """Judge options as for ``ialp pretrain`` (``--judge``, ``--threshold``, ``--model-path``,
    ...); empty: the embedding judge with the dataset's default threshold."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, not {self.k}")
        check_candidate_mode(self.candidates)

    @classmethod
    def split_hyper(cls, hyper: dict[str, Any]) -> tuple[LLMOnlineConfig, dict[str, Any]]:
        """(LLMOnline settings, learner hyperparameters with the A2C defaults filled in)."""
        own = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in hyper.items() if k in own})
        learner = {**A2C_DEFAULTS, **{k: v for k, v in hyper.items() if k not in own}}
        return cfg, learner


@dataclass
class DecisionTiming:
    """Where the time of acting goes (training decisions only; evaluation is apart)."""

    decisions: int = 0
    """Recommendations made while training."""
    seconds: float = 0.0
    """Wall time of those decisions: actor forward pass, candidate draw and judge."""
    judge_seconds: float = 0.0
    """Part of ``seconds`` spent in the judge (prompting, cache, backend, parsing)."""
    eval_decisions: int = 0
    """Recommendations made in evaluations."""
    eval_seconds: float = 0.0
    """Wall time of the evaluation decisions."""
    picks: int = 0
    """Training decisions where the judge named a candidate."""
    nones: int = 0
    """Training decisions answered None (a random candidate was recommended)."""
    unparseable: int = 0
    """Training decisions whose reply named no candidate (a random candidate, as None)."""

    def as_dict(self) -> dict[str, float]:
        """Totals plus per-decision seconds and the judge's answer rates."""
        n = max(self.decisions, 1)
        return {
            "decisions": float(self.decisions), "seconds": self.seconds,
            "judge_seconds": self.judge_seconds,
            "seconds_per_decision": self.seconds / n,
            "judge_seconds_per_decision": self.judge_seconds / n,
            "eval_decisions": float(self.eval_decisions), "eval_seconds": self.eval_seconds,
            "eval_seconds_per_decision": self.eval_seconds / max(self.eval_decisions, 1),
            "select_rate": self.picks / n, "none_rate": self.nones / n,
            "unparseable_rate": self.unparseable / n,
        }


def _unpad(histories: np.ndarray) -> list[list[int]]:
    """PAD-padded ``[B, W]`` histories → item lists, oldest first."""
    return [[int(x) for x in row[row >= 0]] for row in np.asarray(histories)]


class LLMOnlineAgent(LearnerAgent):
    """A :class:`LearnerAgent` whose action is the judge's pick among the actor's k
    candidates; the learner (A2C) learns from the environment's reward."""

    def __init__(self, name: str, learner: Learner, judge: BaseJudge, online: OnlineConfig,
                 *, seed: int, config: LLMOnlineConfig | None = None) -> None:
        super().__init__(name, learner, online, seed=seed)
        self.judge = judge
        self.settings = config or LLMOnlineConfig()
        if self.settings.k > learner.config.num_items:
            raise ValueError(f"k={self.settings.k} exceeds the catalogue of "
                             f"{learner.config.num_items} items")
        self.timing = DecisionTiming()

    def _decide(self, policy: MixedPolicy, histories: np.ndarray, user_ids: np.ndarray,
                rng: np.random.Generator, *, sample: bool, train: bool
                ) -> tuple[np.ndarray, np.ndarray]:
        """Actor proposes k candidates per row, the judge picks: ``(items, props)``.

        ``props`` is the actor's draw probability of the recommended candidate (the judge's
        own choice probability is unknown; the A2C learner does not use propensities)."""
        choice = propose_and_judge(policy, self.judge, _unpad(histories), k=self.settings.k,
                                   mode="sample" if sample else "topk", rng=rng,
                                   user_ids=user_ids.tolist())
        if train:
            for ans in choice.answers:
                if ans.kind == "item":
                    self.timing.picks += 1
                elif ans.kind == "none":
                    self.timing.nones += 1
                else:
                    self.timing.unparseable += 1
            self.timing.judge_seconds += choice.judge_seconds
        return choice.items, choice.propensities

    def act(
        self, histories: np.ndarray, user_ids: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Training-time actions: the judge's picks among sampled (or top-k) candidates."""
        started = time.perf_counter()
        policy = self._masked(self.learner.acting_policy())
        out = self._decide(policy, histories, user_ids, rng,
                           sample=self.settings.candidates == "sample", train=True)
        self.timing.seconds += time.perf_counter() - started
        self.timing.decisions += len(histories)
        return out

    def evaluator(self) -> EvalActor:
        """Acts as in training with a frozen copy of the actor; the judge stays in the loop."""
        policy = self._masked(self.learner.snapshot())
        sample = self.config.eval_explore and self.settings.candidates == "sample"

        def act(
            histories: np.ndarray, user_ids: np.ndarray, rng: np.random.Generator
        ) -> np.ndarray:
            started = time.perf_counter()
            items, _ = self._decide(policy, histories, user_ids, rng, sample=sample,
                                    train=False)
            self.timing.eval_seconds += time.perf_counter() - started
            self.timing.eval_decisions += len(histories)
            return items

        return act

    def report(self) -> dict[str, Any]:
        """Decision timing, answer rates and the judge's own statistics, for results."""
        return {**self.timing.as_dict(), "judge": self.judge.name,
                "judge_stats": self.judge.stats.as_dict(), "k": self.settings.k,
                "candidates": self.settings.candidates}


def judge_for_env(env_name: str, item_text: Any, options: str = "") -> BaseJudge:
    """The judge ``ialp pretrain`` would build for dataset ``env_name`` with CLI judge
    ``options`` (empty: the embedding judge at the dataset's threshold)."""
    from policy.judge.spec import JudgeSpec, JudgeSpecError

    try:
        return JudgeSpec.parse(options).build(env_name, item_text)
    except JudgeSpecError as exc:
        raise ValueError(f"invalid {METHOD_NAME} judge options {options!r}: {exc}") from exc


def make_llm_online_agent(ctx: MethodContext, judge: BaseJudge | None = None) -> LLMOnlineAgent:
    """Factory of ``llm-online``: A2C (online settings) + the dataset's judge."""
    cfg, hyper = LLMOnlineConfig.split_hyper(dict(ctx.hyper))
    if judge is None:
        if ctx.train_env.item_text is None:
            raise ValueError(f"environment {ctx.train_env.name!r} has no item texts for the "
                             "judge")
        # Environments are named "<dataset>-train"; the judge's scenario is the dataset.
        env_name = ctx.train_env.name.removesuffix("-train")
        judge = judge_for_env(env_name, ctx.train_env.item_text, cfg.judge)
    learner = make_learner("a2c", ctx.policy_config, seed=ctx.seed, init=ctx.initial_policy(),
                           **hyper)
    # With --mask-history the candidates, like every method's recommendations, leave out
    # already-shown items (LearnerAgent._masked).
    return LLMOnlineAgent(ctx.name, learner, judge, ctx.experiment.online, seed=ctx.seed + 1,
                          config=cfg)


register_method(METHOD_NAME, make_llm_online_agent)

__all__ = ["A2C_DEFAULTS", "METHOD_NAME", "DecisionTiming", "LLMOnlineAgent", "LLMOnlineConfig",
           "judge_for_env", "make_llm_online_agent"]
