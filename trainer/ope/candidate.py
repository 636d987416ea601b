"""A candidate policy on logged states: its action distribution and DR's direct models.

The candidate is what would be served: a :class:`~policy.mixed.MixedPolicy` acting with
its exploration strategy (``policy.exploration``) for one item per decision, exactly as
:meth:`MixedPolicy.act_arrays` draws it:

* ``categorical``: π̃(·|s) (θ/β mixture, actor softmax or Boltzmann over Q), renormalised
  over the allowed items (the history is excluded when ``mask_history`` is set);
* ``epsilon``: (1 − ε)·[a = argmax π̃] + ε / #allowed;
* ``greedy`` (or ``explore=False``): a point mass on argmax π̃. Its probability of a
  logged action is 0 or 1, which IPS handles (the weight is 0 or 1/μ) as long as the
  logging policy had full support; ``soften`` > 0 evaluates the ε-softened policy
  (1 − soften)·greedy + soften·uniform instead, a different (exploring) policy.

Only the first slate position is modelled (k = 1): the probability that the candidate
puts a at the top of its slate. See docs/ope.md for what that means for slates.

Direct models for DR give q̂(s, a) for every item (``[B, I]``):

* :class:`AdditiveRewardModel` (default): r̂(u, a) = μ + b_u + b_a, fitted by ridge-shrunk
  alternating means on the logged rewards (cross-fitted by :func:`direct_values`). It
  models the *immediate* reward, so for the Return it is only a control variate.
* :class:`CriticModel`: the candidate's own critic Q(s, a) (θ, or the α-mixture of θ's and
  β's critics). It was trained for the discounted return-to-go of the training policy, so
  for the per-decision reward it is mis-scaled; useful as a control variate for Returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Protocol

import numpy as np
import torch

from policy.mixed import MixedPolicy
from policy.types import PAD


def candidate_distribution(
    policy: MixedPolicy,
    histories: np.ndarray,
    user_ids: np.ndarray | None = None,
    *,
    explore: bool = True,
    soften: float = 0.0,
) -> np.ndarray:
    """[B, I] float64: the probability that ``policy`` puts each item first, per row of
    ``histories`` ([B, L] int64 right-aligned, ``PAD``-padded; longer than the policy's
    ``max_len`` is fine, the encoder reads the most recent items but the history mask
    uses all of them, as in the simulators)."""
    if not 0.0 <= soften <= 1.0:
        raise ValueError(f"soften must lie in [0, 1], got {soften}")
    hist = np.asarray(histories, dtype=np.int64)
    if hist.ndim != 2:
        raise ValueError(f"histories must be [B, L], got {hist.shape}")
    ml = policy.config.max_len
    enc = hist[:, -ml:] if hist.shape[1] >= ml else np.concatenate(
        [np.full((len(hist), ml - hist.shape[1]), PAD, dtype=np.int64), hist], axis=1)
    mix = policy.probs(enc, user_ids)
    b, n = mix.shape
    allowed = np.ones((b, n), dtype=bool)
    how = policy.exploration
    if how.mask_history:
        rows, cols = np.nonzero(hist >= 0)
        allowed[rows, hist[rows, cols]] = False
        allowed[allowed.sum(axis=1) == 0] = True
    strategy = how.strategy if explore else "greedy"
    if strategy == "epsilon" and how.epsilon <= 0.0:
        strategy = "greedy"
    counts = allowed.sum(axis=1, keepdims=True).astype(np.float64)
    if strategy == "categorical":
        masked = np.where(allowed, mix, 0.0)
        total = masked.sum(axis=1, keepdims=True)
        dead = total[:, 0] <= 0.0
        if dead.any():
            masked[dead] = allowed[dead].astype(np.float64)
            total[dead] = counts[dead]
        return masked / total
    best = np.argmax(np.where(allowed, mix, -np.inf), axis=1)  # ties → lower id, as greedy
    onehot = np.zeros((b, n))
    onehot[np.arange(b), best] = 1.0
    eps = how.epsilon if strategy == "epsilon" else soften
    return (1.0 - eps) * onehot + eps * allowed / counts


class DirectModel(Protocol):
    """q̂(s, a) for every item."""

    def predict(self, histories: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
        """[B, I] predicted values for the rows."""
        ...


class AdditiveRewardModel:
    """r̂(u, a) = μ + b_u + b_a with ridge shrinkage ``lam`` (a pseudo-count of μ).

    Fitted from logged (user, action, reward) only; users or items never logged get 0
    offsets. A handful of alternating passes converge for this additive model."""

    def __init__(self, num_items: int, *, lam: float = 5.0, passes: int = 5) -> None:
        self.num_items = int(num_items)
        self.lam = float(lam)
        self.passes = int(passes)
        self.mu = 0.0
        self.item_bias = np.zeros(self.num_items)
        self.user_bias: dict[int, float] = {}

    def fit(self, user_ids: np.ndarray, actions: np.ndarray, rewards: np.ndarray
            ) -> AdditiveRewardModel:
        """Fit on logged decisions; returns self."""
        u = np.asarray(user_ids, dtype=np.int64)
        a = np.asarray(actions, dtype=np.int64)
        r = np.asarray(rewards, dtype=np.float64)
        if len(r) == 0:
            return self
        self.mu = float(r.mean())
        uniq, ui = np.unique(u, return_inverse=True)
        bu = np.zeros(len(uniq))
        bi = np.zeros(self.num_items)
        n_u = np.bincount(ui, minlength=len(uniq))
        n_i = np.bincount(a, minlength=self.num_items)
        for _ in range(self.passes):
            res = r - self.mu - bu[ui]
            bi = np.bincount(a, weights=res, minlength=self.num_items) / (n_i + self.lam)
            res = r - self.mu - bi[a]
            bu = np.bincount(ui, weights=res, minlength=len(uniq)) / (n_u + self.lam)
        self.item_bias = bi
        self.user_bias = dict(zip(uniq.tolist(), bu.tolist(), strict=True))
        return self

    def predict(self, histories: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
        """[B, I]."""
        bu = np.asarray([self.user_bias.get(int(x), 0.0) for x in np.asarray(user_ids)])
        return self.mu + bu[:, None] + self.item_bias[None, :]


class CriticModel:
    """The candidate's critic: Q_θ(s, ·), or (1 − α)·Q_θ + α·Q_β for scheme ``ap``."""

    def __init__(self, policy: MixedPolicy) -> None:
        self.policy = policy

    def predict(self, histories: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
        """[B, I]."""
        p = self.policy
        ml = p.config.max_len
        hist = np.asarray(histories, dtype=np.int64)[:, -ml:]
        if hist.shape[1] < ml:
            hist = np.concatenate(
                [np.full((len(hist), ml - hist.shape[1]), PAD, dtype=np.int64), hist], axis=1)
        h = torch.as_tensor(hist)
        users = (torch.as_tensor(np.asarray(user_ids, dtype=np.int64))
                 if p.config.num_users > 0 else None)
        with torch.no_grad():
            q = p.theta.critic(p.theta.encode(h, users)).double()
            if p.beta is not None:
                qb = p.beta.critic(p.beta.encode(h, users)).double()
                q = (1.0 - p.alpha) * q + p.alpha * qb
        return np.asarray(q.numpy())


def greedy_variant(policy: MixedPolicy, epsilon: float) -> MixedPolicy:
    """The same networks acting ε-greedily (``epsilon`` = 0: greedy)."""
    out = MixedPolicy(policy.theta, policy.beta, alpha=policy.alpha, scheme=policy.scheme,
                      version=policy.version, metadata=policy.metadata, head=policy.head,
                      q_temperature=policy.q_temperature,
                      exploration=replace(policy.exploration, strategy="epsilon",
                                          epsilon=float(epsilon)),
                      beta_pool=policy.beta_pool)
    return out


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def target_and_direct(
    policy: MixedPolicy,
    histories: np.ndarray,
    user_ids: np.ndarray,
    actions: np.ndarray,
    *,
    direct: DirectModel | None = None,
    explore: bool = True,
    soften: float = 0.0,
    batch: int = 512,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Per logged row: π(a_i|s_i), and with ``direct`` q̂(s_i, a_i) and
    v̂(s_i) = Σ_a π(a|s_i) q̂(s_i, a); computed ``batch`` rows at a time."""
    n = len(actions)
    a = np.asarray(actions, dtype=np.int64)
    if n and (a.min() < 0 or a.max() >= policy.num_items):
        bad = int(a[(a < 0) | (a >= policy.num_items)][0])
        raise ValueError(f"logged action {bad} is outside the candidate's catalogue "
                         f"[0, {policy.num_items})")
    pi = np.empty(n)
    q = np.empty(n) if direct is not None else None
    v = np.empty(n) if direct is not None else None
    for sl in _chunks(n, batch):
        dist = candidate_distribution(policy, histories[sl], user_ids[sl], explore=explore,
                                      soften=soften)
        rows = np.arange(sl.stop - sl.start)
        pi[sl] = dist[rows, a[sl]]
        if direct is not None and q is not None and v is not None:
            qa = direct.predict(histories[sl], user_ids[sl])
            q[sl] = qa[rows, a[sl]]
            v[sl] = (dist * qa).sum(axis=1)
    return pi, q, v


def fit_cross_direct(
    num_items: int, user_ids: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
    groups: np.ndarray, *, folds: int = 2, seed: int = 0,
) -> list[tuple[np.ndarray, AdditiveRewardModel]]:
    """Cross-fitting: ``folds`` (row mask, model fitted on the other folds) pairs, folds
    drawn by group so that one episode (or user) is never on both sides."""
    g = np.asarray(groups)
    uniq = np.unique(g)
    fold_of = dict(zip(uniq.tolist(),
                       np.random.default_rng(seed).integers(0, folds, len(uniq)).tolist(),
                       strict=True))
    f = np.asarray([fold_of[x] for x in g.tolist()])
    out = []
    for k in range(folds):
        rows = f == k
        model = AdditiveRewardModel(num_items).fit(user_ids[~rows], actions[~rows],
                                                   rewards[~rows])
        out.append((rows, model))
    return out


def target_and_cross_direct(
    policy: MixedPolicy,
    histories: np.ndarray,
    user_ids: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    groups: np.ndarray,
    *,
    direct: str = "reward-model",
    explore: bool = True,
    soften: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """π(a_i|s_i), q̂_i and v̂_i for every logged row with the direct model ``direct``:
    ``reward-model`` (cross-fitted :class:`AdditiveRewardModel`) or ``critic``."""
    n = len(actions)
    if direct == "critic":
        pi, q, v = target_and_direct(policy, histories, user_ids, actions,
                                     direct=CriticModel(policy), explore=explore,
                                     soften=soften)
        assert q is not None and v is not None
        return pi, q, v
    if direct != "reward-model":
        raise ValueError(f"unknown direct model {direct!r}: choose reward-model or critic")
    pi, q, v = np.empty(n), np.empty(n), np.empty(n)
    for rows, model in fit_cross_direct(policy.num_items, user_ids, actions, rewards, groups,
                                        seed=seed):
        idx = np.flatnonzero(rows)
        if not len(idx):
            continue
        p_k, q_k, v_k = target_and_direct(policy, histories[idx], user_ids[idx],
                                          actions[idx], direct=model, explore=explore,
                                          soften=soften)
        assert q_k is not None and v_k is not None
        pi[idx], q[idx], v[idx] = p_k, q_k, v_k
    return pi, q, v
