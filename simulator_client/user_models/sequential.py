"""Sequential user response model for the LFM, Industry and custom environments.

The user's state is one vector computed from their recent history by attention: the most
recent item (plus a recency embedding) queries every item of the history window, the result
goes through a residual feed-forward block, and a candidate item's score is the dot product
of that state with the candidate's embedding plus an item bias (embeddings tied between
history and candidates, as in SASRec). Because the state does not depend on the candidate,
scoring the whole catalogue for B users is one [B, d] x [d, I] product, which is what keeps
environment stepping cheap.

Training is next-item prediction on every prefix of the training sequences with sampled
softmax: the true next item against ``negatives`` items drawn uniformly from the catalogue
(redrawn every batch). Item embeddings may start from the item text (a seeded random
projection of TF-IDF token weights, no model download), so items with little data still get
sensible neighbours. Trained weights are cached by data fingerprint + configuration.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from policy.types import PAD
from simulator_client.user_models.cache import cache_key, load_arrays, save_arrays


@dataclass(frozen=True)
class SequentialModelConfig:
    """Hyperparameters of the attention user model."""

    dim: int = 64
    """Item embedding and state size."""
    heads: int = 2
    """Attention heads."""
    window: int = 20
    """How many most recent history items the state attends over (recent items carry most
    of the signal, and the cost of a state grows linearly with it)."""
    text_init: bool = True
    """Initialise item embeddings from the item text (TF-IDF random projection)."""
    epochs: int = 8
    """Passes over all training prefixes."""
    batch_size: int = 256
    """Prefixes per optimisation step."""
    negatives: int = 128
    """Uniformly sampled negative items per batch, shared by its rows."""
    lr: float = 3e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam L2 penalty."""
    dropout: float = 0.2
    """Dropout on embeddings and inside the block, during training only."""
    positive_threshold: float | None = None
    """With ratings: targets rated below this are not used as positives (they stay in the
    history). ``None`` = the midpoint of the observed rating range."""
    max_examples_per_epoch: int = 40_000
    """Cap on training prefixes per epoch (a seeded subsample beyond it) so long datasets
    train in bounded time."""
    seed: int = 0
    """Seed of initialisation, negative sampling, dropout and shuffling."""


