"""The Coat environments (EasyRL4Rec setup).

* test: reward = the dense pseudo ground-truth rating (1–5) of the user for the item.
* train: reward = the DeepFM ensemble's predicted rating, shifted to be non-negative.

Both share the leave rule: quit when the new item lies within Euclidean distance
``leave_threshold`` of any of the last ``leave_window`` recommended items (distances between
item columns of the dense matrix), and at most ``max_steps`` recommendations.

The initial state is the user: the observation carries the user id and, as the history
the episode starts from, the items the user chose to rate in ``train.ascii`` ordered from
least to most liked (so the most liked is the most recent). A service only knows a user
through such interactions, and the REST contract refuses empty histories; set
``initial_history="none"`` for episodes that start from the user id alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator_client.datasets.coat import CoatData, load_coat
from simulator_client.envs.base import MatrixReward, RecBatchEnv
from simulator_client.envs.leave import DistanceLeaveRule, euclidean_item_distances
from simulator_client.user_models.deepfm import DeepFMConfig, train_coat_user_model


@dataclass(frozen=True)
class CoatEnvConfig:
    """Rules of the Coat environment."""

    leave_threshold: float = 6.0
    """A new item closer than this to a recent one makes the user quit."""
    leave_window: int = 7
    """How many of the most recent recommendations the leave rule compares against."""
    max_steps: int = 30
    """Episode length cap (truncation)."""
    history_window: int = 50
    """How many recent items an observation carries."""
    initial_history: str = "rated"
    """``"rated"``: start from the user's self-chosen rated items; ``"none"``: empty."""


def _one_hot_items(data: CoatData) -> np.ndarray:
    sizes = [len(v) for v in data.item_vocab]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    vec = np.zeros((data.num_items, int(sum(sizes))), dtype=np.float32)
    for f, off in enumerate(offsets):
        vec[np.arange(data.num_items), off + data.item_features[:, f]] = 1.0
    return vec


def _rated_histories(data: CoatData) -> list[list[int]]:
    """Each user's rated training items, least liked first (ties by item id)."""
    out = []
    for user in range(data.num_users):
        items = np.flatnonzero(data.train[user])
        order = np.lexsort((items, data.train[user, items]))
        out.append(items[order].tolist())
    return out


def make_coat_env(
    split: str = "test",
    *,
    data: CoatData | None = None,
    config: CoatEnvConfig | None = None,
    user_model: DeepFMConfig | None = None,
    progress: bool = True,
) -> RecBatchEnv:
    """Build the Coat ``"train"`` (DeepFM reward) or ``"test"`` (dense matrix) environment.

    Every user appears in both: the two environments differ in where the reward comes from,
    as in EasyRL4Rec, so a policy trained on the model is scored on the held-out truth.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    config = config or CoatEnvConfig()
    if config.initial_history not in ("rated", "none"):
        raise ValueError(
            f"initial_history must be 'rated' or 'none', not {config.initial_history!r}"
        )
    data = data or load_coat()
    initial = _rated_histories(data) if config.initial_history == "rated" else None
    if split == "test":
        reward = MatrixReward(data.pseudo_gt.astype(np.float32))
    else:
        model = train_coat_user_model(data, user_model, progress=progress)
        reward = MatrixReward(model.reward_matrix())
    leave = DistanceLeaveRule(
        euclidean_item_distances(data.pseudo_gt),
        threshold=config.leave_threshold,
        window=config.leave_window,
    )
    return RecBatchEnv(
        name=f"coat-{split}",
        num_items=data.num_items,
        users=np.arange(data.num_users),
        reward_model=reward,
        leave_rule=leave,
        max_steps=config.max_steps,
        history_window=config.history_window,
        initial_history=(lambda u: initial[u]) if initial is not None else None,
        item_vectors=_one_hot_items(data),
        item_popularity=(data.train > 0).sum(axis=0).astype(np.int64),
        item_text=data.item_text,
    )
