"""Offline next-item accuracy (``next_item_ranking``): leave-last-out on the test users'
logs, and the agents' ``ranking_scores`` that feed it from the experiment runner."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ialp.commands.experiment import TABLE_COLUMNS, table_columns
from policy.checkpoint import init_policy
from policy.config import PolicyConfig
from simulator_client.envs.base import LeaveRule, MatrixReward, RecBatchEnv
from simulator_client.evaluation import next_item_ranking
from simulator_client.experiments import ExperimentConfig, run_experiment, table_rows
from simulator_client.experiments.methods.gee import GenEEAgent
from simulator_client.experiments.methods.ialp import FrozenAgent
from simulator_client.experiments.methods.supervised import PopularAgent
from trainer.agents import LearnerAgent, OnlineConfig, RandomAgent
from trainer.gee import EmbeddingProposer, GEEConfig, GenEEPool
from trainer.learners import make_learner

N_ITEMS = 12
LOGS = {
    0: [0, 1, 2, 3],  # history 0 1 2, target 3
    1: [4, 5],  # history 4, target 5
    2: [6, 7, 6],  # target 6 is already in the history: skipped and counted
    3: [8],  # a single item: no case
    4: [9, 10, 11, 0],  # history 9 10 11, target 0
}
TARGETS = {0: 3, 1: 5, 4: 0}


class _NeverLeave(LeaveRule):
    def leaves(self, slots: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
               recommended: np.ndarray, steps: np.ndarray) -> np.ndarray:
        return np.zeros(len(slots), dtype=bool)


def _env(name: str = "toy-test", window: int = 2) -> RecBatchEnv:
    return RecBatchEnv(name=name, num_items=N_ITEMS, users=np.arange(len(LOGS)),
                       reward_model=MatrixReward(np.ones((len(LOGS), N_ITEMS))),
                       leave_rule=_NeverLeave(), max_steps=3, history_window=window,
                       initial_history=lambda u: LOGS[u])


def _target_at(rank_of: dict[int, int], history_first: bool = False):  # type: ignore[no-untyped-def]
    """A scorer that puts each user's target at ``rank_of[user]`` among the non-history
    items (history items optionally scored above everything)."""
    def scorer(histories: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
        out = np.zeros((len(user_ids), N_ITEMS))
        for row, user in enumerate(user_ids.tolist()):
            target, hist = TARGETS[user], set(LOGS[user][:-1])
            others = [i for i in range(N_ITEMS) if i != target and i not in hist]
            out[row, others] = np.linspace(0.9, 0.1, len(others))  # a strict order
            # Just below the (rank − 1)-th other item: rank − 1 items score higher.
            rank = rank_of[user]
            out[row, target] = out[row, others[rank - 2]] - 0.01 if rank > 1 else 1.0
            if history_first:
                out[row, list(hist)] = 5.0
        return out

    return scorer


def test_a_perfect_scorer_hits_every_case_and_repeats_are_skipped() -> None:
    seen: list[np.ndarray] = []

    def perfect(histories: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
        seen.append(histories.copy())
        out = np.zeros((len(user_ids), N_ITEMS))
        out[np.arange(len(user_ids)), [TARGETS[u] for u in user_ids.tolist()]] = 1.0
        return out

    res = next_item_ranking(_env(), perfect, k=10, seed=0)
    assert res == {"hr@10": 1.0, "ndcg@10": 1.0, "cases": 3.0, "skipped_repeat": 1.0}
    # The scorer gets the last history_window items of each history, right-aligned.
    assert np.concatenate(seen).tolist() == [[1, 2], [-1, 4], [10, 11]]


def test_the_third_item_scores_one_over_log2_of_four() -> None:
    third = _target_at({0: 3, 1: 3, 4: 3})
    res = next_item_ranking(_env(), third, k=10)
    assert res["hr@10"] == 1.0 and res["ndcg@10"] == pytest.approx(1.0 / math.log2(4))
    assert next_item_ranking(_env(), third, k=2)["hr@2"] == 0.0
    # One case at rank 1, two past the cut-off: a third of the cases, NDCG 1/3.
    mixed = next_item_ranking(_env(), _target_at({0: 1, 1: 11, 4: 9}), k=5)
    assert mixed["hr@5"] == pytest.approx(1 / 3) and mixed["ndcg@5"] == pytest.approx(1 / 3)


def test_history_items_are_left_out_of_the_ranking() -> None:
    res = next_item_ranking(_env(), _target_at({0: 1, 1: 2, 4: 1}, history_first=True), k=1)
    assert res["hr@1"] == pytest.approx(2 / 3)  # ranks 1, 2, 1 despite the history above


def test_ties_are_broken_at_random_with_the_seed() -> None:
    def constant(histories: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
        return np.ones((len(user_ids), N_ITEMS))

    # Users 0 and 4 leave 9 items to rank, user 1 leaves 11: k = 11 always hits.
    assert next_item_ranking(_env(), constant, k=11)["hr@11"] == 1.0
    runs = [next_item_ranking(_env(), constant, k=4, seed=s) for s in range(40)]
    assert runs[0] == next_item_ranking(_env(), constant, k=4, seed=0)
    chance = np.mean([r["hr@4"] for r in runs])
    assert 0.25 < chance < 0.6  # about 0.41, not the item-id order's 2/3


def test_max_cases_subsamples_and_bad_scores_are_refused() -> None:
    res = next_item_ranking(_env(), _target_at({0: 1, 1: 1, 4: 1}), max_cases=2, seed=1)
    assert res["cases"] == 2.0 and res["hr@10"] == 1.0 and res["skipped_repeat"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        next_item_ranking(_env(), lambda h, u: np.zeros((len(u), N_ITEMS - 1)))
    with pytest.raises(ValueError, match="NaN"):
        next_item_ranking(_env(), lambda h, u: np.full((len(u), N_ITEMS), np.nan))
    empty = RecBatchEnv(name="e", num_items=N_ITEMS, users=np.arange(2),
                        reward_model=MatrixReward(np.ones((2, N_ITEMS))),
                        leave_rule=_NeverLeave(), max_steps=3)
    out = next_item_ranking(empty, _target_at({}))
    assert out["cases"] == 0.0 and math.isnan(out["hr@10"])


def test_agents_score_with_the_model_they_act_with() -> None:
    hist = np.array([[-1, 1], [3, 4]])
    users = np.array([0, 1])
    popular = PopularAgent("popular", np.array([1, 9, 5, 7, 5, 0]))
    scores = popular.ranking_scores(hist, users)
    assert scores.shape == (2, 6)
    assert np.argsort(-scores[0], kind="stable").tolist() == popular.order.tolist()
    assert scores[0, 2] > scores[0, 4]  # equal counts: ordered by id, as it acts
    rnd = RandomAgent(6, seed=3)
    first = rnd.ranking_scores(hist, users)
    assert first.shape == (2, 6)
    assert np.array_equal(first, RandomAgent(6, seed=3).ranking_scores(hist, users))
    vectors = np.eye(8, dtype=np.float32)
    gee = GenEEAgent("gee", GenEEPool(GEEConfig(seed=0, pool_size=3), 8,
                                      EmbeddingProposer(vectors, seed=0), seed=0), 10)
    g = gee.ranking_scores(hist, users)
    assert g.shape == (2, 8) and set(np.flatnonzero(g[0]).tolist()) == set(gee.pool.pool)
    cfg = PolicyConfig(num_items=6, max_len=2, hidden=8, heads=2, blocks=1)
    frozen = FrozenAgent("ialp", init_policy(cfg, seed=0), OnlineConfig(), greedy=True)
    p = frozen.ranking_scores(hist, users)
    assert np.allclose(p, frozen.policy.probs(hist, users))
    greedy = frozen.evaluator()(hist, users, np.random.default_rng(0))
    assert greedy.tolist() == np.argmax(p, axis=1).tolist()
    for method in ("a2c", "ap"):
        init = init_policy(cfg, seed=1) if method == "ap" else None
        agent = LearnerAgent(method, make_learner(method, cfg, seed=0, init=init),
                             OnlineConfig(), seed=0)
        assert np.allclose(agent.ranking_scores(hist, users),
                           agent.learner.snapshot().probs(hist, users))


def test_the_runner_records_the_ranking_of_the_final_model() -> None:
    train, test = _env("toy-train", window=4), _env("toy-test", window=4)
    cfg = ExperimentConfig(steps=8, eval_every=8, eval_episodes=2, num_envs=2, seed=0,
                           hidden=8, blocks=1, max_len=4,
                           online=OnlineConfig(batch_size=4, warmup=4))
    res = run_experiment("toy", train, test, ["random", "popular", "a2c"], cfg,
                         progress=False)["methods"]
    for name in ("random", "popular", "a2c"):
        ranking = res[name]["ranking"]
        assert ranking["cases"] == 3.0 and ranking["skipped_repeat"] == 1.0
        assert 0.0 <= ranking["ndcg@10"] <= ranking["hr@10"] <= 1.0
    rows = table_rows({"methods": res})
    assert rows[2]["hr@10"] == res["a2c"]["ranking"]["hr@10"]
    columns = table_columns(rows)
    assert columns[columns.index("r_avg") + 1:][:2] == ["hr@10", "ndcg@10"]
    assert table_columns([{"method": "vw-bandit"}]) == TABLE_COLUMNS  # none ranked
    # steps = 0: ranked once, after the step-0 evaluation.
    zero = ExperimentConfig(**{**cfg.__dict__, "steps": 0})
    only = run_experiment("toy", train, test, ["popular"], zero, progress=False)["methods"]
    assert len(only["popular"]["curve"]) == 1
    assert only["popular"]["ranking"] == res["popular"]["ranking"]
