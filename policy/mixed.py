"""The served policy: π̃ = (1 − α)·π_θ + α·π_β (eq. 14), inference only.

Schemes:

* ``none``: a plain policy π_θ (β absent, α = 0). Baselines and iALP are served this way.
* ``ft``: A-iALP_ft, θ itself is fine-tuned online; structurally the same as ``none``.
* ``ap``: A-iALP_ap, θ frozen and β learnable; both networks are held and mixed by α.

The action distribution of one network is the softmax of its actor logits (``head =
"actor"``), or a Boltzmann distribution softmax(Q / ``q_temperature``) over its critic's
Q-values (``head = "q"``, how a DQN is served; greedy over that is argmax Q).

A ``beta_pool`` (scheme ``ap`` only) restricts π_β to a set of candidate items: its
distribution is masked to the pool and renormalised after the networks, so β explores only
among those items while θ keeps the whole catalogue. The trainer's GenEE mode
(``trainer/online/genee.py``) sets it to the GenEE pool of every version it publishes.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from policy.actor_critic import ActorCritic
from policy.config import PolicyConfig
from policy.exploration import ExplorationConfig, draw_slates
from policy.types import Observation, Slate, pad_histories

SCHEMES = ("none", "ft", "ap")
HEADS = ("actor", "q")
PRECISIONS = ("auto", "float32", "bfloat16")
"""Precision of the served graphs' item-score product (:meth:`MixedPolicy.freeze_for_serving`)."""

BF16_MIN_ITEMS = 16385
"""Smallest catalogue that ``precision="auto"`` serves with a bfloat16 item-score product
(where the CPU has native bfloat16 instructions). Below it the float32 product is cheap."""


def serving_precision(requested: str, num_items: int) -> str:
    """The precision ``requested`` means for a catalogue of ``num_items`` on this machine:
    ``auto`` is ``bfloat16`` from :data:`BF16_MIN_ITEMS` items where oneDNN reports native
    bfloat16 support (there the product reads half the bytes: 100,000 items, batch 8,
    one thread, 0.5–0.8 ms against 2.8–3.9 ms), else ``float32``."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose one of "
                         f"{', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    if num_items < BF16_MIN_ITEMS:
        return "float32"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        native = False
    return "bfloat16" if native else "float32"


@dataclass(frozen=True)
class ActPlan:
    """Checked inputs of one :meth:`MixedPolicy.act_batch` call (see
    :meth:`MixedPolicy.plan`)."""

    ks: list[int]
    """Slate size per row."""
    explores: list[bool]
    """Whether each row explores (else greedy)."""
    exclude: Sequence[Sequence[int]] | None
    """Items each row must not recommend."""
    lens: np.ndarray
    """History length per row [B]."""
    flat: np.ndarray
    """Every history item, row after row [sum(lens)]."""
    how: ExplorationConfig
    """Exploration strategy of the call."""
    padded: np.ndarray
    """Network input: right-aligned histories [B, L] (PAD = -1)."""
    users: np.ndarray | None
    """Network input: user ids [B], or None."""


@dataclass(frozen=True)
class FastInputs:
    """Inputs of :meth:`MixedPolicy.sample_frozen` beside the plan."""

    banned: np.ndarray
    """Items each row must not get [B, M] (-1 pads)."""
    u: np.ndarray
    """One uniform per row [B] (float64), drawn from the caller's generator."""
    greedy: np.ndarray
    """Rows decided greedily [B] bool."""


