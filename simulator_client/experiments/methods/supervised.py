"""Supervised SASRec next-item peer: what a recommender engineer would deploy offline.

Method ``sasrec`` of ``ialp experiment``: the same network as the learned methods (SASRec
encoder, factorised actor head over the operator's item features) trained *before* the
run, on the training users' logs only (``simulator_client.item_features.training_logs``),
with next-item cross-entropy: for every position t ≥ 1 of a training user's sequence, the
input is the (at most ``max_len``) items before t and the target the item at t. A tenth
of the training users is held out; the epoch with the lowest held-out loss is kept and
training stops after ``patience`` epochs without improvement (early stopping). The model
then acts greedily (top-1, history masked as for every learned method) and never learns
online: the training interactions of the run change nothing.

No reward, simulator or test user is used.

Method ``popular`` (the simplest peer): the items most often seen in the same training
logs, the most popular one not yet in the user's history first.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from policy.checkpoint import build_network
from policy.config import PolicyConfig
from policy.item_features import ItemFeatures, item_counts
from policy.mixed import MixedPolicy
from policy.settings import settings_from
from policy.types import PAD, pad_histories
from simulator_client.experiments.context import MethodContext, register_method
from trainer.agents import Agent, EvalActor, OnlineConfig, StepBatch

METHOD_NAME = "sasrec"


@dataclass(frozen=True)
class SASRecConfig:
    """Offline training of the next-item model (``--hyper '{"sasrec": {...}}'``)."""

    epochs: int = 6
    """Most passes over the training examples (the best held-out epoch is kept)."""
    patience: int = 1
    """Stop after this many epochs without a lower held-out loss."""
    batch_size: int = 256
    """Examples per Adam step."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam L2 penalty."""
    holdout: float = 0.1
    """Share of training users held out for early stopping (0: keep the last epoch)."""
    max_examples: int = 100_000
    """At most this many (history, next item) examples per epoch (a random subset)."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.max_examples < 1:
            raise ValueError("epochs, batch_size, max_examples and lr must be positive")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError("holdout must lie in [0, 1)")

    @classmethod
    def from_hyper(cls, hyper: dict[str, Any]) -> SASRecConfig:
        return settings_from(cls, hyper, METHOD_NAME)


def next_item_examples(logs: Sequence[Any], users: Sequence[int], max_len: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(histories [N, max_len] PAD-padded, user ids [N], next items [N]) of every position
    t ≥ 1 of every sequence."""
    hist: list[Sequence[int]] = []
    uids: list[int] = []
    targets: list[int] = []
    for seq, user in zip(logs, users, strict=True):
        seq = [int(i) for i in seq]
        for t in range(1, len(seq)):
            hist.append(seq[max(0, t - max_len):t])
            uids.append(int(user))
            targets.append(seq[t])
    if not targets:
        return (np.zeros((0, max_len), dtype=np.int64), np.zeros(0, dtype=np.int64),
                np.zeros(0, dtype=np.int64))
    return (pad_histories(hist, max_len), np.asarray(uids, dtype=np.int64),
            np.asarray(targets, dtype=np.int64))


def _loss(net: torch.nn.Module, h: np.ndarray, u: np.ndarray, y: np.ndarray) -> torch.Tensor:
    logits = net.actor(net.encode(torch.as_tensor(h), torch.as_tensor(u)))  # type: ignore[operator]
    return F.cross_entropy(logits, torch.as_tensor(y))


def train_sasrec(logs: Sequence[Any], users: Sequence[int],
                 policy_config: PolicyConfig, *, seed: int,
                 item_features: ItemFeatures | None = None,
                 config: SASRecConfig | None = None) -> tuple[MixedPolicy, dict[str, Any]]:
    """Train the next-item model on ``logs`` (one sequence per user of ``users``); returns
    the greedy policy and a report (losses per epoch, the epoch kept, seconds)."""
    cfg = config or SASRecConfig()
    started = time.perf_counter()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 41]))
    n_hold = round(cfg.holdout * len(logs)) if len(logs) > 1 else 0
    order = rng.permutation(len(logs))
    hold, fit = order[:n_hold], order[n_hold:]
    h, u, y = next_item_examples([logs[i] for i in fit], [users[i] for i in fit],
                                 policy_config.max_len)
    hv, uv, yv = next_item_examples([logs[i] for i in hold], [users[i] for i in hold],
                                    policy_config.max_len)
    if not len(y):
        raise ValueError("the training logs hold no (history, next item) pair")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(policy_config, seed=seed, item_features=item_features)
        opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=cfg.lr,
                               weight_decay=cfg.weight_decay)
        best_state, best_loss, best_epoch = copy.deepcopy(net.state_dict()), np.inf, 0
        epochs: list[dict[str, float]] = []
        for epoch in range(1, cfg.epochs + 1):
            net.train()
            idx = rng.permutation(len(y))[: cfg.max_examples]
            train_losses = []
            for start in range(0, len(idx), cfg.batch_size):
                b = idx[start:start + cfg.batch_size]
                loss = _loss(net, h[b], u[b], y[b])
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
                opt.step()
                train_losses.append(float(loss.detach()))
            net.eval()
            with torch.no_grad():
                held = [float(_loss(net, hv[s:s + 1024], uv[s:s + 1024], yv[s:s + 1024]))
                        * len(yv[s:s + 1024]) for s in range(0, len(yv), 1024)]
            val = sum(held) / len(yv) if len(yv) else float(np.mean(train_losses))
            epochs.append({"epoch": epoch, "train_loss": float(np.mean(train_losses)),
                           "holdout_loss": val})
            if val < best_loss:
                best_state, best_loss, best_epoch = copy.deepcopy(net.state_dict()), val, epoch
            elif len(yv) and epoch - best_epoch >= cfg.patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    report = {"examples": len(y), "holdout_examples": len(yv), "epochs": epochs,
              "best_epoch": best_epoch, "best_holdout_loss": float(best_loss),
              "seconds": time.perf_counter() - started, "config": asdict(cfg)}
    policy = MixedPolicy(net, version=0, metadata={"trained": "supervised next-item"},
                         seed=seed)
    return policy, report


