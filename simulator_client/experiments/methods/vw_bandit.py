"""Contextual-bandit peer: Vowpal Wabbit ``cb_explore_adf`` on the runner's environments.

What a practitioner would deploy instead of a reinforcement-learning recommender: a
contextual bandit that learns the immediate reward of each (state, item) pair and explores
with ε-greedy or SquareCB. It sees the same state as the learned methods — the user id and
the recent history — and steps the same environments through ``run_experiment`` as method
``vw-bandit``.

Each decision is one VW multi-line example:

* shared context: ``|u`` the user id, ``|r`` the mean item vector of the last
  ``recent`` history items, ``|l`` the last history item's vector (both absent for an
  empty history);
* one action line per candidate item: ``|i`` the item id, ``|f`` its item vector;
* quadratic interactions (default ``uf rf lf``) let the linear cost model score how an
  item's features fit the user and how close they are to what was just seen.

Item vectors are the operator's item features (``policy.item_features``: standardised
log-popularity and co-occurrence embeddings counted on the *training* users' logs, the
same features the learned methods get), never the simulators' user-model embeddings or
``env.item_vectors``. Dense vectors wider than ``project_dims`` are projected by PCA; the
log-popularity is also given alone (``|p``), so the linear model can learn a popularity
bias. Catalogues up to ``max_candidates`` items offer every item at every decision; larger
ones offer a bounded candidate set (the items most popular in the training logs, the
nearest neighbours of the last history item in feature space, and uniform random fill).

The cost VW minimises is ``−reward`` (plus ``leave_penalty`` when the user quit), logged
with the probability of the chosen action in the explored distribution. Only the chosen
action is sent to ``learn``: with the ``mtr`` cost estimator (the default) VW trains on
that action alone, so the other lines would be parsed for nothing.

Action lines are parsed into VW examples once and reused at every decision; only the
shared line is parsed per decision, which makes a Coat decision (300 actions) about a
millisecond.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from policy.item_features import ItemFeatures
from policy.settings import settings_from
from policy.types import PAD
from simulator_client.envs.base import RecBatchEnv
from simulator_client.experiments.context import MethodContext, register_method
from trainer.agents import EvalActor, StepBatch

METHOD_NAME = "vw-bandit"


@dataclass(frozen=True)
class VWBanditConfig:
    """Settings of the VW contextual bandit (``--hyper '{"vw-bandit": {...}}'``)."""

    exploration: Literal["epsilon", "squarecb"] = "epsilon"
    """``epsilon``: best action w.p. 1−ε, else uniform over the candidates; ``squarecb``:
    inverse-gap weighting of the predicted costs (``--squarecb``)."""
    epsilon: float = 0.05
    """ε of ε-greedy exploration."""
    gamma_scale: float = 10.0
    """SquareCB's γ scale (larger: greedier)."""
    learning_rate: float = 0.5
    """VW's ``-l`` (online gradient step size)."""
    cb_type: Literal["mtr", "ips", "dr"] = "mtr"
    """Cost estimator of ``cb_adf``. ``mtr`` learns from the chosen action alone; with
    ``ips`` and ``dr`` every candidate line is sent to ``learn`` (slower)."""
    bits: int = 20
    """Hash table size, ``-b`` (2^bits weights)."""
    interactions: tuple[str, ...] = ("uf", "rf", "lf")
    """Quadratic namespace pairs: u user id, r recent mean vector, l last item vector,
    i item id, f item vector, p item log-popularity."""
    recent: int = 10
    """History items averaged into the ``|r`` context."""
    project_dims: int = 16
    """Dense item vectors wider than this are projected by PCA to this many dimensions;
    sparse ones (at most half the entries non-zero, such as Coat's one-hot features) are
    kept as they are."""
    max_candidates: int = 300
    """Catalogues up to this size offer every item; larger ones offer this many."""
    popular_share: float = 0.25
    """Share of a bounded candidate set taken by the most popular training items."""
    similar_share: float = 0.375
    """Share taken by the nearest neighbours (cosine of item vectors) of the last history
    item; the rest is uniform random items."""
    mask_history: bool = False
    """Never offer items already in the user's history (also on when the experiment's
    ``OnlineConfig.mask_history`` is set)."""
    leave_penalty: float = 0.0
    """Added to the cost when the user quits after the action (0: the pure bandit, which
    sees only the immediate rating)."""
    eval_greedy: bool = True
    """Evaluate with the greedy action (highest probability of the explored
    distribution, i.e. the lowest predicted cost); False samples as in training."""

    def __post_init__(self) -> None:
        if self.exploration not in ("epsilon", "squarecb"):
            raise ValueError(f"exploration must be 'epsilon' or 'squarecb', not "
                             f"{self.exploration!r}")
        if self.cb_type not in ("mtr", "ips", "dr"):
            raise ValueError(f"cb_type must be 'mtr', 'ips' or 'dr', not {self.cb_type!r}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError("epsilon must lie in [0, 1]")
        if self.max_candidates < 2 or self.recent < 1 or self.project_dims < 1:
            raise ValueError("max_candidates must be >= 2, recent and project_dims >= 1")
        if not (self.popular_share >= 0.0 and self.similar_share >= 0.0
                and self.popular_share + self.similar_share <= 1.0):
            raise ValueError("popular_share and similar_share must be >= 0 and sum to <= 1")
        valid = set("urlifp")
        for pair in self.interactions:
            if len(pair) != 2 or not set(pair) <= valid:
                raise ValueError(f"interaction {pair!r} must be two of the namespaces 'urlifp'")

    @classmethod
    def from_hyper(cls, hyper: dict[str, Any]) -> VWBanditConfig:
        """Build from a ``--hyper`` dictionary, refusing unknown keys."""
        values = dict(hyper)
        if "interactions" in values:
            values["interactions"] = tuple(values["interactions"])
        return settings_from(cls, values, METHOD_NAME)

    def vw_args(self, seed: int) -> str:
        """The VW command line of a fresh learner."""
        explore = (
            f"--epsilon {self.epsilon}"
            if self.exploration == "epsilon"
            else f"--squarecb --gamma_scale {self.gamma_scale}"
        )
        pairs = " ".join(f"--interactions {p}" for p in self.interactions)
        return (
            f"--cb_explore_adf {explore} --cb_type {self.cb_type} -b {self.bits} "
            f"-l {self.learning_rate} {pairs} --random_seed {seed} --quiet"
        )


def item_features(vectors: np.ndarray | None, project_dims: int) -> np.ndarray | None:
    """Item vectors as VW features: kept when sparse or narrow, else PCA-projected and
    scaled to unit mean norm (so learning rates transfer between environments)."""
    if vectors is None:
        return None
    v = np.asarray(vectors, dtype=np.float64)
    dense = np.count_nonzero(v) > 0.5 * v.size
    if dense and v.shape[1] > project_dims:
        centred = v - v.mean(axis=0)
        # Principal axes from the small [d, d] covariance (cheap for thousands of items);
        # each axis's sign is fixed so that runs agree bit for bit.
        _, vecs = np.linalg.eigh(centred.T @ centred)
        comps = vecs[:, ::-1][:, :project_dims].T.copy()
        comps *= np.where(comps[np.arange(len(comps)), np.abs(comps).argmax(1)] < 0, -1, 1)[
            :, None
        ]
        v = centred @ comps.T
        v /= max(float(np.linalg.norm(v, axis=1).mean()), 1e-12)
    return v.astype(np.float32)


def _features(ns: str, values: np.ndarray) -> str:
    """``|ns 0:0.25 3:1`` (zeros omitted; VW drops them anyway)."""
    nz = np.flatnonzero(values)
    return f"|{ns} " + " ".join(f"{j}:{values[j]:.5g}" for j in nz.tolist())


def nearest_neighbours(vectors: np.ndarray, k: int, chunk: int = 512) -> np.ndarray:
    """[I, k] most cosine-similar other items of each item (ties: lower id first)."""
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    n = len(v)
    k = min(k, n - 1)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):
        sim = v[start : start + chunk] @ v.T
        rows = np.arange(len(sim))
        sim[rows, start + rows] = -np.inf
        # Partition to the k + 1 best, then order them by (−similarity, id); the extra
        # one makes ties at the boundary visible to the ordering.
        top = np.argpartition(-sim, min(k, n - 1), axis=1)[:, : k + 1]
        top_sim = np.take_along_axis(sim, top, axis=1)
        order = np.lexsort((top, -top_sim), axis=1)[:, :k]
        out[start : start + len(sim)] = np.take_along_axis(top, order, axis=1)
    return out