class AttentionStateModel(nn.Module):
    """History window → user state; state · item embedding + bias → score."""

    def __init__(self, num_items: int, config: SequentialModelConfig) -> None:
        super().__init__()
        d = config.dim
        self.num_items = num_items
        self.window = config.window
        # Index 0 is padding; item i is stored at i + 1.
        self.item = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.recency = nn.Embedding(config.window, d)
        self.attn = nn.MultiheadAttention(d, config.heads, dropout=config.dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(
            nn.Linear(d, 2 * d), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(2 * d, d)
        )
        self.norm2 = nn.LayerNorm(d)
        self.drop = nn.Dropout(config.dropout)
        self.bias = nn.Parameter(torch.zeros(num_items + 1))
        nn.init.normal_(self.item.weight, std=0.1)
        nn.init.normal_(self.recency.weight, std=0.02)
        with torch.no_grad():
            self.item.weight[0].zero_()
        # Column k of a right-aligned window holds the item k places before the newest.
        self.register_buffer(
            "recency_index", torch.arange(config.window - 1, -1, -1, dtype=torch.long)
        )

    def state(self, window: torch.Tensor) -> torch.Tensor:
        """``window``: [B, W] shifted item ids (0 = pad), right-aligned → state [B, d]."""
        x = self.drop(self.item(window) + self.recency(self.recency_index))
        pad = window == 0
        # The newest slot is always attendable, so an empty history never gives NaN.
        pad[:, -1] = False
        query = x[:, -1:, :]
        att, _ = self.attn(query, x, x, key_padding_mask=pad, need_weights=False)
        h = self.norm1(query[:, 0] + att[:, 0])
        return self.norm2(h + self.ffn(h))

    def scores(self, state: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of ``items`` ([B, K] 0-based ids) or of the whole catalogue ([B, I])."""
        if items is None:
            return state @ self.item.weight[1:].T + self.bias[1:]
        emb = self.item(items + 1)  # [B, K, d]
        return torch.einsum("bd,bkd->bk", state, emb) + self.bias[items + 1]


def text_embeddings(texts: Sequence[str], dim: int, seed: int) -> np.ndarray:
    """[I, dim] item vectors from text: TF-IDF token weights times a seeded Gaussian
    projection, rows scaled to unit norm (random rows for items without any token)."""
    token_re = re.compile(r"[0-9a-z]+")
    docs = [token_re.findall(t.lower()) for t in texts]
    vocab = sorted({tok for doc in docs for tok in doc})
    out = np.zeros((len(texts), dim), dtype=np.float64)
    rng = np.random.default_rng(seed)
    if vocab:
        index = {tok: i for i, tok in enumerate(vocab)}
        df = np.zeros(len(vocab))
        for doc in docs:
            for tok in set(doc):
                df[index[tok]] += 1
        idf = np.log((1 + len(docs)) / (1 + df)) + 1.0
        proj = rng.normal(size=(len(vocab), dim)) / math.sqrt(dim)
        for i, doc in enumerate(docs):
            if not doc:
                continue
            ids, counts = np.unique([index[t] for t in doc], return_counts=True)
            out[i] = (counts * idf[ids]) @ proj[ids]
    norms = np.linalg.norm(out, axis=1)
    empty = norms < 1e-12
    if empty.any():
        out[empty] = rng.normal(size=(int(empty.sum()), dim))
        norms[empty] = np.linalg.norm(out[empty], axis=1)
    return (out / norms[:, None]).astype(np.float32)


def to_window(history: np.ndarray, window: int) -> np.ndarray:
    """``history`` [B, W'] (``PAD``-padded, right-aligned, 0-based) → [B, window] shifted
    ids (0 = pad), keeping the most recent items."""
    h = np.asarray(history, dtype=np.int64)
    if h.ndim != 2:
        raise ValueError(f"history must be [B, W], got shape {h.shape}")
    if h.shape[1] >= window:
        h = h[:, h.shape[1] - window :]
    else:
        h = np.concatenate([np.full((h.shape[0], window - h.shape[1]), PAD, np.int64), h], 1)
    return np.where(h == PAD, 0, h + 1)


def _training_examples(
    sequences: Sequence[np.ndarray],
    ratings: Sequence[np.ndarray] | None,
    window: int,
    threshold: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every prefix → (window [N, W] of shifted ids, target [N] 0-based)."""
    if ratings is not None and threshold is None:
        flat = np.concatenate([np.asarray(r) for r in ratings])
        threshold = float((flat.min() + flat.max()) / 2.0)
    wins: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for u, seq in enumerate(sequences):
        n = len(seq)
        if n < 2:
            continue
        padded = np.concatenate([np.zeros(window, np.int64), seq + 1])
        pos = np.arange(1, n)  # predict seq[t] from seq[:t]
        if ratings is not None and threshold is not None:
            pos = pos[np.asarray(ratings[u])[pos] >= threshold]
        if len(pos) == 0:
            continue
        # padded[t : t + window] holds the `window` items before seq[t], left-padded.
        idx = pos[:, None] + np.arange(window)[None, :]
        wins.append(padded[idx])
        targets.append(seq[pos])
    if not wins:
        return np.zeros((0, window), np.int64), np.zeros(0, np.int64)
    return np.concatenate(wins), np.concatenate(targets)


def training_fingerprint(
    dataset_fingerprint: str, users: Sequence[int] | np.ndarray, num_items: int
) -> str:
    """Fingerprint of a model's training data: the dataset and which users it sees."""
    digest = hashlib.sha256(dataset_fingerprint.encode())
    digest.update(np.ascontiguousarray(np.sort(np.asarray(users, np.int64))).tobytes())
    digest.update(str(num_items).encode())
    return digest.hexdigest()


@dataclass
class SequentialUserModel:
    """A trained attention user model, ready for batched scoring (inference only)."""

    module: AttentionStateModel
    config: SequentialModelConfig
    metrics: dict[str, float]
    """Training and held-out ranking metrics (loss, hit rates) recorded at training time."""
    from_cache: bool
    """Whether the weights were loaded from the on-disk cache."""

    @property
    def num_items(self) -> int:
        return self.module.num_items

    def __post_init__(self) -> None:
        self._precompute()

    def _precompute(self) -> None:
        """Fold the attention's input projections into per-item and per-position tables.

        The block's input is ``item + recency`` with no normalisation before the
        projections, so ``(E[i] + R[p]) W = (E W)[i] + (R W)[p]``: at inference a state
        costs gathers and a W-long softmax instead of a [W, d] x [d, 3d] product.
        """
        m = self.module
        with torch.no_grad():
            wq, wk, wv = m.attn.in_proj_weight.chunk(3)
            bq, bk, bv = m.attn.in_proj_bias.chunk(3)
            emb = m.item.weight
            rec = m.recency(m.recency_index)  # [W, d], column order
            self._kt = emb @ wk.T + bk
            self._vt = emb @ wv.T + bv
            self._kr = rec @ wk.T
            self._vr = rec @ wv.T
            self._x_last = rec[-1]
            self._qt = (emb + rec[-1]) @ wq.T + bq
            self._emb_t = emb[1:].T.contiguous()
            self._bias = m.bias[1:].clone()

    def state(self, history: np.ndarray) -> torch.Tensor:
        """[B, d] user states for ``history`` [B, W'] (``PAD``-padded, 0-based ids)."""
        m = self.module
        win = torch.as_tensor(to_window(history, self.config.window))
        b, w = win.shape
        heads = m.attn.num_heads
        dh = m.attn.head_dim
        with torch.no_grad():
            last = win[:, -1]
            q = self._qt[last].view(b, heads, dh) / math.sqrt(dh)
            k = (self._kt[win] + self._kr).view(b, w, heads, dh)
            v = (self._vt[win] + self._vr).view(b, w, heads, dh)
            logits = torch.einsum("bhd,bwhd->bhw", q, k)
            pad = win == 0
            pad[:, -1] = False
            logits = logits.masked_fill(pad[:, None, :], float("-inf"))
            att = torch.einsum("bhw,bwhd->bhd", torch.softmax(logits, dim=-1), v).reshape(b, -1)
            att = m.attn.out_proj(att)
            h = m.norm1(m.item.weight[last] + self._x_last + att)
            return m.norm2(h + m.ffn(h))

    def scores(self, history: np.ndarray) -> np.ndarray:
        """[B, I] float32 scores of every item for users with ``history`` [B, W]."""
        with torch.no_grad():
            return (self.state(history) @ self._emb_t + self._bias).numpy()

    def item_embeddings(self) -> np.ndarray:
        """[I, d] learned item embeddings (for diversity metrics and inspection)."""
        return self.module.item.weight[1:].detach().numpy().copy()


def _hit_rates(
    module: AttentionStateModel, wins: np.ndarray, targets: np.ndarray, batch: int = 512
) -> dict[str, float]:
    """Full-catalogue rank metrics of the true next item over (window, target) pairs."""
    if len(targets) == 0:
        return {}
    ranks = []
    module.eval()
    with torch.no_grad():
        for s in range(0, len(targets), batch):
            w = torch.as_tensor(wins[s : s + batch])
            t = torch.as_tensor(targets[s : s + batch])
            sc = module.scores(module.state(w))
            ranks.append((sc > sc.gather(1, t[:, None])).sum(1).numpy() + 1)
    r = np.concatenate(ranks)
    return {
        "hr@10": float((r <= 10).mean()),
        "hr@50": float((r <= 50).mean()),
        "mrr": float((1.0 / r).mean()),
        "median_rank": float(np.median(r)),
        "n": float(len(r)),
    }


def train_sequential_model(
    sequences: Sequence[np.ndarray],
    num_items: int,
    *,
    fingerprint: str,
    config: SequentialModelConfig | None = None,
    item_text: Sequence[str] | None = None,
    ratings: Sequence[np.ndarray] | None = None,
    holdout: Sequence[np.ndarray] | None = None,
    progress: bool = True,
    desc: str = "sequential user model",
) -> SequentialUserModel:
    """Train (or load from cache) the attention model on ``sequences``.

    ``fingerprint`` must identify the training data (see :func:`training_fingerprint`);
    ``holdout`` sequences, when given, are only scored (hit rates) for the record.
    """
    config = config or SequentialModelConfig()
    key = cache_key("seq-attn", fingerprint, config)
    module = AttentionStateModel(num_items, config)
    cached = load_arrays(key)
    if cached is not None:
        state = {k[2:]: torch.as_tensor(v) for k, v in cached.items() if k.startswith("w.")}
        module.load_state_dict(state)
        module.eval()
        metrics = {k[2:]: float(v) for k, v in cached.items() if k.startswith("m.")}
        return SequentialUserModel(module, config, metrics, from_cache=True)

    wins, targets = _training_examples(sequences, ratings, config.window, config.positive_threshold)
    if len(targets) == 0:
        raise ValueError("no training pairs: every sequence needs at least two items")
    # The model is small: a thread pool only adds synchronisation, and on a busy machine
    # it is ~10x slower than one thread. Restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(wins, targets, num_items, key, config, item_text, holdout, progress, desc)
    finally:
        torch.set_num_threads(threads)


def _train(
    wins: np.ndarray,
    targets: np.ndarray,
    num_items: int,
    key: str,
    config: SequentialModelConfig,
    item_text: Sequence[str] | None,
    holdout: Sequence[np.ndarray] | None,
    progress: bool,
    desc: str,
) -> SequentialUserModel:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    module = AttentionStateModel(num_items, config)
    if config.text_init and item_text is not None:
        vec = text_embeddings(item_text, config.dim, config.seed)
        with torch.no_grad():
            # Same scale as the random initialisation (rows of norm ~ 0.1·sqrt(d)).
            module.item.weight[1:] = torch.as_tensor(vec) * (0.1 * math.sqrt(config.dim))
    opt = torch.optim.Adam(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    per_epoch = min(len(targets), config.max_examples_per_epoch)
    steps_per_epoch = -(-per_epoch // config.batch_size)
    bar = tqdm(
        total=config.epochs * steps_per_epoch, desc=desc, unit="batch", disable=not progress
    )
    started = time.perf_counter()
    loss_value = float("nan")
    for _epoch in range(config.epochs):
        module.train()
        order = rng.permutation(len(targets))[:per_epoch]
        total, count = 0.0, 0
        for s in range(0, per_epoch, config.batch_size):
            idx = order[s : s + config.batch_size]
            w = torch.as_tensor(wins[idx])
            t = torch.as_tensor(targets[idx])
            neg = torch.as_tensor(rng.integers(0, num_items, size=config.negatives))
            state = module.state(w)
            pos_logit = module.scores(state, t[:, None])  # [B, 1]
            neg_logit = state @ module.item(neg + 1).T + module.bias[neg + 1]  # [B, K]
            # A sampled negative equal to the target is not a negative for that row.
            neg_logit = neg_logit.masked_fill(neg[None, :] == t[:, None], float("-inf"))
            logits = torch.cat([pos_logit, neg_logit], dim=1)
            loss = nn.functional.cross_entropy(logits, torch.zeros(len(idx), dtype=torch.long))
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                module.item.weight[0].zero_()
            total += loss.item() * len(idx)
            count += len(idx)
            bar.update(1)
        loss_value = total / max(count, 1)
        bar.set_postfix(loss=f"{loss_value:.3f}")
    bar.close()
    module.eval()
    metrics: dict[str, float] = {
        "train_loss": loss_value,
        "train_pairs": float(len(targets)),
        "train_seconds": time.perf_counter() - started,
    }
    # Fit on (a sample of) the training pairs, and generalisation on held-out sequences.
    sample = rng.permutation(len(targets))[:5000]
    for name, value in _hit_rates(module, wins[sample], targets[sample]).items():
        metrics[f"train_{name}"] = value
    if holdout is not None:
        hw, ht = _training_examples(holdout, None, config.window, None)
        pick = rng.permutation(len(ht))[:5000]
        for name, value in _hit_rates(module, hw[pick], ht[pick]).items():
            metrics[f"holdout_{name}"] = value
    arrays = {f"w.{k}": v.detach().numpy() for k, v in module.state_dict().items()}
    arrays.update({f"m.{k}": np.asarray(v) for k, v in metrics.items()})
    save_arrays(key, arrays)
    return SequentialUserModel(module, config, metrics, from_cache=False)
