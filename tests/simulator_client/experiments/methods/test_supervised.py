"""Supervised peers (``sasrec``, ``popular``): trained on the training users' logs only."""

from __future__ import annotations

import numpy as np
import pytest

from policy.config import PolicyConfig
from simulator_client.envs.base import LeaveRule, MatrixReward, RecBatchEnv
from simulator_client.experiments import ExperimentConfig, available_methods, run_experiment
from simulator_client.experiments.methods.supervised import (
    PopularAgent,
    SASRecConfig,
    next_item_examples,
    train_sasrec,
)
from trainer.agents import OnlineConfig

N_ITEMS = 20


class _NeverLeave(LeaveRule):
    def leaves(self, slots, actions, rewards, recommended, steps):  # type: ignore[no-untyped-def]
        return np.zeros(len(slots), dtype=bool)


def _chain(u: int) -> list[int]:
    """User u's log: a run of consecutive items (every item is followed by the next)."""
    start = u % (N_ITEMS - 6)
    return list(range(start, start + 6))


def _env(name: str = "toy") -> RecBatchEnv:
    return RecBatchEnv(
        name=name, num_items=N_ITEMS, users=np.arange(40),
        reward_model=MatrixReward(np.ones((40, N_ITEMS))), leave_rule=_NeverLeave(),
        max_steps=4, history_window=6, initial_history=_chain,
    )


def test_next_item_examples_are_every_prefix_and_its_successor() -> None:
    h, u, y = next_item_examples([[4, 5, 6]], [7], max_len=2)
    assert y.tolist() == [5, 6] and u.tolist() == [7, 7]
    assert h.tolist() == [[-1, 4], [4, 5]]


def test_sasrec_learns_the_successor_from_the_logs() -> None:
    logs = [_chain(u) for u in range(40)]
    cfg = PolicyConfig(num_items=N_ITEMS, max_len=6, hidden=16, heads=2, blocks=1,
                       num_users=40)
    policy, report = train_sasrec(logs, list(range(40)), cfg, seed=0,
                                  config=SASRecConfig(epochs=30, patience=30, lr=5e-3,
                                                      holdout=0.1))
    assert report["best_epoch"] >= 1 and report["examples"] > 0
    hist = np.array([[-1, -1, -1, -1, 3, 4], [-1, -1, -1, 8, 9, 10]])
    items, _ = policy.act_arrays(hist, np.array([0, 1]), explore=False,
                                 rng=np.random.default_rng(0))
    assert items.tolist() == [5, 11]
    with pytest.raises(ValueError, match="unknown sasrec"):
        SASRecConfig.from_hyper({"epoch": 3})


def test_popular_skips_history_items() -> None:
    agent = PopularAgent("popular", np.array([1, 9, 5, 7]))
    items, _ = agent.act(np.array([[-1, 1], [3, 1]]), np.zeros(2, dtype=np.int64),
                         np.random.default_rng(0))
    assert items.tolist() == [3, 2]


def test_peers_run_in_the_harness_without_simulator_item_vectors() -> None:
    assert {"sasrec", "popular"} <= set(available_methods())
    train = _env()

    class Sealed:
        def __getattr__(self, name: str) -> object:
            raise AssertionError("a peer read env.item_vectors")

        def __array__(self, *a: object, **k: object) -> np.ndarray:
            raise AssertionError("a peer read env.item_vectors")

    train.item_vectors = Sealed()  # type: ignore[assignment]
    config = ExperimentConfig(steps=16, eval_every=16, eval_episodes=4, num_envs=4, seed=0,
                              hidden=8, blocks=1, max_len=6,
                              online=OnlineConfig(mask_history=True),
                              hyper={"sasrec": {"epochs": 2}})
    res = run_experiment("toy", train, _env("toy-test"), ["sasrec", "popular"], config,
                         progress=False)
    for name in ("sasrec", "popular"):
        curve = res["methods"][name]["curve"]
        assert curve[0]["return"] == curve[-1]["return"]  # nothing learned online
    assert res["methods"]["sasrec"]["report"]["examples"] > 0
