"""Sequential user environments: LFM, Industry and datasets built with ``ialp env build``.

* Users: the dataset's users, split 80 / 20 by a seeded permutation into the training and
  test environments (disjoint pools).
* Initial state: the user's real history prefix — everything before their last
  ``continuation_items`` items (at least ``min_prefix`` items). The rest of the sequence is
  the user's true continuation, used by the ``nextitem`` reference policy.
* Reward: an attention user model (:mod:`simulator_client.user_models.sequential`) scores
  every catalogue item for the current history; the recommended item's rank among the
  items not yet in the history maps to a 1–5 scale (see :class:`RankReward`). Recommending
  an item already in the visible history gives ``repeat_reward`` (1, the floor).
* Leaving: a patience ("temper") rule in the style of HAC / KuaiSim
  (:class:`PatienceLeaveRule`): each user starts with ``initial_patience``; a reward below
  ``satisfied_reward`` drains it, and the user leaves when it runs out. At most
  ``max_steps`` recommendations per episode.
* Models: the training environment's model learns from the training users' sequences,
  the test environment's from the test users' sequences (a different model and seed), so
  a policy trained against one is never scored by it.

Built environments live under ``cache_dir()/envs/<name>/``: ``sequences.tsv`` and
``items.tsv`` in the generic format and ``manifest.json`` (counts, configuration, model
cache keys and their metrics). Trained models are in the shared user-model cache.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from policy.types import PAD
from simulator_client.datasets.errors import DatasetError
from simulator_client.datasets.paths import cache_dir
from simulator_client.datasets.sequences import (
    SequenceDataset,
    load_sequence_dataset,
    write_sequence_dataset,
)
from simulator_client.envs.base import LeaveRule, RecBatchEnv, RewardModel
from simulator_client.user_models.sequential import (
    SequentialModelConfig,
    SequentialUserModel,
    train_sequential_model,
    training_fingerprint,
)

MIN_REWARD = 1.0
"""Lowest reward: the catalogue's worst item for the user, or a repeat."""
MAX_REWARD = 5.0
"""Highest reward: the model's best item not yet in the user's history."""
BUILTIN_SEQUENTIAL = ("lfm", "industry")
"""Environments built from the shared data rather than user-supplied files."""
RESERVED_NAMES = ("coat",)
"""Names taken by environments of another kind."""
MANIFEST_VERSION = 1
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class SequentialEnvConfig:
    """Rules of a sequential environment."""

    max_steps: int = 20
    """Episode length cap (truncation)."""
    history_window: int = 50
    """How many recent items an observation carries."""
    continuation_items: int = 20
    """The last this-many items of a user's sequence are the continuation; everything
    before is the initial state (at least ``min_prefix`` items)."""
    min_prefix: int = 1
    """Shortest initial history (the paper starts LFM / Industry from an item)."""
    initial_patience: float = 3.0
    """Patience at the start of an episode (and its maximum)."""
    satisfied_reward: float = 3.0
    """Rewards at or above this cost no patience; a reward of 1 costs 1."""
    patience_recovery: float = 0.0
    """Patience regained by a reward of 5 (linearly from ``satisfied_reward``); 0 = none."""
    repeat_reward: float = MIN_REWARD
    """Reward for recommending an item already in the visible history."""
    test_fraction: float = 0.2
    """Share of users in the test environment."""
    split_seed: int = 0
    """Seed of the user split."""
    test_model_users: str = "test"
    """Data of the test environment's model: ``"test"`` (the test users' sequences) or
    ``"all"`` (every user's)."""


# -- reward and leave rule ----------------------------------------------------------------
def rank_to_reward(rank: np.ndarray, num_items: int) -> np.ndarray:
    """Map a 1-based rank among ``num_items`` to ``1 + 4 · (1 − ln rank / ln num_items)``.

    Rank 1 gives 5, the last rank gives 1. The logarithm spreads the scale over the head of
    the ranking, where preferences differ: rank 10 of 4,606 gives ≈ 3.91, rank 100 ≈ 2.82,
    and a uniformly random item ≈ 1 + 4 / ln I on average (≈ 1.47).
    """
    if num_items < 2:
        raise ValueError("a rank reward needs at least two items")
    r = 1.0 - np.log(np.asarray(rank, dtype=np.float64)) / math.log(num_items)
    return (MIN_REWARD + (MAX_REWARD - MIN_REWARD) * r).astype(np.float32)