class SupervisedAgent:
    """Acts greedily with a fixed, offline-trained policy; learns nothing online."""

    def __init__(self, name: str, policy: MixedPolicy, config: OnlineConfig,
                 report: dict[str, Any]) -> None:
        from dataclasses import replace

        self.name = name
        self.policy = policy
        self.updates = 0
        self._report = report
        if config.mask_history:
            policy.exploration = replace(policy.exploration, mask_history=True)

    def act(self, histories: np.ndarray, user_ids: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
        return self.policy.act_arrays(histories, user_ids, explore=False, rng=rng)

    def observe(self, step: StepBatch) -> dict[str, float]:
        return {}

    def snapshot(self) -> MixedPolicy:
        return self.policy

    def evaluator(self) -> EvalActor:
        def act(histories: np.ndarray, user_ids: np.ndarray, rng: np.random.Generator
                ) -> np.ndarray:
            return self.policy.act_arrays(histories, user_ids, explore=False, rng=rng)[0]

        return act

    def ranking_scores(self, histories: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
        """The next-item model's probabilities ``[B, I]`` (the evaluator takes the top)."""
        return self.policy.probs(histories, user_ids)

    def report(self) -> dict[str, Any]:
        return self._report


def make_sasrec_agent(ctx: MethodContext) -> Agent:
    """Method factory for ``sasrec``: trains on the training users' logs, then acts."""
    cfg = SASRecConfig.from_hyper(ctx.hyper)
    env = ctx.train_env
    logs = ctx.training_logs()
    policy, report = train_sasrec(logs, [int(u) for u in env.users], ctx.policy_config,
                                  seed=ctx.seed, item_features=ctx.item_features, config=cfg)
    return SupervisedAgent(ctx.name, policy, ctx.experiment.online, report)


class PopularAgent:
    """The most popular item of the training logs that is not in the user's history."""

    def __init__(self, name: str, counts: np.ndarray) -> None:
        self.name = name
        self.updates = 0
        # Stable order: ties broken by item id, so results are deterministic.
        self.order = np.argsort(-np.asarray(counts), kind="stable")
        # Scores that rank exactly as ``order`` (count ties included): I for the first.
        self._scores = np.empty(len(self.order), dtype=np.float64)
        self._scores[self.order] = np.arange(len(self.order), 0, -1, dtype=np.float64)

    def _choose(self, histories: np.ndarray) -> np.ndarray:
        out = np.empty(len(histories), dtype=np.int64)
        for b, row in enumerate(histories):
            seen = set(row[row != PAD].tolist())
            out[b] = next((int(i) for i in self.order[: len(seen) + 1] if int(i) not in seen),
                          int(self.order[0]))
        return out

    def act(self, histories: np.ndarray, user_ids: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
        return self._choose(histories), np.ones(len(histories))

    def observe(self, step: StepBatch) -> dict[str, float]:
        return {}

    def evaluator(self) -> EvalActor:
        def act(histories: np.ndarray, user_ids: np.ndarray, rng: np.random.Generator
                ) -> np.ndarray:
            return self._choose(histories)

        return act

    def ranking_scores(self, histories: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
        """The training-log counts as a ranking ``[B, I]``, the same for every user; items
        with equal counts are ordered by id, as the agent acts, not left tied."""
        return np.broadcast_to(self._scores, (len(histories), len(self._scores)))


def make_popular_agent(ctx: MethodContext) -> Agent:
    """Method factory for ``popular``: counts on the training users' logs."""
    env = ctx.train_env
    return PopularAgent(ctx.name, item_counts(ctx.training_logs(), env.num_items))


register_method(METHOD_NAME, make_sasrec_agent)
register_method("popular", make_popular_agent)

__all__ = ["METHOD_NAME", "PopularAgent", "SASRecConfig", "SupervisedAgent", "next_item_examples",
           "train_sasrec"]
