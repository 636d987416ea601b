"""The Vowpal Wabbit contextual-bandit method (``vw-bandit``) on tiny synthetic environments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from policy.item_features import ItemFeatures
from simulator_client.envs.base import LeaveRule, MatrixReward, RecBatchEnv
from simulator_client.experiments import ExperimentConfig, available_methods, run_experiment
from simulator_client.experiments.methods.vw_bandit import (
    METHOD_NAME,
    VWBanditAgent,
    VWBanditConfig,
    item_features,
    nearest_neighbours,
)
from trainer.agents import OnlineConfig, StepBatch

BEST = 7


class _NeverLeave(LeaveRule):
    def leaves(
        self,
        slots: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        recommended: np.ndarray,
        steps: np.ndarray,
    ) -> np.ndarray:
        return np.zeros(len(slots), dtype=bool)


def _env(num_items: int = 20, num_users: int = 6, dense: bool = False) -> RecBatchEnv:
    """Every user rates item BEST 5 and everything else 1 (plus a little per-user noise)."""
    rng = np.random.default_rng(0)
    matrix = 1.0 + 0.2 * rng.random((num_users, num_items))
    matrix[:, BEST] = 5.0
    if dense:
        vectors = rng.normal(size=(num_items, 24)).astype(np.float32)
    else:
        vectors = np.eye(num_items, 5, dtype=np.float32)[rng.integers(0, 5, num_items) % 5]
    return RecBatchEnv(
        name="tiny",
        num_items=num_items,
        users=np.arange(num_users),
        reward_model=MatrixReward(matrix),
        leave_rule=_NeverLeave(),
        max_steps=8,
        history_window=6,
        initial_history=lambda u: [u % num_items],
        item_vectors=vectors,
        item_popularity=np.arange(num_items)[::-1].copy(),
    )


def _operator_features(env: RecBatchEnv) -> ItemFeatures:
    """Toy operator features: the toy vectors, popularity decreasing with the item id."""
    assert env.item_vectors is not None
    return ItemFeatures(matrix=np.asarray(env.item_vectors, dtype=np.float32),
                        prior=-np.arange(env.num_items, dtype=np.float32))


class _Forbidden:
    """Stands in for simulator internals: any use fails the test."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the VW peer read {self.what}.{name}")

    def __array__(self, *args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError(f"the VW peer read {self.what}")

    def __getitem__(self, key: object) -> object:
        raise AssertionError(f"the VW peer read {self.what}[...]")

    def __len__(self) -> int:
        raise AssertionError(f"the VW peer read len({self.what})")


def _train(agent: VWBanditAgent, env: RecBatchEnv, steps: int, seed: int) -> list[np.ndarray]:
    """Minimal online loop (as the runner does); returns the actions taken."""
    rng = np.random.default_rng(seed)
    obs = env.reset(env.sample_users(4, rng))
    taken = []
    for _ in range(steps):
        actions, props = agent.act(obs.history, obs.user_ids, rng)
        nxt, rewards, term, trunc, info = env.step(actions)
        rows = np.flatnonzero(info["active"])
        agent.observe(
            StepBatch(
                histories=obs.history[rows], user_ids=obs.user_ids[rows],
                actions=actions[rows], rewards=rewards[rows],
                next_histories=nxt.history[rows], terminated=term[rows],
                truncated=trunc[rows], propensities=props[rows], slots=rows,
            )
        )
        taken.append(actions)
        done = np.flatnonzero(term | trunc)
        if len(done):
            env.reset_slots(done, env.sample_users(len(done), rng))
        obs = env.observe()
    return taken


@pytest.mark.parametrize("exploration", ["epsilon", "squarecb"])
def test_greedy_choice_converges_to_the_best_paying_item(exploration: str) -> None:
    env = _env()
    cfg = VWBanditConfig.from_hyper({"exploration": exploration, "epsilon": 0.3})
    agent = VWBanditAgent(env, cfg, seed=0)
    before = agent.evaluator()
    _train(agent, env, steps=150, seed=1)
    obs = env.reset(np.arange(6))
    chosen = agent.evaluator()(obs.history, obs.user_ids, np.random.default_rng(0))
    assert (chosen == BEST).all()
    assert agent.updates == 150 * 4
    # The evaluator taken before training is a frozen snapshot: still untrained.
    stale = before(obs.history, obs.user_ids, np.random.default_rng(0))
    assert not (stale == BEST).all()


def test_training_probabilities_are_the_explored_distribution() -> None:
    env = _env()
    agent = VWBanditAgent(env, VWBanditConfig(epsilon=0.2), seed=0)
    _train(agent, env, steps=100, seed=1)
    obs = env.reset(np.arange(6))
    actions, props = agent.act(obs.history, obs.user_ids, np.random.default_rng(5))
    greedy = props > 0.5
    # ε-greedy over 20 items: 1 − ε + ε/20 for the greedy item, ε/20 for the others.
    assert np.allclose(props[greedy], 0.8 + 0.2 / 20)
    assert np.allclose(props[~greedy], 0.2 / 20)
    assert greedy.any()
    # Greedy rows took the item the frozen greedy evaluator picks from the same state.
    best = agent.evaluator()(obs.history, obs.user_ids, np.random.default_rng(0))
    assert np.array_equal(actions[greedy], best[greedy])


def test_same_seed_same_actions_other_seed_differs() -> None:
    def run(seed: int) -> np.ndarray:
        env = _env(num_items=40, dense=True)
        agent = VWBanditAgent(env, VWBanditConfig(max_candidates=12, epsilon=0.5), seed=seed)
        return np.concatenate(_train(agent, env, steps=40, seed=seed))

    first, again, other = run(3), run(3), run(4)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_bounded_candidate_set() -> None:
    env = _env(num_items=60, dense=True)
    cfg = VWBanditConfig(max_candidates=20, popular_share=0.25, similar_share=0.25)
    agent = VWBanditAgent(env, cfg, seed=0, features=_operator_features(env))
    history = np.array([-1, -1, 3, 9, 11, 42])
    cand = agent.candidates(history, np.random.default_rng(0), mask=False)
    assert len(cand) == 20 and len(np.unique(cand)) == 20
    assert env.item_popularity is not None and env.item_vectors is not None
    popular = np.arange(5)  # the operator's prior: popularity falls with the id
    assert set(popular.tolist()) <= set(cand.tolist())
    feats = item_features(env.item_vectors, cfg.project_dims)
    assert feats is not None and feats.shape == (60, cfg.project_dims)
    assert set(nearest_neighbours(feats, 5)[42].tolist()) <= set(cand.tolist())
    masked = agent.candidates(history, np.random.default_rng(0), mask=True)
    assert not np.isin(masked, history).any()


def test_small_catalogue_offers_everything_and_mask_removes_history() -> None:
    env = _env()
    agent = VWBanditAgent(env, VWBanditConfig(), seed=0)
    history = np.array([-1, -1, -1, 2, 5, BEST])
    assert np.array_equal(agent.candidates(history, np.random.default_rng(0), mask=False),
                          np.arange(20))
    masked = agent.candidates(history, np.random.default_rng(0), mask=True)
    assert len(masked) == 17 and not np.isin([2, 5, BEST], masked).any()
    # Sparse one-hot vectors are used as they are.
    assert env.item_vectors is not None
    assert np.array_equal(np.asarray(item_features(env.item_vectors, 2)), env.item_vectors)


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown vw-bandit setting"):
        VWBanditConfig.from_hyper({"epsilom": 0.1})
    with pytest.raises(ValueError, match="exploration"):
        VWBanditConfig(exploration="softmax")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="namespaces"):
        VWBanditConfig(interactions=("ux",))
    cfg = VWBanditConfig.from_hyper({"exploration": "squarecb", "interactions": ["uf"]})
    assert "--squarecb" in cfg.vw_args(0) and "--interactions uf" in cfg.vw_args(0)


