"""Item features of an environment's catalogue from what an operator has: the training
users' logs and the item texts (``policy.item_features`` computes them).

The training logs are the *training* environment's users' interaction sequences: for a
sequential dataset (LFM, Industry) their recorded sequences, for Coat their rated
training items. Test users, and the simulators' user models, are never read.
Results are cached under ``<cache dir>/item-features/``, keyed by the logs and settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from policy.item_features import KINDS, ItemFeatures, build_item_features
from simulator_client.datasets.paths import cache_dir
from simulator_client.envs.base import RecBatchEnv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemFeatureConfig:
    """Which features, and their sizes."""

    kinds: tuple[str, ...] = ("logpop", "cooc")
    """Any of ``logpop``, ``cooc``, ``text`` (``text`` encodes the item texts with the
    packaged sentence encoder)."""
    cooc_dim: int = 32
    """Width of the co-occurrence embeddings."""
    window: int = 5
    """Co-occurrence window (positions apart within one user's log)."""
    text_dim: int = 32
    """Principal components kept of the text embeddings."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown or not self.kinds:
            raise ValueError(f"unknown item feature kinds {unknown}; "
                             f"choose from {', '.join(KINDS)}")

    @property
    def dim(self) -> int:
        """Width F of the feature matrix."""
        sizes = {"logpop": 1, "cooc": self.cooc_dim, "text": self.text_dim}
        return sum(sizes[k] for k in self.kinds)


def training_logs(train_env: RecBatchEnv) -> list[np.ndarray]:
    """The interaction sequences of the training environment's users."""
    from simulator_client.envs.sequential import SequentialEnv

    if isinstance(train_env, SequentialEnv):
        return [np.asarray(train_env.dataset.sequences[int(u)]) for u in train_env.users]
    if train_env.initial_history is None:
        return []
    return [np.asarray(train_env.initial_history(int(u)), dtype=np.int64)
            for u in train_env.users]


LOG_SUBSETS = ("all", "imbalanced")
"""Which training logs the offline parts of a run see: every interaction, or a
deliberately imbalanced subset (:func:`imbalanced_logs`)."""


def imbalanced_logs(logs: Sequence[np.ndarray], num_items: int, *, head_items: float = 0.1,
                    head_share: float = 0.9, seed: int = 0) -> list[np.ndarray]:
    """A subset of ``logs`` in which the most popular ``head_items`` share of the items
    holds ``head_share`` of the interactions.

    The head is the most frequent items of ``logs`` (ties by id). Every head interaction
    is kept; tail interactions are kept at random (``seed``), just enough of them for
    the head to hold ``head_share``. Order within each sequence is kept and no user is
    dropped (a sequence may become shorter), so the result stays aligned with the
    users of ``logs``. When the head already holds at least ``head_share``, the logs
    are returned unchanged."""
    if not 0.0 < head_items < 1.0 or not 0.0 < head_share < 1.0:
        raise ValueError("head_items and head_share must lie strictly between 0 and 1")
    seqs = [np.asarray(s, dtype=np.int64) for s in logs]
    flat = np.concatenate(seqs or [np.zeros(0, dtype=np.int64)])
    counts = np.bincount(flat, minlength=num_items)[:num_items]
    n_head = max(1, round(head_items * num_items))
    head = np.zeros(num_items, dtype=bool)
    head[np.argsort(-counts, kind="stable")[:n_head]] = True
    head_n = int(counts[head].sum())
    tail_n = int(counts[~head].sum())
    # head / (head + kept tail) = head_share  →  kept tail = head (1 − share) / share
    keep_tail = min(tail_n, int(head_n * (1.0 - head_share) / head_share))
    if keep_tail >= tail_n:
        return seqs
    rng = np.random.default_rng(np.random.SeedSequence([seed, 73]))
    tail_pos = np.flatnonzero(~head[flat])
    kept = np.zeros(len(flat), dtype=bool)
    kept[head[flat]] = True
    kept[rng.choice(tail_pos, size=keep_tail, replace=False)] = True
    out, start = [], 0
    for s in seqs:
        out.append(s[kept[start:start + len(s)]])
        start += len(s)
    return out


def operator_logs(train_env: RecBatchEnv, subset: str = "all", *, seed: int = 0
                  ) -> list[np.ndarray]:
    """The training logs an experiment's offline parts see (``subset`` of
    :data:`LOG_SUBSETS`), one sequence per user of ``train_env.users``."""
    if subset not in LOG_SUBSETS:
        raise ValueError(f"logs must be one of {', '.join(LOG_SUBSETS)}, not {subset!r}")
    logs = training_logs(train_env)
    if subset == "imbalanced":
        return imbalanced_logs(logs, train_env.num_items, seed=seed)
    return logs


def _text_vectors(texts: Sequence[str], num_items: int) -> np.ndarray:
    from policy.judge.embedding import bundled_model_path, load_sentence_encoder

    key = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:16]
    path = cache_dir() / "item-features" / f"text-{num_items}-{key}.npy"
    if path.exists():
        return np.load(path)
    encoder = load_sentence_encoder(bundled_model_path(), "cpu")
    vecs = np.asarray(encoder.encode(list(texts), batch_size=64, normalize_embeddings=True,
                                     show_progress_bar=False), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vecs)
    return vecs


def features_for(train_env: RecBatchEnv, config: ItemFeatureConfig | None = None, *,
                 seed: int = 0, logs: Sequence[np.ndarray] | None = None) -> ItemFeatures:
    """Features of ``train_env``'s catalogue from its users' logs (cached on disk);
    ``logs`` replaces them (e.g. :func:`operator_logs`' imbalanced subset)."""
    config = config or ItemFeatureConfig()
    logs = training_logs(train_env) if logs is None else list(logs)
    digest = hashlib.sha1()
    digest.update(json.dumps({"cfg": asdict(config), "items": train_env.num_items,
                              "seed": seed}, sort_keys=True).encode())
    for seq in logs:
        digest.update(np.asarray(seq, dtype=np.int64).tobytes() + b"|")
    path = cache_dir() / "item-features" / f"{train_env.name}-{digest.hexdigest()[:16]}.npz"
    if path.exists():
        with np.load(path) as data:
            return ItemFeatures(matrix=data["matrix"], prior=data["prior"],
                                names=tuple(str(n) for n in data["names"]))
    text = None
    if "text" in config.kinds:
        if train_env.item_text is None:
            raise ValueError(f"environment {train_env.name!r} has no item texts")
        text = _text_vectors(train_env.item_text, train_env.num_items)
    feats = build_item_features(logs, train_env.num_items, kinds=config.kinds,
                                cooc_dim=config.cooc_dim, window=config.window,
                                text_vectors=text, text_dim=config.text_dim, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}.npz")  # concurrent builders never collide
    np.savez(tmp, matrix=feats.matrix, prior=feats.prior, names=np.asarray(feats.names))
    Path(tmp).replace(path)
    return feats


__all__ = ["LOG_SUBSETS", "ItemFeatureConfig", "features_for", "imbalanced_logs", "operator_logs",
           "training_logs"]
