"""The served policy: π̃ = (1 − α)·π_θ + α·π_β (eq. 14), inference only.

Schemes:

* ``none``: a plain policy π_θ (β absent, α = 0). Baselines and iALP are served this way.
* ``ft``: A-iALP_ft, θ itself is fine-tuned online; structurally the same as ``none``.
* ``ap``: A-iALP_ap, θ frozen and β learnable; both networks are held and mixed by α.

The action distribution of one network is the softmax of its actor logits (``head =
"actor"``), or a Boltzmann distribution softmax(Q / ``q_temperature``) over its critic's
Q-values (``head = "q"``, how a DQN is served; greedy over that is argmax Q).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from policy.actor_critic import ActorCritic
from policy.config import PolicyConfig
from policy.exploration import ExplorationConfig, draw_slates
from policy.types import Observation, Slate, pad_histories

SCHEMES = ("none", "ft", "ap")
HEADS = ("actor", "q")


class MixedPolicy:
    """π̃ = (1-α)·πθ + α·πβ, inference only (torch.no_grad, eval mode)."""

    version: int
    alpha: float
    scheme: str
    config: PolicyConfig
    metadata: dict[str, Any]

    def __init__(
        self,
        theta: ActorCritic,
        beta: ActorCritic | None = None,
        *,
        alpha: float = 0.0,
        scheme: str = "none",
        version: int = 0,
        metadata: dict[str, Any] | None = None,
        head: str = "actor",
        q_temperature: float = 1.0,
        exploration: ExplorationConfig | None = None,
        seed: int | None = None,
    ) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
        if scheme == "ap" and beta is None:
            raise ValueError("scheme 'ap' needs a learnable network beta")
        if scheme != "ap" and beta is not None:
            raise ValueError(f"scheme {scheme!r} holds one network; beta must be None")
        if beta is not None and beta.config != theta.config:
            raise ValueError(f"theta and beta differ in shape: {theta.config} vs {beta.config}")
        if not 0.0 <= alpha <= 1.0 or (scheme != "ap" and alpha != 0.0):
            raise ValueError(f"alpha must lie in [0, 1] (and be 0 without beta), got {alpha}")
        if q_temperature <= 0.0:
            raise ValueError(f"q_temperature must be positive, got {q_temperature}")
        self.theta = theta
        self.beta = beta
        self.alpha = float(alpha)
        self.scheme = scheme
        self.version = int(version)
        self.config = theta.config
        self.metadata = dict(metadata or {})
        self.head = head
        self.q_temperature = float(q_temperature)
        self.exploration = exploration or ExplorationConfig()
        self._rng = np.random.default_rng(seed)

    @property
    def num_items(self) -> int:
        """Catalogue size I."""
        return self.config.num_items

    # -- distributions -----------------------------------------------------------------
    def _network_probs(
        self, net: ActorCritic, hist: torch.Tensor, users: torch.Tensor | None
    ) -> np.ndarray:
        if net.training:
            net.eval()
        state = net.encode(hist, users)  # [B, H]
        if self.head == "actor":
            scores = net.actor(state)  # [B, I]
        else:
            scores = net.critic(state) / self.q_temperature  # [B, I]
        return torch.softmax(scores.double(), dim=-1).numpy()

    def component_probs(
        self, histories: np.ndarray, user_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(π_θ(·|s) [B, I], π_β(·|s) [B, I] or None without β), float64."""
        hist = torch.as_tensor(np.asarray(histories, dtype=np.int64))
        if hist.ndim != 2:
            raise ValueError(f"histories must be [B, L], got shape {tuple(hist.shape)}")
        users = None
        if user_ids is not None and self.config.num_users > 0:
            users = torch.as_tensor(np.asarray(user_ids, dtype=np.int64))
        with torch.no_grad():
            p_theta = self._network_probs(self.theta, hist, users)
            p_beta = None if self.beta is None else self._network_probs(self.beta, hist, users)
        return p_theta, p_beta

    def probs(self, histories: np.ndarray, user_ids: np.ndarray | None = None) -> np.ndarray:
        """histories [B, L] int64 PAD=-1 right-aligned → mixture probabilities [B, I]."""
        p_theta, p_beta = self.component_probs(histories, user_ids)
        if p_beta is None:
            return p_theta
        return (1.0 - self.alpha) * p_theta + self.alpha * p_beta

    # -- acting ------------------------------------------------------------------------
    def act_batch(
        self,
        histories: Sequence[Sequence[int]],
        *,
        k: int | Sequence[int] = 1,
        explore: bool | Sequence[bool] = True,
        exclude: Sequence[Sequence[int]] | None = None,
        user_ids: Sequence[int] | None = None,
        rng: np.random.Generator | None = None,
        exploration: ExplorationConfig | None = None,
    ) -> list[Slate]:
        """One Slate per row: k distinct items, their propensities under π̃ and
        their sources ("theta"/"beta"). Must accept empty histories.

        Propensities follow the exploration strategy (see ``policy.exploration``): the
        probability with which each item was drawn. Greedy rows (``explore=False`` or
        strategy ``greedy``) report 1.0. ``exploration`` overrides the deployment's
        strategy (``self.exploration``) for this call.
        """
        how = exploration or self.exploration
        b = len(histories)
        if b == 0:
            return []
        ks = [int(k)] * b if isinstance(k, int) else [int(x) for x in k]
        explores = [bool(explore)] * b if isinstance(explore, bool) else [bool(x) for x in explore]
        if len(ks) != b or len(explores) != b:
            raise ValueError("k and explore must be scalars or have one entry per history")
        if exclude is not None and len(exclude) != b:
            raise ValueError("exclude must have one entry per history")
        if user_ids is not None and len(user_ids) != b:
            raise ValueError("user_ids must have one entry per history")
        n = self.num_items
        for row, hist in enumerate(histories):
            for item in hist:
                if not 0 <= int(item) < n:
                    raise ValueError(f"row {row}: history item {item} outside [0, {n})")
        rng = rng if rng is not None else self._rng
        padded = pad_histories(histories, self.config.max_len)  # [B, L]
        users = None if user_ids is None else np.asarray(user_ids, dtype=np.int64)
        p_theta, p_beta = self.component_probs(padded, users)
        mix = p_theta if p_beta is None else (1.0 - self.alpha) * p_theta + self.alpha * p_beta

        allowed = np.ones((b, n), dtype=bool)
        for row in range(b):
            if exclude is not None and len(exclude[row]):
                ex = np.asarray(list(exclude[row]), dtype=np.int64)
                if ex.min() < 0 or ex.max() >= n:
                    raise ValueError(f"row {row}: exclude holds an item outside [0, {n})")
                allowed[row, ex] = False
            if ks[row] < 1 or ks[row] > int(allowed[row].sum()):
                raise ValueError(
                    f"row {row}: k={ks[row]} must lie in [1, {int(allowed[row].sum())}]"
                )
            if how.mask_history and len(histories[row]):
                without = allowed[row].copy()
                without[np.asarray(list(histories[row]), dtype=np.int64)] = False
                if without.sum() >= ks[row]:
                    allowed[row] = without

        items = np.empty(b, dtype=object)
        props = np.empty(b, dtype=object)
        # Rows sharing (k, strategy) are drawn together, vectorised over the catalogue.
        groups: dict[tuple[int, str], list[int]] = {}
        for row in range(b):
            strat = how.strategy if explores[row] else "greedy"
            groups.setdefault((ks[row], strat), []).append(row)
        for (kk, strat), rows in groups.items():
            idx = np.asarray(rows)
            it, pr = draw_slates(
                mix[idx], allowed[idx], kk, strategy=strat, epsilon=how.epsilon, rng=rng,
            )
            for j, row in enumerate(rows):
                items[row], props[row] = it[j], pr[j]

        out = []
        for row in range(b):
            chosen = items[row]
            sampled = explores[row] and how.strategy != "greedy"
            sources = self._sources(p_theta[row], p_beta, row, chosen, sampled, rng)
            out.append(
                Slate(
                    items=tuple(int(x) for x in chosen),
                    propensities=tuple(float(x) for x in props[row]),
                    sources=sources,
                )
            )
        return out

    def _sources(
        self,
        p_theta: np.ndarray,
        p_beta: np.ndarray | None,
        row: int,
        chosen: np.ndarray,
        sampled: bool,
        rng: np.random.Generator,
    ) -> tuple[str, ...]:
        """Which network each item came from. Drawing a from π̃ is the same as first drawing
        the network (β with probability α) and then a from it, so the source of a given a
        is β with the posterior probability α·π_β(a) / π̃(a); greedy rows take the likelier."""
        if p_beta is None:
            return ("theta",) * len(chosen)
        wb = self.alpha * p_beta[row, chosen]
        wt = (1.0 - self.alpha) * p_theta[chosen]
        post = wb / np.maximum(wb + wt, 1e-300)
        pick_beta = rng.random(len(chosen)) < post if sampled else post > 0.5
        return tuple("beta" if x else "theta" for x in pick_beta)

    def act(
        self,
        obs: Observation,
        k: int = 1,
        *,
        explore: bool = True,
        exclude: Sequence[int] = (),
        rng: np.random.Generator | None = None,
        exploration: ExplorationConfig | None = None,
    ) -> Slate:
        """The slate for one observation (see :meth:`act_batch`)."""
        return self.act_batch(
            [obs.history], k=k, explore=explore, exclude=[exclude],
            user_ids=[obs.user_id], rng=rng, exploration=exploration,
        )[0]

    def act_arrays(
        self,
        histories: np.ndarray,
        user_ids: np.ndarray | None,
        *,
        explore: bool,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fast path for simulators: one item per row of a padded ``[B, L]`` history array.

        Returns ``(items [B], propensities [B])``; same rules as :meth:`act_batch` with k=1
        and no ``exclude``.
        """
        mix = self.probs(histories, user_ids)
        allowed = np.ones_like(mix, dtype=bool)
        if self.exploration.mask_history:
            rows, cols = np.nonzero(histories >= 0)
            allowed[rows, histories[rows, cols]] = False
            allowed[allowed.sum(axis=1) == 0] = True
        strat = self.exploration.strategy if explore else "greedy"
        items, props = draw_slates(
            mix, allowed, 1, strategy=strat, epsilon=self.exploration.epsilon, rng=rng
        )
        return items[:, 0], props[:, 0]

    def __repr__(self) -> str:
        return (
            f"MixedPolicy(version={self.version}, scheme={self.scheme!r}, alpha={self.alpha}, "
            f"head={self.head!r}, items={self.num_items})"
        )
