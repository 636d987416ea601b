"""DeepFM ensemble user model for the Coat training environment.

Each member is a DeepFM (Guo et al., 2017): a first-order term, an FM second-order term and
an MLP over shared field embeddings. Members differ only by seed; the ensemble mean of the
predicted rating is the training environment's reward, as in EasyRL4Rec / DORL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from simulator_client.datasets.coat import CoatData
from simulator_client.user_models.cache import cache_key, load_arrays, save_arrays


@dataclass(frozen=True)
class DeepFMConfig:
    """Hyperparameters of the Coat user model."""

    embed_dim: int = 8
    """Size of every field embedding."""
    hidden: tuple[int, ...] = (64, 64)
    """Widths of the deep part's hidden layers."""
    ensemble: int = 5
    """Number of members; 5 is the reference setting."""
    epochs: int = 15
    """Passes over the training pairs per member."""
    batch_size: int = 256
    """Minibatch size."""
    lr: float = 3e-3
    """Adam learning rate."""
    weight_decay: float = 1e-5
    """L2 penalty."""
    negatives_per_positive: int = 1
    """Unobserved (user, item) pairs sampled per observed rating, resampled every epoch."""
    negative_rating: float = 0.0
    """Target for sampled negatives: users rarely choose to rate what they would not pick."""
    seed: int = 0
    """Base seed; member m uses seed + m."""


class DeepFM(nn.Module):
    """DeepFM over categorical fields sharing one offset embedding table."""

    offsets: torch.Tensor

    def __init__(self, field_sizes: list[int], embed_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        offsets = np.concatenate([[0], np.cumsum(field_sizes)[:-1]])
        self.register_buffer("offsets", torch.as_tensor(offsets, dtype=torch.long))
        total = int(sum(field_sizes))
        self.linear = nn.Embedding(total, 1)
        self.embed = nn.Embedding(total, embed_dim)
        nn.init.normal_(self.embed.weight, std=0.05)
        nn.init.zeros_(self.linear.weight)
        self.bias = nn.Parameter(torch.zeros(1))
        layers: list[nn.Module] = []
        width = len(field_sizes) * embed_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: [B, F] per-field codes → predicted rating [B]."""
        idx = x + self.offsets  # [B, F]
        first = self.linear(idx).sum(dim=(1, 2))  # [B]
        emb = self.embed(idx)  # [B, F, E]
        square_of_sum = emb.sum(dim=1).pow(2)  # [B, E]
        sum_of_square = emb.pow(2).sum(dim=1)  # [B, E]
        second = 0.5 * (square_of_sum - sum_of_square).sum(dim=1)  # [B]
        deep = self.mlp(emb.flatten(1)).squeeze(-1)  # [B]
        return self.bias + first + second + deep


@dataclass(frozen=True)
class CoatUserModel:
    """A trained ensemble's predictions over every (user, item) pair."""

    mean: np.ndarray
    """[U, I] float32 ensemble-mean predicted rating."""
    std: np.ndarray
    """[U, I] float32 spread across members (epistemic uncertainty)."""
    train_rmse: float
    """RMSE on observed training ratings (ensemble mean)."""
    test_rmse: float
    """RMSE on the held-out MAR ratings of test.ascii (ensemble mean)."""
    from_cache: bool
    """Whether this model was loaded from the on-disk cache."""

    def reward_matrix(self) -> np.ndarray:
        """Predictions shifted to be non-negative: the training environment's reward."""
        shift = min(0.0, float(self.mean.min()))
        return (self.mean - shift).astype(np.float32)


def _features(data: CoatData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [
            users[:, None],
            items[:, None],
            data.user_features[users],
            data.item_features[items],
        ],
        axis=1,
    )


def _field_sizes(data: CoatData) -> list[int]:
    return [
        data.num_users,
        data.num_items,
        *[len(v) for v in data.user_vocab],
        *[len(v) for v in data.item_vocab],
    ]


def train_coat_user_model(
    data: CoatData, config: DeepFMConfig | None = None, *, progress: bool = True
) -> CoatUserModel:
    """Train (or load from cache) the DeepFM ensemble on ``train.ascii``."""
    config = config or DeepFMConfig()
    key = cache_key("coat-deepfm", data.fingerprint, config)
    cached = load_arrays(key)
    if cached is not None:
        return CoatUserModel(
            mean=cached["mean"],
            std=cached["std"],
            train_rmse=float(cached["train_rmse"]),
            test_rmse=float(cached["test_rmse"]),
            from_cache=True,
        )

    pos_u, pos_i = np.nonzero(data.train)
    pos_y = data.train[pos_u, pos_i].astype(np.float32)
    all_u = np.repeat(np.arange(data.num_users), data.num_items)
    all_i = np.tile(np.arange(data.num_items), data.num_users)
    all_x = torch.as_tensor(_features(data, all_u, all_i))
    unobserved = np.flatnonzero(data.train.ravel() == 0)
    sizes = _field_sizes(data)

    preds = []
    total = config.ensemble * config.epochs
    bar = tqdm(total=total, desc="Coat DeepFM ensemble", unit="epoch", disable=not progress)
    started = time.perf_counter()
    for member in range(config.ensemble):
        seed = config.seed + member
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        model = DeepFM(sizes, config.embed_dim, config.hidden)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        for _epoch in range(config.epochs):
            n_neg = len(pos_u) * config.negatives_per_positive
            neg = rng.choice(unobserved, size=n_neg, replace=True)
            u = np.concatenate([pos_u, neg // data.num_items])
            i = np.concatenate([pos_i, neg % data.num_items])
            y = np.concatenate([pos_y, np.full(n_neg, config.negative_rating, np.float32)])
            x = torch.as_tensor(_features(data, u, i))
            target = torch.as_tensor(y)
            order = torch.as_tensor(rng.permutation(len(y)))
            epoch_loss = 0.0
            for start in range(0, len(order), config.batch_size):
                idx = order[start : start + config.batch_size]
                loss = nn.functional.mse_loss(model(x[idx]), target[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                epoch_loss += loss.item() * len(idx)
            bar.set_postfix(member=member, mse=f"{epoch_loss / len(order):.3f}")
            bar.update(1)
        with torch.no_grad():
            preds.append(model(all_x).numpy().reshape(data.num_users, data.num_items))
    bar.close()

    stack = np.stack(preds).astype(np.float32)
    mean, std = stack.mean(axis=0), stack.std(axis=0)
    train_rmse = float(np.sqrt(np.mean((mean[pos_u, pos_i] - pos_y) ** 2)))
    tu, ti = np.nonzero(data.test)
    test_rmse = float(np.sqrt(np.mean((mean[tu, ti] - data.test[tu, ti]) ** 2)))
    save_arrays(
        key,
        {
            "mean": mean,
            "std": std,
            "train_rmse": np.asarray(train_rmse),
            "test_rmse": np.asarray(test_rmse),
            "train_seconds": np.asarray(time.perf_counter() - started),
        },
    )
    return CoatUserModel(
        mean=mean, std=std, train_rmse=train_rmse, test_rmse=test_rmse, from_cache=False
    )
