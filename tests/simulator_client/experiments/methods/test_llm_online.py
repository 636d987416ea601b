"""LLMOnline (``llm-online``): the judge picks among the actor's candidates online, and the
actor learns from the environment's reward."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from policy.judge import SCENARIOS, JudgeRequest, PromptBuilder
from policy.judge.base import BaseJudge
from simulator_client.envs.base import LeaveRule, MatrixReward, RecBatchEnv
from simulator_client.experiments import (
    ExperimentConfig,
    MethodContext,
    available_methods,
    policy_config_for,
    register_method,
    run_experiment,
)
from simulator_client.experiments.methods.llm_online import (
    METHOD_NAME,
    LLMOnlineAgent,
    LLMOnlineConfig,
    judge_for_env,
    make_llm_online_agent,
)
from trainer.agents import OnlineConfig, StepBatch

N_ITEMS = 24
PAYING = slice(6, 12)
"""Items 6..11 pay 5, the rest 1. The judge prefers the lowest id below 12, so it picks
the non-paying 0..5 whenever one is offered: only the environment's reward says 6..11."""


class _NeverLeave(LeaveRule):
    def leaves(self, slots: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
               recommended: np.ndarray, steps: np.ndarray) -> np.ndarray:
        return np.zeros(len(slots), dtype=bool)


class LowestItemJudge(BaseJudge):
    """Picks the candidate with the lowest item id below 12, else None; replies in the
    paper's form, except for candidate lists headed by item 23 (garbage)."""

    name = "lowest"

    def __init__(self) -> None:
        super().__init__(PromptBuilder(item_text=[f"item {i}" for i in range(N_ITEMS)],
                                       scenario=SCENARIOS["coat"]))
        self.seen: list[JudgeRequest] = []

    def fingerprint(self) -> str:
        return "lowest-v1"

    def _respond(self, requests: Sequence[JudgeRequest]) -> list[str]:
        out = []
        for r in requests:
            self.seen.append(r)
            if r.candidates[0] == N_ITEMS - 1:
                out.append("Hard to say.")
                continue
            low = min(range(len(r.candidates)), key=lambda i: r.candidates[i])
            label = "abcdefghijk"[low] if r.candidates[low] < 12 else "None"
            out.append(f"By analysing the user’s preference, the user will select {label}")
        return out


def _env(name: str = "toy-train") -> RecBatchEnv:
    matrix = np.ones((8, N_ITEMS), dtype=np.float32)
    matrix[:, PAYING] = 5.0
    return RecBatchEnv(
        name=name, num_items=N_ITEMS, users=np.arange(8), reward_model=MatrixReward(matrix),
        leave_rule=_NeverLeave(), max_steps=6, history_window=6,
        initial_history=lambda u: [12 + u],
        item_text=[f"item {i}" for i in range(N_ITEMS)],
    )


CONFIG = ExperimentConfig(
    steps=96, eval_every=48, eval_episodes=8, num_envs=4, seed=5, hidden=8, blocks=1,
    max_len=None, online=OnlineConfig(batch_size=16, warmup=16),
    hyper={METHOD_NAME: {"k": 4, "lr": 3e-3}},
)


def _ctx(hyper: dict) -> MethodContext:
    env = _env()
    return MethodContext(name=METHOD_NAME, train_env=env,
                         policy_config=policy_config_for(env, CONFIG), experiment=CONFIG,
                         seed=0, hyper=hyper)


def test_actions_are_the_judges_picks_among_the_actors_candidates() -> None:
    judge = LowestItemJudge()
    agent = make_llm_online_agent(_ctx({"k": 5}), judge=judge)
    rng = np.random.default_rng(0)
    hist = np.array([[-1, -1, 12, 13], [-1, -1, -1, 14], [-1, 20, 21, 22]], dtype=np.int64)
    items, props = agent.act(hist, np.array([0, 1, 2]), rng)
    assert len(judge.seen) == 3
    for row, req in enumerate(judge.seen):
        assert req.history == tuple(int(x) for x in hist[row][hist[row] >= 0])
        assert len(set(req.candidates)) == 5
        assert int(items[row]) in req.candidates
        low = min(req.candidates)
        if req.candidates[0] != N_ITEMS - 1 and low < 12:
            assert int(items[row]) == low  # the judge's pick is what is recommended
    assert np.all((props > 0) & (props <= 1))
    t = agent.report()
    assert t["decisions"] == 3 and t["judge_stats"]["requests"] == 3
    assert t["select_rate"] + t["none_rate"] + t["unparseable_rate"] == pytest.approx(1.0)
    assert t["seconds"] >= t["judge_seconds"] > 0