class _Scorer:
    """One VW workspace with its pre-parsed action examples."""

    def __init__(self, args: str, action_lines: list[str]) -> None:
        import vowpalwabbit as vw

        self._vw = vw
        self.ws = vw.Workspace(args)
        label = vw.LabelType.CONTEXTUAL_BANDIT
        self.actions = [vw.Example(self.ws, line, labelType=label) for line in action_lines]

    def pmf(self, shared: str, candidates: np.ndarray) -> np.ndarray:
        """Explored distribution over ``candidates`` given the shared context line."""
        shared_ex = self._vw.Example(
            self.ws, shared, labelType=self._vw.LabelType.CONTEXTUAL_BANDIT
        )
        pred = self.ws.predict([shared_ex, *(self.actions[i] for i in candidates.tolist())])
        p = np.asarray(pred, dtype=np.float64)
        return p / p.sum()


class VWBanditAgent:
    """``Agent`` running a VW ``cb_explore_adf`` learner (one decision per user).

    It has no ``ranking_scores``: a prediction is the explored distribution over the
    offered candidates (under ε-greedy the best one above a flat rest), not a score per
    item, and large catalogues offer only a bounded candidate set, so it has no cheap
    ranking of the whole catalogue (the runner records no next-item ranking for it)."""

    def __init__(
        self,
        env: RecBatchEnv,
        config: VWBanditConfig | None = None,
        *,
        seed: int = 0,
        name: str = METHOD_NAME,
        features: ItemFeatures | None = None,
    ) -> None:
        self.name = name
        self.config = config or VWBanditConfig()
        self.num_items = env.num_items
        self.seed = seed
        self._args = self.config.vw_args(seed)
        if features is None:
            from simulator_client.item_features import ItemFeatureConfig, features_for

            # The operator's features, from the training users' logs (cached).
            features = features_for(env, ItemFeatureConfig())
        if features.num_items != self.num_items:
            raise ValueError(f"item features cover {features.num_items} items, the "
                             f"environment {self.num_items}")
        self._feat = item_features(features.matrix, self.config.project_dims)
        self._pop = np.asarray(features.prior, dtype=np.float64)
        self._action_lines = [self._action_line(i) for i in range(self.num_items)]
        self._scorer = _Scorer(self._args, self._action_lines)
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, 29]))
        self.updates = 0
        self.decisions = 0
        cfg = self.config
        self._bounded = self.num_items > cfg.max_candidates
        self._all = np.arange(self.num_items)
        if self._bounded:
            n_pop = int(cfg.popular_share * cfg.max_candidates)
            n_sim = int(cfg.similar_share * cfg.max_candidates)
            # Most popular in the training logs (the prior is monotone in the counts).
            self._popular = np.argsort(-self._pop, kind="stable")[:n_pop]
            self._neighbours = (
                nearest_neighbours(self._feat, n_sim)
                if self._feat is not None and n_sim > 0
                else np.zeros((self.num_items, 0), dtype=np.int64)
            )
        # Candidate set offered to each row at the last act() (ips/dr learn on it).
        self._offered: list[np.ndarray] = []

    # -- features ------------------------------------------------------------------------
    def _action_line(self, item: int) -> str:
        line = f"|i i{item} |p pop:{self._pop[item]:.5g}"
        if self._feat is not None:
            line += " " + _features("f", self._feat[item])
        return line

    def shared_line(self, history: np.ndarray, user: int) -> str:
        """The shared context of one decision (history: [W], PAD-padded)."""
        items = history[history != PAD]
        line = f"shared |u u{user}"
        if self._feat is not None and len(items):
            recent = self._feat[items[-self.config.recent :]].mean(axis=0)
            line += " " + _features("r", recent) + " " + _features("l", self._feat[items[-1]])
        return line

    def candidates(
        self, history: np.ndarray, rng: np.random.Generator, *, mask: bool
    ) -> np.ndarray:
        """Items offered at one decision, sorted by id (the whole catalogue when small)."""
        items = history[history != PAD]
        if not self._bounded:
            cand = self._all
        else:
            parts = [self._popular]
            if len(items) and self._neighbours.shape[1]:
                parts.append(self._neighbours[items[-1]])
            cand = np.unique(np.concatenate(parts))
            missing = self.config.max_candidates - len(cand)
            if missing > 0:
                # Draw a few extra so that duplicates rarely leave the set short.
                extra = rng.choice(self.num_items, size=min(self.num_items, 2 * missing),
                                   replace=False)
                extra = extra[~np.isin(extra, cand)][:missing]
                cand = np.sort(np.concatenate([cand, extra]))
        if mask and len(items):
            kept = cand[~np.isin(cand, items)]
            if len(kept):
                cand = kept
        return cand

    # -- Agent protocol ----------------------------------------------------------------
    def act(
        self, histories: np.ndarray, user_ids: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Explored actions and their probabilities in the explored distribution."""
        n = len(histories)
        actions = np.empty(n, dtype=np.int64)
        props = np.empty(n, dtype=np.float64)
        self._offered = []
        for b in range(n):
            cand = self.candidates(histories[b], self._rng, mask=self.config.mask_history)
            p = self._scorer.pmf(self.shared_line(histories[b], int(user_ids[b])), cand)
            k = int(rng.choice(len(cand), p=p))
            actions[b], props[b] = cand[k], p[k]
            self._offered.append(cand)
        self.decisions += n
        return actions, props

    def observe(self, step: StepBatch) -> dict[str, float]:
        """One VW update per transition: cost −reward (+ leave penalty) at the logged
        probability."""
        cfg = self.config
        costs = -step.rewards.astype(np.float64) + cfg.leave_penalty * step.terminated
        full = cfg.cb_type != "mtr"
        for b in range(len(step.actions)):
            a = int(step.actions[b])
            prob = max(float(step.propensities[b]), 1e-6)
            shared = self.shared_line(step.histories[b], int(step.user_ids[b]))
            label = f"0:{costs[b]:.6g}:{prob:.6g} "
            slot = int(step.slots[b])
            if full and slot < len(self._offered) and a in self._offered[slot]:
                # ips/dr learn from every line offered at the decision.
                cand = self._offered[slot]
                lines = [label + self._action_lines[i] if i == a else self._action_lines[i]
                         for i in cand.tolist()]
            else:
                lines = [label + self._action_lines[a]]
            self._scorer.ws.learn([shared, *lines])
            self.updates += 1
        if not len(step.actions):
            return {}
        return {"cost": float(costs.mean())}

    def evaluator(self) -> EvalActor:
        """A frozen copy of the current model (saved and reloaded), acting greedily unless
        ``eval_greedy`` is off."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.vw"
            self._scorer.ws.save(str(path))
            scorer = _Scorer(f"-i {path} --quiet", self._action_lines)
        greedy = self.config.eval_greedy
        mask = self.config.mask_history
        cand_rng = np.random.default_rng(np.random.SeedSequence([self.seed, 31]))
        last: dict[str, np.ndarray] = {}

        def act(
            histories: np.ndarray, user_ids: np.ndarray, rng: np.random.Generator
        ) -> np.ndarray:
            out = np.empty(len(histories), dtype=np.int64)
            same = np.zeros(len(histories), dtype=bool)
            if greedy and last and last["h"].shape == histories.shape:
                # The evaluation loop keeps asking about users whose episode is over;
                # their state is unchanged and the greedy answer too, so reuse it.
                same = (last["h"] == histories).all(axis=1) & (last["u"] == user_ids)
                out[same] = last["a"][same]
            for b in np.flatnonzero(~same).tolist():
                cand = self.candidates(histories[b], cand_rng, mask=mask)
                p = scorer.pmf(self.shared_line(histories[b], int(user_ids[b])), cand)
                k = int(np.argmax(p)) if greedy else int(rng.choice(len(cand), p=p))
                out[b] = cand[k]
            last.update(h=histories.copy(), u=np.asarray(user_ids).copy(), a=out.copy())
            return out

        return act

    def settings(self) -> dict[str, Any]:
        """The configuration and VW command line (for reports)."""
        return {**asdict(self.config), "vw_args": self._args, "bounded": self._bounded}


def make_vw_bandit_agent(ctx: MethodContext) -> VWBanditAgent:
    """Method factory for ``vw-bandit``: settings from ``ctx.hyper``; the experiment's
    ``mask_history`` switch applies as it does to the learned methods. Its item features
    are the experiment's (with ``--items id``: the default kinds, from the same logs)."""
    config = VWBanditConfig.from_hyper(ctx.hyper)
    if ctx.experiment.online.mask_history and not config.mask_history:
        from dataclasses import replace

        config = replace(config, mask_history=True)
    return VWBanditAgent(ctx.train_env, config, seed=ctx.seed, features=ctx.item_features)


register_method(METHOD_NAME, make_vw_bandit_agent)
