"""The Coat environments: leave rule, reward sources, gym API, baselines, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from policy.types import PAD
from simulator_client.baselines import make_baseline
from simulator_client.datasets.coat import load_coat
from simulator_client.envs.base import RecBatchEnv, RecEnv
from simulator_client.envs.coat import make_coat_env
from simulator_client.envs.leave import DistanceLeaveRule, euclidean_item_distances
from simulator_client.evaluation import evaluate, run_episodes
from simulator_client.user_models.deepfm import train_coat_user_model


@pytest.fixture(scope="module")
def coat_test() -> RecBatchEnv:
    return make_coat_env("test", progress=False)


@pytest.fixture(scope="module")
def coat_train() -> RecBatchEnv:
    return make_coat_env("train", progress=False)


@pytest.fixture(scope="module")
def distances() -> np.ndarray:
    return euclidean_item_distances(load_coat().pseudo_gt)


def _far_items(dist: np.ndarray, n: int, threshold: float = 6.0) -> list[int]:
    """Greedily pick n items pairwise at least `threshold` apart."""
    chosen: list[int] = []
    for item in range(dist.shape[0]):
        if all(dist[item, c] >= threshold for c in chosen):
            chosen.append(item)
        if len(chosen) == n:
            return chosen
    raise AssertionError("not enough mutually distant items")


def test_distances_are_euclidean_between_item_columns(distances: np.ndarray) -> None:
    gt = load_coat().pseudo_gt.astype(np.float64)
    for a, b in [(0, 1), (5, 17), (123, 299)]:
        assert distances[a, b] == pytest.approx(np.linalg.norm(gt[:, a] - gt[:, b]), rel=1e-5)
    assert np.allclose(np.diag(distances), 0.0)


def test_first_step_never_leaves(coat_test: RecBatchEnv) -> None:
    coat_test.reset(np.arange(20))
    _, _, term, trunc, _ = coat_test.step(np.full(20, 7))
    assert not term.any() and not trunc.any()
    assert coat_test.active.all()


def test_repeated_item_makes_user_leave(coat_test: RecBatchEnv) -> None:
    coat_test.reset(np.asarray([3]))
    coat_test.step(np.asarray([42]))
    _, r, term, _, _ = coat_test.step(np.asarray([42]))
    assert term[0], "distance 0 is within the threshold"
    assert r[0] > 0, "the leaving step is still rewarded"
    assert not coat_test.active[0]


def test_similar_item_leaves_and_window_is_seven(
    coat_test: RecBatchEnv, distances: np.ndarray
) -> None:
    far = _far_items(distances, 12)
    # A near neighbour (distance < 6) of far[0] that is distant from every other far item.
    near = next(
        j
        for j in range(distances.shape[0])
        if j != far[0]
        and distances[far[0], j] < 6.0
        and all(distances[j, f] >= 6.0 for f in far[1:])
    )
    # Within the window: far[0] is 1 step back → leave.
    coat_test.reset(np.asarray([0]))
    coat_test.step(np.asarray([far[0]]))
    _, _, term, _, _ = coat_test.step(np.asarray([near]))
    assert term[0]
    # far[0] exactly 7 steps back (6 distant items in between) → still inside the window.
    coat_test.reset(np.asarray([0]))
    for item in far[:7]:
        _, _, term, _, _ = coat_test.step(np.asarray([item]))
        assert not term[0]
    _, _, term, _, _ = coat_test.step(np.asarray([near]))
    assert term[0]
    # far[0] 8 steps back (7 distant items in between) → outside the window, user stays.
    coat_test.reset(np.asarray([0]))
    for item in far[:8]:
        coat_test.step(np.asarray([item]))
    _, _, term, _, _ = coat_test.step(np.asarray([near]))
    assert not term[0]


def test_leave_rule_is_pure_and_vectorised(distances: np.ndarray) -> None:
    rule = DistanceLeaveRule(distances, threshold=6.0, window=7)
    rec = np.full((3, 30), PAD)
    rec[0, :2] = [10, 11]
    rec[1, :1] = [5]
    steps = np.asarray([2, 1, 0])
    actions = np.asarray([10, 6, 10])
    first = rule.leaves(np.arange(3), actions, np.zeros(3), rec, steps)
    again = rule.leaves(np.arange(3), actions, np.zeros(3), rec, steps)
    assert first.tolist() == again.tolist()
    assert first[0]  # repeat of item 10
    assert first[1] == bool(distances[6, 5] < 6.0)
    assert not first[2]  # first step of the episode


def test_step_cap_truncates_at_thirty(coat_test: RecBatchEnv, distances: np.ndarray) -> None:
    env = RecEnv(coat_test)
    env.reset(seed=0, options={"user_id": 1})
    oracle = make_baseline("oracle", coat_test)
    rng = np.random.default_rng(0)
    steps = 0
    truncated = terminated = False
    while not (terminated or truncated):
        action = int(oracle.act(coat_test.observe(), rng)[0])
        _, _, terminated, truncated, info = env.step(action)
        steps += 1
    assert truncated and not terminated
    assert steps == 30 == info["step"]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_test_env_reward_is_the_dense_rating(coat_test: RecBatchEnv) -> None:
    gt = load_coat().pseudo_gt
    users = np.asarray([0, 1, 2, 289])
    items = np.asarray([0, 150, 299, 42])
    coat_test.reset(users)
    _, r, _, _, _ = coat_test.step(items)
    assert r.tolist() == gt[users, items].astype(np.float32).tolist()
    assert set(np.unique(r)).issubset({1.0, 2.0, 3.0, 4.0, 5.0})


def test_train_env_reward_is_the_user_model(coat_train: RecBatchEnv) -> None:
    model = train_coat_user_model(load_coat(), progress=False)
    assert model.from_cache, "the module fixture trained it; the second call must hit the cache"
    expected = model.reward_matrix()
    assert expected.min() >= 0.0
    users = np.arange(0, 290, 29)
    items = np.arange(10) * 30
    coat_train.reset(users)
    _, r, _, _, _ = coat_train.step(items)
    assert np.allclose(r, expected[users, items])
    gt = load_coat().pseudo_gt[users, items].astype(np.float32)
    assert not np.allclose(r, gt), "training reward must not be the held-out truth"


def test_observation_starts_from_the_users_rated_items(coat_test: RecBatchEnv) -> None:
    data = load_coat()
    env = RecEnv(coat_test)
    obs, info = env.reset(seed=5)
    user = info["user_id"]
    assert obs.user_id == user
    assert sorted(obs.history) == np.flatnonzero(data.train[user]).tolist()
    ratings = [int(data.train[user, i]) for i in obs.history]
    assert ratings == sorted(ratings), "least liked first, most liked most recent"
    start = obs.history
    obs, *_ = env.step(4)
    obs, *_ = env.step(200)
    assert obs.history == (*start, 4, 200)


def test_empty_initial_history_option() -> None:
    from simulator_client.envs.coat import CoatEnvConfig

    env = RecEnv(make_coat_env("test", config=CoatEnvConfig(initial_history="none")))
    obs, _ = env.reset(seed=0)
    assert obs.history == ()
    obs, *_ = env.step(9)
    assert obs.history == (9,)
    with pytest.raises(ValueError, match="initial_history"):
        make_coat_env("test", config=CoatEnvConfig(initial_history="all"))


def test_step_rejects_bad_actions(coat_test: RecBatchEnv) -> None:
    coat_test.reset(np.asarray([0, 1]))
    with pytest.raises(ValueError, match="outside"):
        coat_test.step(np.asarray([0, 300]))
    with pytest.raises(ValueError, match="expected 2 actions"):
        coat_test.step(np.asarray([0]))


def test_same_seed_same_episodes(coat_test: RecBatchEnv) -> None:
    policy = make_baseline("random", coat_test)
    a = run_episodes(coat_test, policy, episodes=64, seed=11)
    b = run_episodes(coat_test, policy, episodes=64, seed=11)
    c = run_episodes(coat_test, policy, episodes=64, seed=12)
    assert [e.items.tolist() for e in a] == [e.items.tolist() for e in b]
    assert [e.items.tolist() for e in a] != [e.items.tolist() for e in c]


def test_oracle_beats_random_and_popular(coat_test: RecBatchEnv) -> None:
    scores = {
        name: evaluate(coat_test, make_baseline(name, coat_test), episodes=200, seed=0)
        for name in ("random", "popular", "oracle")
    }
    assert scores["oracle"]["length"] == pytest.approx(30.0)
    for weak in ("random", "popular"):
        assert scores["oracle"]["return"] > 2 * scores[weak]["return"]
        assert scores["oracle"]["length"] > scores[weak]["length"]


def test_users_are_balanced_across_episodes(coat_test: RecBatchEnv) -> None:
    users = coat_test.sample_users(290 * 2, np.random.default_rng(0))
    counts = np.bincount(users, minlength=290)
    assert counts.min() == counts.max() == 2


def test_train_oracle_acts_in_the_test_env_on_the_training_model(
        coat_test: RecBatchEnv, coat_train: RecBatchEnv) -> None:
    """The ceiling of a policy learned from the simulator: it ranks by the training
    model's reward, never leaves, and is scored by the dense test ratings, below the
    test oracle (the model is fitted to self-selected ratings only)."""
    from simulator_client.baselines import baseline_for

    scores = {
        name: evaluate(coat_test, baseline_for(name, coat_test, coat_train), episodes=290,
                       seed=0)
        for name in ("oracle", "train-oracle")
    }
    assert scores["train-oracle"]["length"] == pytest.approx(30.0)
    assert scores["train-oracle"]["return"] < scores["oracle"]["return"] - 5
    with pytest.raises(ValueError, match="training environment"):
        baseline_for("train-oracle", coat_test)