def test_learns_from_environment_reward_not_the_judge() -> None:
    """The judge likes the lowest ids; only 6..11 pay. Learning from the environment (not
    from the judge's r^p, which would favour 0..5) raises the actor's mass on 6..11 and
    lowers it on the judge's favourites 0..5."""
    torch.manual_seed(0)
    agent = make_llm_online_agent(_ctx({"k": 4, "lr": 1e-2}), judge=LowestItemJudge())
    env = _env()
    rng = np.random.default_rng(1)
    probe = np.array([[-1, -1, -1, -1, -1, 12 + u] for u in range(8)], dtype=np.int64)
    users = np.arange(8)

    def mass(cols: slice) -> float:
        return float(agent.learner.snapshot().probs(probe, users)[:, cols].sum(axis=1).mean())

    before, favourites = mass(PAYING), mass(slice(0, 6))
    obs = env.reset(users)
    for _ in range(60):
        actions, props = agent.act(obs.history, obs.user_ids, rng)
        nxt, rewards, term, trunc, _ = env.step(actions)
        agent.observe(StepBatch(histories=obs.history, user_ids=obs.user_ids, actions=actions,
                                rewards=rewards, next_histories=nxt.history, terminated=term,
                                truncated=trunc, propensities=props, slots=np.arange(8)))
        done = np.flatnonzero(term | trunc)
        if len(done):
            env.reset_slots(done, users[done])
        obs = env.observe()
    after = mass(PAYING)
    assert agent.updates > 0
    assert after > before + 0.2, (before, after)
    assert mass(slice(0, 6)) < favourites, (favourites, mass(slice(0, 6)))


def test_runs_through_run_experiment_and_repeats_with_the_seed(tmp_path: Path) -> None:
    register_method("llm-online-rule", lambda ctx: make_llm_online_agent(
        ctx, judge=LowestItemJudge()))
    assert METHOD_NAME in available_methods()
    cfg = ExperimentConfig(**{**CONFIG.__dict__,
                              "hyper": {"llm-online-rule": {"k": 4, "lr": 3e-3}}})
    first = run_experiment("toy", _env(), _env("toy-test"), ["llm-online-rule", "a2c"], cfg,
                           out_dir=tmp_path, progress=False)
    again = run_experiment("toy", _env(), _env("toy-test"), ["llm-online-rule"], cfg,
                           progress=False)
    curve = [(p["step"], p["return"], p["length"]) for p in
             first["methods"]["llm-online-rule"]["curve"]]
    assert curve == [(p["step"], p["return"], p["length"]) for p in
                     again["methods"]["llm-online-rule"]["curve"]]
    assert [c[0] for c in curve] == [0.0, 48.0, 96.0]
    saved = json.loads((tmp_path / "results.json").read_text())
    res = saved["methods"]["llm-online-rule"]
    assert res["train"]["updates"] > 0
    assert res["train"]["seconds_per_step"] > 0
    assert saved["methods"]["a2c"]["train"]["seconds_per_step"] > 0
    rep = res["report"]
    assert rep["decisions"] == res["train"]["steps"] and rep["judge"] == "lowest"
    # Evaluations also went through the judge: three evaluations of 8 six-step episodes.
    assert rep["eval_decisions"] == 3 * 8 * 6
    assert saved["methods"]["a2c"]["report"] == {}


def test_settings_and_judge_options_are_validated() -> None:
    cfg, hyper = LLMOnlineConfig.split_hyper({"k": 3, "lr": 0.01, "entropy_coef": 0.05})
    assert cfg.k == 3 and hyper == {"lr": 0.01, "advantage": "expected",
                                    "normalize_advantage": True, "entropy_coef": 0.05}
    with pytest.raises(ValueError, match="candidates"):
        LLMOnlineConfig(candidates="greedy")
    with pytest.raises(ValueError, match="judge options"):
        judge_for_env("coat", ["a"] * 4, "--judge nosuch")
    with pytest.raises(ValueError, match="judge options"):
        judge_for_env("coat", ["a"] * 4, "--judge hf")  # needs --model-path
    with pytest.raises(ValueError, match="k=30 exceeds"):
        make_llm_online_agent(_ctx({"k": 30}), judge=LowestItemJudge())
    assert isinstance(make_llm_online_agent(_ctx({}), judge=LowestItemJudge()), LLMOnlineAgent)