class RankReward(RewardModel):
    """Reward from the user model's ranking of the catalogue for the current history.

    The recommended item is ranked among the items not in the history (rank 1 = the
    model's favourite); :func:`rank_to_reward` maps the rank to 1–5, and an item already in
    the history gets ``repeat_reward``. The user id is not used: the state is the history.
    """

    def __init__(self, model: SequentialUserModel, *, repeat_reward: float = MIN_REWARD) -> None:
        self.model = model
        self.num_items = model.num_items
        self.repeat_reward = float(repeat_reward)

    @staticmethod
    def _mask_history(scores: np.ndarray, history: np.ndarray) -> np.ndarray:
        """Scores with the history's items at -inf (they never outrank a candidate)."""
        valid = history != PAD
        scores[np.nonzero(valid)[0], history[valid]] = -np.inf
        return scores

    def reward(self, users: np.ndarray, history: np.ndarray, actions: np.ndarray) -> np.ndarray:
        history = np.asarray(history, dtype=np.int64)
        actions = np.asarray(actions, dtype=np.int64)
        scores = self.model.scores(history)
        own = scores[np.arange(len(actions)), actions]
        scores = self._mask_history(scores, history)
        rank = 1 + (scores > own[:, None]).sum(axis=1)
        out = rank_to_reward(rank, self.num_items)
        seen = (history == actions[:, None]).any(axis=1)
        out[seen] = self.repeat_reward
        return out

    def reward_all(self, users: np.ndarray, history: np.ndarray, num_items: int) -> np.ndarray:
        history = np.asarray(history, dtype=np.int64)
        scores = self._mask_history(self.model.scores(history), history)
        b = len(scores)
        order = np.argsort(-scores, axis=1, kind="stable")
        rank = np.empty_like(order)
        rank[np.arange(b)[:, None], order] = np.arange(1, num_items + 1)[None, :]
        out = rank_to_reward(rank, self.num_items)
        valid = history != PAD
        out[np.nonzero(valid)[0], history[valid]] = self.repeat_reward
        return out


