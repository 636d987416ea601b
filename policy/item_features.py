"""Item representations an operator can compute from its own logs and catalogue.

A policy that gives every item an independent output row learns nothing about an item it
has not recommended yet: with thousands of items and a few thousand interactions most rows
never receive a gradient. These features let one reward move every similar item:

* ``logpop``: log(1 + count) of each item in the *training* users' logs, standardised.
  Also the default prior of the heads' item bias (a new policy starts popularity-aware).
* ``cooc``: co-occurrence embeddings: the positive PMI of items that appear within
  ``window`` positions of each other in the training logs, factorised by a truncated SVD
  (items never logged get a zero row).
* ``text``: sentence embeddings of the item texts (the packaged all-MiniLM-L6-v2), when
  asked for and available.

Everything here is pure numpy on sequences and counts; ``simulator_client.item_features``
decides what counts as the training logs of an environment. Nothing reads a simulator's
user model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

KINDS = ("logpop", "cooc", "text")


@dataclass(frozen=True)
class ItemFeatures:
    """A per-item feature matrix and the prior for the heads' item bias."""

    matrix: np.ndarray
    """[I, F] float32, columns standardised."""
    prior: np.ndarray
    """[I] float32: initial item bias (standardised log-popularity, or zeros)."""
    names: tuple[str, ...] = ()
    """What each block of columns is (for reports)."""

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2 or self.prior.shape != (self.matrix.shape[0],):
            raise ValueError(f"matrix must be [I, F] and prior [I], got {self.matrix.shape} "
                             f"and {self.prior.shape}")
        if not (np.isfinite(self.matrix).all() and np.isfinite(self.prior).all()):
            raise ValueError("item features must be finite")

    @property
    def num_items(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


def item_counts(sequences: Sequence[Any], num_items: int) -> np.ndarray:
    """[I] how often each item occurs in ``sequences``."""
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences if len(s)]
                          or [np.zeros(0, dtype=np.int64)])
    return np.bincount(flat, minlength=num_items)[:num_items].astype(np.float64)


def standardise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation per column (constant columns become 0)."""
    x = np.asarray(x, dtype=np.float64)
    sd = x.std(axis=0)
    return ((x - x.mean(axis=0)) / np.where(sd > 1e-12, sd, 1.0)).astype(np.float32)


def log_popularity(counts: np.ndarray) -> np.ndarray:
    """[I] standardised log(1 + count)."""
    return standardise(np.log1p(np.asarray(counts, dtype=np.float64))[:, None])[:, 0]


def cooccurrence_embeddings(
    sequences: Sequence[Any], num_items: int, *, dim: int = 32, window: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """[I, dim] SVD of the positive PMI matrix of items within ``window`` of each other.

    Rows are scaled by the square root of the singular values (the usual symmetric split)
    and then standardised per column; items absent from ``sequences`` get zeros.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import svds

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for seq in sequences:
        s = np.asarray(seq, dtype=np.int64)
        for k in range(1, window + 1):
            if len(s) <= k:
                break
            rows += [s[:-k], s[k:]]
            cols += [s[k:], s[:-k]]
    out = np.zeros((num_items, dim), dtype=np.float32)
    if not rows:
        return out
    r, c = np.concatenate(rows), np.concatenate(cols)
    keep = r != c
    co = coo_matrix((np.ones(int(keep.sum())), (r[keep], c[keep])),
                    shape=(num_items, num_items)).tocsr()
    co.sum_duplicates()
    total = co.sum()
    marg = np.asarray(co.sum(axis=1)).ravel()
    coo = co.tocoo()
    pmi = np.log(coo.data * total / (marg[coo.row] * marg[coo.col]))
    pos = pmi > 0
    ppmi = coo_matrix((pmi[pos], (coo.row[pos], coo.col[pos])), shape=co.shape).tocsr()
    k = min(dim, min(ppmi.shape) - 2, max(1, ppmi.nnz - 1))
    if ppmi.nnz == 0 or k < 1:
        return out
    v0 = np.random.default_rng(seed).standard_normal(num_items)
    u, sing, _ = svds(ppmi, k=k, v0=v0)
    order = np.argsort(-sing)
    emb = u[:, order] * np.sqrt(sing[order])[None, :]
    seen = marg > 0
    emb[seen] = standardise(emb[seen])
    emb[~seen] = 0.0
    out[:, :k] = emb.astype(np.float32)
    return out


def build_item_features(
    sequences: Sequence[Any], num_items: int, *, kinds: Sequence[str] = ("logpop",
                                                                                     "cooc"),
    cooc_dim: int = 32, window: int = 5, text_vectors: np.ndarray | None = None,
    text_dim: int = 32, seed: int = 0,
) -> ItemFeatures:
    """Features of ``kinds`` from the training logs ``sequences`` (and item texts' vectors
    for ``text``). The prior is the standardised log-popularity whenever there are logs."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ValueError(f"unknown item feature kinds {unknown}; choose from {', '.join(KINDS)}")
    counts = item_counts(sequences, num_items)
    logpop = log_popularity(counts)
    blocks: list[np.ndarray] = []
    names: list[str] = []
    for kind in kinds:
        if kind == "logpop":
            blocks.append(logpop[:, None])
        elif kind == "cooc":
            blocks.append(cooccurrence_embeddings(sequences, num_items, dim=cooc_dim,
                                                  window=window, seed=seed))
        else:
            if text_vectors is None:
                raise ValueError("item feature 'text' needs the item texts' vectors")
            blocks.append(_project(text_vectors, text_dim, seed))
        names.append(kind)
    return ItemFeatures(matrix=np.concatenate(blocks, axis=1).astype(np.float32),
                        prior=logpop.astype(np.float32), names=tuple(names))


def _project(vectors: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Principal components (at most ``dim``) of ``vectors``, standardised."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0)
    k = min(dim, x.shape[1], x.shape[0])
    _, _, vt = np.linalg.svd(x[np.random.default_rng(seed).permutation(len(x))[:5000]],
                             full_matrices=False)
    return standardise(x @ vt[:k].T)