_NONE = np.zeros(0, dtype=np.int64)


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
        beta_pool: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        """``beta_pool``: the items π_β may choose (any order, duplicates ignored), or
        ``None`` for the whole catalogue; see :attr:`beta_pool`."""
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
        # id(network) -> its scoring graph, traced and frozen (see freeze_for_serving).
        self._frozen: dict[int, torch.jit.ScriptModule] = {}
        self._sampler: torch.jit.ScriptModule | None = None  # k = 1 decisions, θ alone
        self._serving = False  # set by freeze_for_serving
        # Precision of the frozen graphs' item-score product (set by freeze_for_serving).
        self.precision = "float32"
        self._pool: np.ndarray | None = None  # sorted unique indices, or None
        self.beta_pool = beta_pool  # the setter checks it

    @property
    def beta_pool(self) -> tuple[int, ...] | None:
        """The sorted unique items π_β is restricted to, or ``None`` (the whole catalogue).

        Assigning validates (a non-empty set of catalogue indices, scheme ``ap``) and
        normalises to sorted unique indices; the restriction applies to every later call,
        so only assign to a policy nobody serves yet (publishing composes a new one)."""
        return None if self._pool is None else tuple(int(i) for i in self._pool)

    @beta_pool.setter
    def beta_pool(self, items: Sequence[int] | np.ndarray | None) -> None:
        self._pool = None if items is None else self._checked_pool(items)

    def _checked_pool(self, items: Sequence[int] | np.ndarray) -> np.ndarray:
        """``items`` as a sorted unique int64 array, or ValueError naming the problem."""
        if self.beta is None:
            raise ValueError(f"beta_pool restricts π_β, but scheme {self.scheme!r} has no "
                             "beta network (use scheme 'ap')")
        raw = np.asarray(items if isinstance(items, np.ndarray) else list(items))
        if raw.size == 0:
            raise ValueError("beta_pool is empty: give at least one item, or None for the "
                             "whole catalogue")
        # Integers only; floats that are whole numbers (e.g. read back from JSON) pass.
        integral = raw.dtype.kind in "iu" or (
            raw.dtype.kind == "f" and bool(np.all(np.isfinite(raw) & (raw == np.round(raw)))))
        if raw.ndim != 1 or not integral:
            raise ValueError("beta_pool must be a flat list of integer item indices")
        pool = np.unique(raw.astype(np.int64))
        n = self.num_items
        if pool[0] < 0 or pool[-1] >= n:
            bad = [int(i) for i in pool if not 0 <= i < n][:5]
            raise ValueError(f"beta_pool holds item(s) {bad} outside the catalogue [0, {n})")
        return pool

    def _restrict(self, p_beta: np.ndarray) -> np.ndarray:
        """π_β [B, I] masked to the pool and renormalised per row (float64).

        A row whose pool mass underflowed to 0 (extreme logits) gets the uniform
        distribution over the pool, so β still only ever draws pool items."""
        pool = self._pool
        assert pool is not None
        mass = p_beta[:, pool]  # [B, K] (a copy: fancy indexing)
        total = mass.sum(axis=1, keepdims=True)  # [B, 1]
        empty = total[:, 0] <= 0.0
        if empty.any():
            mass[empty] = 1.0
            total[empty] = float(len(pool))
        out = np.zeros(p_beta.shape, dtype=np.float64)
        out[:, pool] = mass / total
        return out

    def freeze_for_serving(self, precision: str = "float32") -> None:
        """Trace each network's scoring graph (histories → logits) and freeze it.

        ``precision`` (:data:`PRECISIONS`, resolved by :func:`serving_precision`) is that
        of the last product, state · item vectors: with ``bfloat16`` both operands are
        rounded to bfloat16 (8 significant bits) and the scores come back as float32, so
        every served draw and the propensity logged with it come from the same rounded
        distribution (docs/performance.md measures how far it lies from float32's).

        The frozen graph runs without Python between its operations, so a forward pass
        costs a fraction of the eager one's interpreter time (and leaves the interpreter
        to the service's event loop meanwhile); parameter-only work such as the item
        vectors of a factorised head is folded into constants once. Its scores equal the
        eager network's up to float rounding. Only for a policy whose weights never change
        again (a published version): the graph folds work on the weights into constants
        at freezing time, so later changes would reach it only in part."""
        self._serving = True
        resolved = serving_precision(precision, self.num_items)
        if resolved != self.precision:  # graphs traced at another precision are stale
            self._sampler = None
            self._frozen.clear()
            self.precision = resolved
        if self.beta is None:
            # θ alone: the sampler decides k = 1 calls; the scorer (other calls) is traced
            # on first use, so a new version costs one trace, not two.
            if self._sampler is None:
                self._sampler = _trace_sampler(self.theta, self.head, self.q_temperature,
                                               self.precision)
            return
        for net in (self.theta, self.beta):
            self._scorer(net)

    def _scorer(self, net: ActorCritic) -> torch.jit.ScriptModule:
        """``net``'s frozen scoring graph, traced on first use."""
        graph = self._frozen.get(id(net))
        if graph is None:
            graph = self._frozen[id(net)] = _trace_scorer(net, self.head, self.q_temperature,
                                                          self.precision)
        return graph

    def fast_inputs(self, plan: ActPlan, rng: np.random.Generator) -> FastInputs | None:
        """Inputs of :meth:`sample_frozen` for ``plan``, or ``None`` when the call needs
        the general path (no frozen sampler, β mixing, k > 1, epsilon-greedy)."""
        if self._sampler is None or any(k != 1 for k in plan.ks):
            return None
        how = plan.how
        if how.strategy == "epsilon" and how.epsilon > 0.0 and any(plan.explores):
            return None
        n = self.num_items
        rows: list[np.ndarray] = []
        starts = np.concatenate([[0], np.cumsum(plan.lens)])
        for row in range(len(plan.ks)):
            ex = (np.asarray(list(plan.exclude[row]), dtype=np.int64)
                  if plan.exclude is not None and len(plan.exclude[row]) else _NONE)
            if ex.size and (ex.min() < 0 or ex.max() >= n):
                raise ValueError(f"row {row}: exclude holds an item outside [0, {n})")
            ex = np.unique(ex)
            if how.mask_history and plan.lens[row]:
                both = np.union1d(ex, plan.flat[starts[row]:starts[row + 1]])
                # History stays recommendable only when masking it leaves nothing.
                ex = both if both.size < n else ex
            if ex.size >= n:  # the general path's message for a row with nothing left
                raise ValueError(f"row {row}: k=1 must lie in [1, 0]")
            rows.append(ex)
        width = max(1, max(r.size for r in rows))
        banned = np.full((len(rows), width), -1, dtype=np.int64)
        for row, ex in enumerate(rows):
            if ex.size:  # pad with the row's own first banned item (see _Sampler)
                banned[row] = ex[0]
                banned[row, : ex.size] = ex
        greedy = np.asarray([not e or how.strategy == "greedy" for e in plan.explores])
        return FastInputs(banned=banned, u=rng.random(len(rows)), greedy=greedy)

    @property
    def has_sampler(self) -> bool:
        """Whether k = 1 calls can be decided by the frozen sampler (θ alone, frozen)."""
        return self._sampler is not None

    def sampler_inputs(self, plan: ActPlan, fast: FastInputs) -> tuple[np.ndarray, ...]:
        """The sampler's inputs as arrays: (tokens [B, T], users [B], banned [B, M],
        u [B], greedy [B])."""
        n_users = self.config.num_users
        users = np.full(len(plan.ks), n_users, dtype=np.int64)  # unknown user
        if plan.users is not None and n_users > 0:
            users = plan.users
        tokens = self.theta.encoder.token_array(plan.padded)  # [B, T]
        return tokens, users, fast.banned, fast.u, fast.greedy

    def sample_frozen(self, plan: ActPlan,
                      fast: FastInputs) -> tuple[np.ndarray, np.ndarray, bool]:
        """The k = 1 decisions in one frozen graph (no interpreter lock while it runs):
        (items [B], propensities [B], whether every row succeeded)."""
        assert self._sampler is not None
        tensors = [torch.from_numpy(a) for a in self.sampler_inputs(plan, fast)]
        items, props, ok = self._sampler(*tensors)
        return items.numpy(), props.numpy(), bool(ok.all())

    @staticmethod
    def fast_slates(items: np.ndarray, props: np.ndarray) -> list[Slate]:
        """Slates of :meth:`sample_frozen`'s output (θ decided every item)."""
        return [Slate(items=(int(a),), propensities=(min(1.0, float(p)),),
                      sources=("theta",)) for a, p in zip(items, props, strict=True)]

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
        if self._serving:
            return self._frozen_probs(np.asarray(histories, dtype=np.int64), user_ids)
        hist = torch.as_tensor(np.asarray(histories, dtype=np.int64))
        if hist.ndim != 2:
            raise ValueError(f"histories must be [B, L], got shape {tuple(hist.shape)}")
        users = None
        if user_ids is not None and self.config.num_users > 0:
            users = torch.as_tensor(np.asarray(user_ids, dtype=np.int64))
        with torch.no_grad():
            p_theta = self._network_probs(self.theta, hist, users)
            p_beta = None if self.beta is None else self._network_probs(self.beta, hist, users)
        if self._pool is not None and p_beta is not None:
            p_beta = self._restrict(p_beta)
        return p_theta, p_beta

    def _frozen_probs(
        self, histories: np.ndarray, user_ids: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`component_probs` through the frozen graphs: one torch call per network,
        the rest numpy (every torch call lets go of the interpreter lock and must win it
        back, which costs a serving thread milliseconds while the event loop is busy)."""
        if histories.ndim != 2:
            raise ValueError(f"histories must be [B, L], got shape {histories.shape}")
        n_users = self.config.num_users
        users = np.full(histories.shape[0], n_users, dtype=np.int64)  # unknown user
        if user_ids is not None and n_users > 0:
            users = np.asarray(user_ids, dtype=np.int64)
        tokens = torch.from_numpy(self.theta.encoder.token_array(histories))  # [B, T]
        users_t = torch.from_numpy(users)
        out = []
        for net in (self.theta, self.beta):
            out.append(None if net is None else self._scorer(net)(tokens, users_t).numpy())
        assert out[0] is not None
        p_beta = out[1]
        if self._pool is not None and p_beta is not None:
            p_beta = self._restrict(p_beta)
        return out[0], p_beta

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
        if len(histories) == 0:
            return []
        plan = self.plan(histories, k=k, explore=explore, exclude=exclude,
                         user_ids=user_ids, exploration=exploration)
        p_theta, p_beta = self.component_probs(plan.padded, plan.users)
        return self.draw(plan, p_theta, p_beta, rng=rng)

    def plan(
        self,
        histories: Sequence[Sequence[int]],
        *,
        k: int | Sequence[int] = 1,
        explore: bool | Sequence[bool] = True,
        exclude: Sequence[Sequence[int]] | None = None,
        user_ids: Sequence[int] | None = None,
        exploration: ExplorationConfig | None = None,
    ) -> ActPlan:
        """Step 1 of :meth:`act_batch`: the checked inputs and the network input
        (``padded``, ``users``). Step 2 is :meth:`component_probs` on them (the only step
        that runs the networks), step 3 :meth:`draw`. A service runs step 2 off its
        event-loop thread and the cheap steps 1 and 3 on it."""
        b = len(histories)
        ks = [int(k)] * b if isinstance(k, int) else [int(x) for x in k]
        explores = [bool(explore)] * b if isinstance(explore, bool) else [bool(x) for x in explore]
        if len(ks) != b or len(explores) != b:
            raise ValueError("k and explore must be scalars or have one entry per history")
        if exclude is not None and len(exclude) != b:
            raise ValueError("exclude must have one entry per history")
        if user_ids is not None and len(user_ids) != b:
            raise ValueError("user_ids must have one entry per history")
        n = self.num_items
        # Every history item as (row, item), flattened once: range checks and the history
        # mask are array operations, not per-item Python.
        lens = np.fromiter((len(h) for h in histories), dtype=np.int64, count=b)
        flat = np.fromiter(itertools.chain.from_iterable(histories), dtype=np.int64,
                           count=int(lens.sum()))
        if flat.size and (flat.min() < 0 or flat.max() >= n):
            for row, hist in enumerate(histories):
                for item in hist:
                    if not 0 <= int(item) < n:
                        raise ValueError(f"row {row}: history item {item} outside [0, {n})")
        return ActPlan(
            ks=ks, explores=explores, exclude=exclude, lens=lens, flat=flat,
            how=exploration or self.exploration,
            padded=pad_histories(histories, self.config.max_len),  # [B, L]
            users=None if user_ids is None else np.asarray(user_ids, dtype=np.int64))

    def draw(
        self,
        plan: ActPlan,
        p_theta: np.ndarray,
        p_beta: np.ndarray | None,
        *,
        rng: np.random.Generator | None = None,
    ) -> list[Slate]:
        """Step 3 of :meth:`act_batch`: the slates from the networks' probabilities."""
        rng = rng if rng is not None else self._rng
        ks, explores, how, exclude = plan.ks, plan.explores, plan.how, plan.exclude
        b, n = len(ks), self.num_items
        mix = p_theta if p_beta is None else (1.0 - self.alpha) * p_theta + self.alpha * p_beta

        allowed = np.ones((b, n), dtype=bool)
        if exclude is not None:
            for row in range(b):
                if len(exclude[row]):
                    ex = np.asarray(list(exclude[row]), dtype=np.int64)
                    if ex.min() < 0 or ex.max() >= n:
                        raise ValueError(f"row {row}: exclude holds an item outside [0, {n})")
                    allowed[row, ex] = False
        counts = allowed.sum(axis=1)  # [B]
        k_arr = np.asarray(ks)
        bad = np.flatnonzero((k_arr < 1) | (k_arr > counts))
        if bad.size:
            row = int(bad[0])
            raise ValueError(f"row {row}: k={ks[row]} must lie in [1, {int(counts[row])}]")
        if how.mask_history and plan.flat.size:
            rows_of = np.repeat(np.arange(b), plan.lens)
            without = allowed.copy()
            without[rows_of, plan.flat] = False
            # A row keeps its history items only when masking them leaves fewer than k.
            keep = without.sum(axis=1) >= k_arr
            allowed[keep] = without[keep]

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
        pool = "" if self._pool is None else f", beta_pool={len(self._pool)} items"
        return (
            f"MixedPolicy(version={self.version}, scheme={self.scheme!r}, alpha={self.alpha}, "
            f"head={self.head!r}, items={self.num_items}{pool})"
        )


class _Scorer(torch.nn.Module):
    """tokens [B, T], users [B] → probabilities [B, I] of one head (the graph that is
    traced).

    The head's last step, one score per item, is taken apart: the item vectors are
    stored transposed and contiguous, with the biases as one more row ([H + 1, I]), so
    the product streams the catalogue in memory order and adds the biases in the same
    pass (on 100,000 items, one thread: 1.9 ms against 3.2 ms for the Linear layer's
    [I, H] weight read through a transpose, plus a separate bias pass).

    The ``bfloat16`` variant stores the same rows item-major instead ([I, H + 1]): with
    bfloat16 operands oneDNN's product over that layout was the faster one (100,000 items,
    batch 8: 0.53–0.58 ms against 0.67 ms), while float32's is the other way round."""

    vec_t: torch.Tensor

    def __init__(self, net: ActorCritic, head: str, q_temperature: float,
                 precision: str = "float32") -> None:
        super().__init__()
        self.net = net
        self.head = head
        self.q_temperature = q_temperature
        part = net.actor if head == "actor" else net.critic
        self.query: torch.nn.Module = net.actor.proj if head == "actor" else net.critic.mlp
        with torch.no_grad():
            vec, bias = part.score.item_vectors()  # [I, H], [I]
            # The biases as one more row, met by a constant 1 in the query: one pass
            # over the [B, I] output instead of two (a frozen addmm becomes mm + add).
            rows = torch.cat([vec.detach().T, bias.detach()[None]])  # [H + 1, I]
            self.bf16 = precision == "bfloat16"
            self.register_buffer("vec_t", rows.T.contiguous().to(torch.bfloat16)
                                 if self.bf16 else rows.contiguous())  # [I, H + 1] | [H + 1, I]

    def scores(self, tokens: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """Actor logits, or Q / temperature, of the newest state [B, I]."""
        state = self.net.encoder.from_tokens(tokens, users, last_only=True)  # [B, H]
        query = self.query(state)  # [B, H]
        ones = torch.ones_like(query[:, :1])  # [B, 1]
        full = torch.cat([query, ones], dim=1)  # [B, H + 1]
        if self.bf16:
            scores = torch.nn.functional.linear(full.to(torch.bfloat16), self.vec_t).float()
        else:
            scores = full @ self.vec_t  # [B, I]
        if self.head == "actor":
            return scores
        return scores / self.q_temperature

    def forward(self, tokens: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.scores(tokens, users).double(), dim=-1)  # [B, I] float64


class _Sampler(_Scorer):
    """The whole k = 1 decision of one network in one graph (traced): probabilities over
    the allowed items, then the item (inverse CDF at ``u``, or the argmax for greedy rows)
    and its propensity.

    ``banned`` [B, M] holds the items a row must not get (-1 pads); ``u`` [B] uniforms in
    [0, 1); ``greedy`` [B] bool. Returns (items [B], propensities [B], ok [B]); ``ok`` is
    False where the allowed mass underflowed or float rounding left the pick on an item
    without mass (the caller then takes the general path).

    Above ``_DIRECT_MAX`` items every pass over the [B, I] scores is a vectorised one
    (:func:`_blocked_picks`): a cumulative sum or an argmax along a whole row runs
    element by element, and on 100,000 items these two cost more than the head's matrix
    product. The picks equal the whole-row ones (first item whose cumulative mass exceeds
    u·total; first maximal item) up to float rounding."""

    def forward(  # type: ignore[override]
        self, tokens: torch.Tensor, users: torch.Tensor, banned: torch.Tensor,
        u: torch.Tensor, greedy: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scores = self.scores(tokens, users)  # [B, I]
        n = int(scores.shape[1])  # the catalogue size: a constant of this graph
        # Banned items to -inf in place (the scores are this graph's own tensor).
        # `banned` pads a row with its own first banned item (or, in a row with none,
        # with -1: column 0 rewritten with its own score), so every write of a row is
        # either -inf to a banned item or a no-op.
        idx = banned.clamp(min=0)  # [B, M]
        src = torch.where(banned < 0, scores.gather(1, idx),
                          torch.full_like(idx, 0, dtype=scores.dtype) - float("inf"))
        scores.scatter_(1, idx, src)
        if n <= _DIRECT_MAX:  # whole-row passes: fewer operations, cheaper when small
            # Unnormalised weights exp(s - max) (banned → 0); the normaliser is the last
            # cumulative value.
            top, best = scores.max(dim=1)  # [B]
            probs = scores.sub_(top.unsqueeze(1)).exp_()  # [B, I] in place
            cum = probs.cumsum(dim=1)  # [B, I]
            total = cum[:, -1]  # [B]
            x = (u.to(probs.dtype) * total).unsqueeze(1)  # [B, 1]
            pick = torch.searchsorted(cum, x, right=True).squeeze(1)  # [B]
        else:
            best, pick, total, probs = _blocked_picks(scores, u, min(_BLOCK, n))
        item = torch.where(greedy, best, pick)
        valid = item < n
        p_item = probs.gather(1, item.clamp(max=n - 1).unsqueeze(1)).squeeze(1)  # [B]
        prop = torch.where(greedy, torch.ones_like(total, dtype=torch.float64),
                           p_item.double() / total.double())
        return item.clamp(max=n - 1), prop, valid & (total > 0) & (p_item > 0)


_BLOCK = 1024
"""Items per block of :class:`_Sampler`'s two-level passes (about √I at 1M items)."""
_DIRECT_MAX = 16384
"""Largest catalogue whose k = 1 sampler takes whole-row passes (one thread, batch 16:
at 4,606 items 1.7 ms per batch against 1.9 ms two-level; at 100,000 items the
whole-row passes cost about twice the two-level ones)."""


def _blocked_picks(scores: torch.Tensor, u: torch.Tensor, size: int,
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(greedy item [B], sampled item [B], total weight [B], weights [B, I]) in
    two-level passes over blocks of ``size`` items: the greedy item from block maxima,
    then the maximum inside its block; the weights exp(s − max) in place over ``scores``
    (consumed); the inverse CDF first finds the block (cumulative sum over block
    weights), then the item inside it (cumulative sum over that block). The sampled item
    may be ≥ I where float rounding carries the pick past the last block (the caller
    checks)."""
    n = int(scores.shape[1])
    offsets = torch.arange(size, device=scores.device)  # [K]
    block_max = _blocks(scores, size, "max")  # [B, nb]
    top, block = block_max.max(dim=1, keepdim=True)  # [B, 1]: first block with the max
    pos = block * size + offsets  # [B, K]
    seg = torch.where(pos < n, scores.gather(1, pos.clamp(max=n - 1)),
                      torch.full_like(pos, 0, dtype=scores.dtype) - float("inf"))
    best = (block * size + seg.argmax(dim=1, keepdim=True)).squeeze(1)  # [B]
    weights = scores.sub_(top).exp_()  # [B, I], banned → 0
    cum_blocks = _blocks(weights, size, "sum").cumsum(dim=1)  # [B, nb]
    total = cum_blocks[:, -1]  # [B]
    x = (u.to(weights.dtype) * total).unsqueeze(1)  # [B, 1]
    block = torch.searchsorted(cum_blocks, x, right=True).clamp(
        max=cum_blocks.shape[1] - 1)  # [B, 1]
    before = torch.where(block > 0, cum_blocks.gather(1, (block - 1).clamp(min=0)),
                         torch.zeros_like(x))  # weight of the blocks before it
    pos = block * size + offsets  # [B, K]
    seg = torch.where(pos < n, weights.gather(1, pos.clamp(max=n - 1)),
                      torch.zeros_like(pos, dtype=weights.dtype))
    inside = torch.searchsorted(seg.cumsum(dim=1), x - before, right=True)  # [B, 1]
    pick = (block * size + inside.clamp(max=size - 1)).squeeze(1)  # [B]
    return best, pick, total, weights


def _blocks(x: torch.Tensor, size: int, how: str) -> torch.Tensor:
    """Per-block max or sum of ``x`` [B, I] over consecutive blocks of ``size`` items
    (the last one may be shorter): [B, ceil(I / size)]."""
    n = int(x.shape[1])
    full = n // size * size
    body = x[:, :full].reshape(x.shape[0], full // size, size)  # [B, nb, K]
    parts = [body.amax(dim=2) if how == "max" else body.sum(dim=2)]
    if full < n:  # the shorter last block
        tail = x[:, full:]
        parts.append(tail.amax(dim=1, keepdim=True) if how == "max"
                     else tail.sum(dim=1, keepdim=True))
    return torch.cat(parts, dim=1)


def _trace_sampler(net: ActorCritic, head: str, q_temperature: float,
                   precision: str = "float32") -> torch.jit.ScriptModule:
    """The frozen TorchScript graph of :class:`_Sampler`."""
    net.eval()
    example = torch.tensor([[-1, 0, min(1, net.config.num_items - 1)], [-1, -1, 0]])
    inputs = (net.encoder.tokens(example), torch.zeros(2, dtype=torch.long),
              torch.tensor([[0, -1], [-1, -1]]), torch.tensor([0.5, 0.25], dtype=torch.float64),
              torch.tensor([False, True]))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(_Sampler(net, head, q_temperature, precision).eval(), inputs,
                                 check_trace=False)
        return torch.jit.freeze(traced)


def _trace_scorer(net: ActorCritic, head: str, q_temperature: float,
                  precision: str = "float32") -> torch.jit.ScriptModule:
    """The frozen TorchScript graph of ``net``'s action probabilities; shapes stay dynamic
    (batch size and the trimmed history length both vary between calls)."""
    net.eval()
    example = torch.tensor([[-1, 0, min(1, net.config.num_items - 1)], [-1, -1, 0]])
    tokens = net.encoder.tokens(example)  # [2, T]
    users = torch.zeros(2, dtype=torch.long)
    with torch.no_grad(), warnings.catch_warnings():
        # Tracer notes on Python-side shape arithmetic; shapes are re-read at run time.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(_Scorer(net, head, q_temperature, precision).eval(),
                                 (tokens, users),
                                 check_trace=False)
        return torch.jit.freeze(traced)