class PatienceLeaveRule(LeaveRule):
    """Patience ("temper") leave rule in the style of HAC / KuaiSim.

    Each episode starts with ``initial`` patience. After a reward r the patience becomes
    ``min(initial, p − drop(r) + gain(r))`` with ``drop = clip((satisfied − r) /
    (satisfied − floor), 0, 1)`` and ``gain = recovery · clip((r − satisfied) / (ceiling −
    satisfied), 0, 1)``; the user leaves when it reaches 0. With the defaults (3, 3, 1, 0) a
    user tolerates three recommendations at the floor reward, and never leaves while every
    reward is at least ``satisfied``.
    """

    def __init__(
        self,
        *,
        initial: float = 3.0,
        satisfied: float = 3.0,
        floor: float = MIN_REWARD,
        ceiling: float = MAX_REWARD,
        recovery: float = 0.0,
    ) -> None:
        if not floor < satisfied <= ceiling:
            raise ValueError("need floor < satisfied <= ceiling")
        if initial <= 0:
            raise ValueError("initial patience must be positive")
        self.initial = float(initial)
        self.satisfied = float(satisfied)
        self.floor = float(floor)
        self.ceiling = float(ceiling)
        self.recovery = float(recovery)
        self._patience = np.zeros(0, dtype=np.float64)

    def allocate(self, n_slots: int) -> None:
        self._patience = np.zeros(n_slots, dtype=np.float64)

    def start(self, slots: np.ndarray) -> None:
        self._patience[slots] = self.initial

    @property
    def patience(self) -> np.ndarray:
        """[n_slots] current patience (a copy)."""
        return self._patience.copy()

    def _after(self, slots: np.ndarray, rewards: np.ndarray) -> np.ndarray:
        r = np.asarray(rewards, dtype=np.float64)
        drop = np.clip((self.satisfied - r) / (self.satisfied - self.floor), 0.0, 1.0)
        gain = np.zeros_like(r)
        if self.recovery > 0 and self.ceiling > self.satisfied:
            span = self.ceiling - self.satisfied
            gain = self.recovery * np.clip((r - self.satisfied) / span, 0.0, 1.0)
        return np.minimum(self.initial, self._patience[slots] - drop + gain)

    def leaves(
        self,
        slots: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        recommended: np.ndarray,
        steps: np.ndarray,
    ) -> np.ndarray:
        # Pure: the oracle asks about every catalogue item; state changes in update().
        return self._after(np.asarray(slots), rewards) <= 1e-9

    def update(self, slots: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        slots = np.asarray(slots)
        self._patience[slots] = self._after(slots, rewards)


# -- the environment ------------------------------------------------------------------------
def split_users(num_users: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded disjoint (train, test) user index arrays, each sorted."""
    if num_users < 2:
        raise ValueError(f"need at least 2 users to split into train and test, got {num_users}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(num_users)
    n_test = min(max(1, round(num_users * test_fraction)), num_users - 1)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def prefix_lengths(dataset: SequenceDataset, config: SequentialEnvConfig) -> np.ndarray:
    """[U] length of each user's initial history prefix."""
    n = np.asarray([len(s) for s in dataset.sequences], dtype=np.int64)
    p = np.maximum(config.min_prefix, n - config.continuation_items)
    return np.minimum(p, np.maximum(n - 1, 1))


class SequentialEnv(RecBatchEnv):
    """A :class:`RecBatchEnv` over real user sequences that knows each user's true
    continuation (for the ``nextitem`` reference policy and diagnostics)."""

    def __init__(
        self,
        *,
        dataset: SequenceDataset,
        prefixes: np.ndarray,
        user_model: SequentialUserModel,
        env_config: SequentialEnvConfig,
        **kwargs: Any,
    ) -> None:
        self.dataset = dataset
        self.prefixes = np.asarray(prefixes, dtype=np.int64)
        self.user_model = user_model
        self.env_config = env_config
        super().__init__(initial_history=self.initial_items, **kwargs)

    def initial_items(self, user: int) -> list[int]:
        """The user's real history before the episode."""
        return self.dataset.sequences[user][: self.prefixes[user]].tolist()

    def continuation(self, user: int) -> np.ndarray:
        """The user's real items after the initial history, in order."""
        return self.dataset.sequences[user][self.prefixes[user] :]


# -- building and storage -------------------------------------------------------------------
def envs_root() -> Path:
    """Folder holding every built sequential environment (one sub-folder per name)."""
    return cache_dir() / "envs"


def env_folder(name: str) -> Path:
    """Where environment ``name`` is stored."""
    return envs_root() / name


def check_name(name: str) -> None:
    """Reject names that are not safe folder names or clash with other environments."""
    if not NAME_RE.match(name):
        raise ValueError(
            f"invalid environment name {name!r}: use 1-64 lower-case letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    if name in RESERVED_NAMES:
        raise ValueError(f"environment name {name!r} is reserved")


def built_names() -> list[str]:
    """Names of the environments stored under :func:`envs_root`."""
    root = envs_root()
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/manifest.json"))


def read_manifest(name: str) -> dict[str, Any] | None:
    """The manifest of a built environment, or ``None`` when it is not built."""
    path = env_folder(name) / "manifest.json"
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def _write_manifest(name: str, manifest: dict[str, Any]) -> Path:
    folder = env_folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".json.tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
        fh.write("\n")
    path = folder / "manifest.json"
    os.replace(tmp, path)
    return path


def _load_builtin(name: str) -> SequenceDataset:
    if name == "lfm":
        from simulator_client.datasets.lfm import load_lfm

        return load_lfm()
    if name == "industry":
        from simulator_client.datasets.industry import load_industry

        return load_industry()
    raise KeyError(name)


def _config_from(cls: type, data: dict[str, Any] | None) -> Any:
    """Rebuild a frozen config dataclass from a manifest dict (unknown keys ignored)."""
    if not data:
        return cls()
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_environment` did."""

    name: str
    folder: Path
    manifest: dict[str, Any] = field(repr=False)


def prepare_environment(
    name: str,
    *,
    sequences: Path | str | None = None,
    items: Path | str | None = None,
    env_config: SequentialEnvConfig | None = None,
    model_config: SequentialModelConfig | None = None,
) -> BuildResult:
    """Validate the dataset, store it in the generic format and write the manifest.

    ``lfm`` and ``industry`` are converted from the shared data (no files given); any other
    name needs ``sequences`` and ``items`` files in the generic format.
    """
    check_name(name)
    env_config = env_config or SequentialEnvConfig()
    model_config = model_config or SequentialModelConfig()
    if name in BUILTIN_SEQUENTIAL:
        if sequences is not None or items is not None:
            raise ValueError(
                f"{name!r} is built from the shared data; choose another name for your files"
            )
        dataset = _load_builtin(name)
        source = {"kind": "shared-data", "dataset": name}
    else:
        if sequences is None or items is None:
            raise ValueError("building a custom environment needs --sequences and --items")
        dataset = load_sequence_dataset(sequences, items, name=name)
        source = {
            "kind": "files",
            "sequences": str(Path(sequences).resolve()),
            "items": str(Path(items).resolve()),
        }
    folder = env_folder(name)
    write_sequence_dataset(dataset, folder)
    train_users, test_users = split_users(
        dataset.num_users, env_config.test_fraction, env_config.split_seed
    )
    manifest = {
        "format_version": MANIFEST_VERSION,
        "name": name,
        "source": source,
        "files": {"sequences": "sequences.tsv", "items": "items.tsv"},
        "fingerprint": dataset.fingerprint,
        "counts": {
            "users": dataset.num_users,
            "items": dataset.num_items,
            "interactions": dataset.num_interactions,
            "train_users": len(train_users),
            "test_users": len(test_users),
        },
        "item_columns": list(dataset.item_columns),
        "has_ratings": dataset.ratings is not None,
        "env_config": asdict(env_config),
        "model_config": asdict(model_config),
        "models": {},
    }
    _write_manifest(name, manifest)
    return BuildResult(name=name, folder=folder, manifest=manifest)


def _stored_dataset(name: str, manifest: dict[str, Any]) -> SequenceDataset:
    folder = env_folder(name)
    dataset = load_sequence_dataset(
        folder / manifest["files"]["sequences"], folder / manifest["files"]["items"], name=name
    )
    if dataset.fingerprint != manifest["fingerprint"]:
        raise DatasetError(
            "stored files do not match the manifest (edited after the build?); run "
            f"`ialp env build --name {name} ...` again",
            path=folder,
        )
    return dataset


def _ensure_manifest(name: str) -> dict[str, Any]:
    manifest = read_manifest(name)
    if manifest is None:
        if name not in BUILTIN_SEQUENTIAL:
            raise KeyError(f"unknown environment {name!r}: build it with `ialp env build`")
        manifest = prepare_environment(name).manifest
    return manifest


@dataclass(frozen=True)
class _Parts:
    dataset: SequenceDataset
    env_config: SequentialEnvConfig
    model_config: SequentialModelConfig
    train_users: np.ndarray
    test_users: np.ndarray


def _parts(name: str) -> tuple[_Parts, dict[str, Any]]:
    manifest = _ensure_manifest(name)
    dataset = _stored_dataset(name, manifest)
    env_config = _config_from(SequentialEnvConfig, manifest.get("env_config"))
    model_config = _config_from(SequentialModelConfig, manifest.get("model_config"))
    train_users, test_users = split_users(
        dataset.num_users, env_config.test_fraction, env_config.split_seed
    )
    return _Parts(dataset, env_config, model_config, train_users, test_users), manifest


def _model_for(parts: _Parts, split: str, *, progress: bool) -> SequentialUserModel:
    ds = parts.dataset
    if split == "train":
        users, holdout, cfg = parts.train_users, parts.test_users, parts.model_config
    else:
        mode = parts.env_config.test_model_users
        if mode not in ("test", "all"):
            raise ValueError(f"test_model_users must be 'test' or 'all', not {mode!r}")
        users = parts.test_users if mode == "test" else np.arange(ds.num_users)
        holdout = parts.train_users
        # A different seed as well as different data: the two models must not coincide.
        cfg = replace(parts.model_config, seed=parts.model_config.seed + 1)
    return train_sequential_model(
        [ds.sequences[u] for u in users],
        ds.num_items,
        fingerprint=training_fingerprint(ds.fingerprint, users, ds.num_items),
        config=cfg,
        item_text=ds.item_text,
        ratings=[ds.ratings[u] for u in users] if ds.ratings is not None else None,
        holdout=[ds.sequences[u] for u in holdout],
        progress=progress,
        desc=f"{ds.name} {split} user model",
    )


def make_sequential_env(
    name: str, split: str = "test", *, progress: bool = True
) -> SequentialEnv:
    """Build the ``"train"`` or ``"test"`` environment of a sequential dataset.

    ``lfm`` and ``industry`` are prepared from the shared data on first use; custom names
    must have been built with ``ialp env build``. Models train once and are cached.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    parts, _ = _parts(name)
    cfg = parts.env_config
    model = _model_for(parts, split, progress=progress)
    train_model = model if split == "train" else _model_for(parts, "train", progress=progress)
    ds = parts.dataset
    users = parts.train_users if split == "train" else parts.test_users
    return SequentialEnv(
        dataset=ds,
        prefixes=prefix_lengths(ds, cfg),
        user_model=model,
        env_config=cfg,
        name=f"{name}-{split}",
        num_items=ds.num_items,
        users=users,
        reward_model=RankReward(model, repeat_reward=cfg.repeat_reward),
        leave_rule=PatienceLeaveRule(
            initial=cfg.initial_patience,
            satisfied=cfg.satisfied_reward,
            recovery=cfg.patience_recovery,
        ),
        max_steps=cfg.max_steps,
        history_window=cfg.history_window,
        # One representation for both splits: the training model's item embeddings.
        item_vectors=train_model.item_embeddings(),
        item_popularity=ds.item_popularity(parts.train_users),
        item_text=ds.item_text,
        item_ids=ds.item_ids,
    )


def build_environment(
    name: str,
    *,
    sequences: Path | str | None = None,
    items: Path | str | None = None,
    env_config: SequentialEnvConfig | None = None,
    model_config: SequentialModelConfig | None = None,
    progress: bool = True,
) -> BuildResult:
    """Prepare ``name`` (see :func:`prepare_environment`), train both user models and
    record their metrics in the manifest."""
    result = prepare_environment(
        name, sequences=sequences, items=items, env_config=env_config, model_config=model_config
    )
    parts, manifest = _parts(name)
    models: dict[str, Any] = {}
    for split in ("train", "test"):
        model = _model_for(parts, split, progress=progress)
        models[split] = {k: round(v, 6) for k, v in sorted(model.metrics.items())}
    manifest["models"] = models
    _write_manifest(name, manifest)
    return BuildResult(name=name, folder=result.folder, manifest=manifest)


def sequential_stats(name: str) -> dict[str, Any]:
    """Dataset statistics of a sequential environment (no model training)."""
    parts, manifest = _parts(name)
    ds = parts.dataset
    prefixes = prefix_lengths(ds, parts.env_config)
    lens = np.asarray([len(s) for s in ds.sequences])
    return {
        "name": name,
        "users": ds.num_users,
        "items": ds.num_items,
        "interactions": ds.num_interactions,
        "train_users": len(parts.train_users),
        "test_users": len(parts.test_users),
        "train_interactions": int(lens[parts.train_users].sum()),
        "test_interactions": int(lens[parts.test_users].sum()),
        "items_used": int((ds.item_popularity() > 0).sum()),
        "sequence_length": ds.length_stats(),
        "initial_history_length_mean": float(prefixes.mean()),
        "continuation_length_mean": float((lens - prefixes).mean()),
        "has_ratings": ds.ratings is not None,
        "item_columns": list(ds.item_columns),
        "source": manifest.get("source"),
        "folder": str(env_folder(name)),
        "models": manifest.get("models", {}),
    }