def test_runs_through_the_experiment_runner(tmp_path: Path) -> None:
    assert METHOD_NAME in available_methods()
    env = _env()
    config = ExperimentConfig(
        steps=120, eval_every=60, eval_episodes=6, num_envs=4, seed=0,
        online=OnlineConfig(mask_history=False),
        hyper={METHOD_NAME: {"epsilon": 0.3}},
    )
    results = run_experiment("tiny", env, _env(), [METHOD_NAME], config, out_dir=tmp_path,
                             progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    res = saved["methods"][METHOD_NAME]
    assert [p["step"] for p in res["curve"]] == [0.0, 60.0, 120.0]
    assert res["train"]["updates"] == 120.0
    # Greedy evaluation after training recommends the 5-star item every step.
    assert res["final"]["r_avg"] == pytest.approx(5.0)
    assert res["curve"][0]["r_avg"] < 2.0
    assert results["methods"][METHOD_NAME]["final"] == res["final"]


def test_vw_path_never_reads_simulator_internals(tmp_path: Path) -> None:
    """Through the experiment runner, the VW peer gets the operator's features (training
    logs). The training environment it is built from raises if anything touches the
    simulator's item vectors or popularity table. (The harness's own diversity and
    novelty metrics read the test environment's, which the peer never gets.)"""
    train, test = _env(num_items=60, dense=True), _env(num_items=60, dense=True)
    train.item_vectors = _Forbidden("env.item_vectors")  # type: ignore[assignment]
    train.item_popularity = _Forbidden("env.item_popularity")  # type: ignore[assignment]
    config = ExperimentConfig(
        steps=48, eval_every=48, eval_episodes=4, num_envs=4, seed=0,
        hyper={METHOD_NAME: {"max_candidates": 20}},
    )
    results = run_experiment("tiny", train, test, [METHOD_NAME], config, progress=False)
    assert results["methods"][METHOD_NAME]["train"]["updates"] == 48.0
    # Built directly, without features, it computes them from the training logs too.
    agent = VWBanditAgent(train, VWBanditConfig(max_candidates=20), seed=0)
    history = np.array([-1, -1, 3, 9, 11, 42])
    assert len(agent.candidates(history, np.random.default_rng(0), mask=True)) > 0


def test_operator_features_drive_the_candidates_and_action_lines() -> None:
    env = _env(num_items=60, dense=True)
    feats = _operator_features(env)
    prior = np.zeros(60, dtype=np.float32)
    prior[[50, 51, 52, 53, 54]] = 5.0  # these are the training logs' most popular items
    agent = VWBanditAgent(env, VWBanditConfig(max_candidates=20), seed=0,
                          features=ItemFeatures(matrix=feats.matrix, prior=prior))
    cand = agent.candidates(np.array([-1, -1, -1, -1, -1, 3]), np.random.default_rng(0),
                            mask=False)
    assert {50, 51, 52, 53, 54} <= set(cand.tolist())
    assert "|p pop:5" in agent._action_line(50) and "|p pop:0" in agent._action_line(3)
    with pytest.raises(ValueError, match="cover"):
        VWBanditAgent(env, seed=0, features=ItemFeatures(matrix=feats.matrix[:10],
                                                         prior=prior[:10]))
