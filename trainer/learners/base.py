"""What every learner shares: the network, its optimizer, snapshots for serving."""

from __future__ import annotations

import copy
from dataclasses import asdict
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from policy.actor_critic import ActorCritic
from policy.checkpoint import build_network, now_iso
from policy.config import PolicyConfig
from policy.exploration import ExplorationConfig
from policy.mixed import MixedPolicy
from trainer.batch import TransitionBatch


class NonFiniteLossError(FloatingPointError):
    """A learner's loss or gradient is NaN or infinite: the run stops, weights untouched."""


@runtime_checkable
class Learner(Protocol):
    """Owns a policy network and its optimizer; learns from minibatches."""

    method: str
    config: PolicyConfig
    steps: int
    on_policy: bool
    """True when ``update`` needs fresh data from the current policy (PG): the runner then
    feeds it each finished batch of episodes once instead of replay samples."""

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        """One gradient step on ``batch``; returns metrics (losses, Q, ...), never prints."""
        ...

    def loss(self, batch: TransitionBatch) -> dict[str, float]:
        """The losses ``update`` would minimise on ``batch``, without changing anything."""
        ...

    def snapshot(self) -> MixedPolicy:
        """An independent inference copy for serving or evaluation."""
        ...

    def acting_policy(self) -> MixedPolicy:
        """A policy sharing the live weights (no copy), for in-process data collection."""
        ...


class BaseLearner:
    """Network, Adam optimizer, step counter and snapshot logic for a single network.

    ``init`` (e.g. an iALP checkpoint) supplies the starting weights; otherwise the network
    is initialised from ``seed``. The learner always works on its own copy.
    """

    method = "base"
    on_policy = False
    head = "actor"

    def __init__(
        self,
        config: PolicyConfig,
        hyper: Any,
        *,
        seed: int,
        init: MixedPolicy | None = None,
    ) -> None:
        if init is not None:
            if init.config != config:
                raise ValueError(f"init policy has config {init.config}, expected {config}")
            if init.beta is not None:
                raise ValueError(f"{self.method}: init must be a single-network policy")
            self.net: ActorCritic = copy.deepcopy(init.theta)
        else:
            self.net = build_network(config, seed=seed)
        self.config = config
        self.hyper = hyper
        self.seed = seed
        self.steps = 0
        self.parent_version = None if init is None else init.version
        self.mask_history = False
        """Set by the driver when the acting policy never recommends history items: the
        learner's π (and a bootstrap's choice of a') are restricted to the same items, so
        the π it trains is the one that acted."""
        self.optimizer = torch.optim.Adam(
            self.trainable_parameters(), lr=hyper.lr, weight_decay=hyper.weight_decay
        )

    def history_mask(self, histories: torch.Tensor) -> torch.Tensor | None:
        """[B, I] bool, True for items in each history (None without ``mask_history``)."""
        if not self.mask_history:
            return None
        n = self.config.num_items
        mask = torch.zeros(histories.shape[0], n + 1, dtype=torch.bool)
        mask.scatter_(1, torch.where(histories < 0, n, histories), True)
        return mask[:, :n]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer updates."""
        return list(self.net.parameters())

    def exploration(self) -> ExplorationConfig:
        """Exploration used while collecting training data."""
        return ExplorationConfig(strategy="categorical")

    def _losses(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        """Loss terms on ``batch`` (``"loss"`` is the one minimised); subclasses define it."""
        raise NotImplementedError

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        """One gradient step on ``batch``; subclasses define it."""
        raise NotImplementedError

    def loss(self, batch: TransitionBatch) -> dict[str, float]:
        """Losses on ``batch`` in eval mode (no dropout), without a gradient step."""
        was = self.net.training
        self.net.eval()
        with torch.no_grad():
            out = {k: float(v) for k, v in self._losses(batch).items()}
        self.net.train(was)
        return out

    def _step(self, loss: torch.Tensor) -> float:
        """Backpropagate, clip, step; returns the gradient norm before clipping.

        A non-finite loss or gradient raises :class:`NonFiniteLossError` before anything
        changes, so the parameters (and every published snapshot) stay finite."""
        if not bool(torch.isfinite(loss.detach()).all()):
            raise NonFiniteLossError(
                f"{self.method}: the loss is {float(loss.detach())} at update {self.steps + 1}; "
                "stopping before it reaches the weights (lower lr, or check the rewards)")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = self.trainable_parameters()
        clip = self.hyper.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        if not bool(torch.isfinite(norm)):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(
                f"{self.method}: the gradient norm is {float(norm)} at update "
                f"{self.steps + 1} (loss {float(loss.detach())}); stopping before it reaches "
                "the weights")
        self.optimizer.step()
        self.steps += 1
        return float(norm)

    def _metadata(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "parent_version": self.parent_version,
            "updates": self.steps,
            "created_at": now_iso(),
            "seed": self.seed,
            "hyper": asdict(self.hyper),
        }

    def _wrap(self, net: ActorCritic) -> MixedPolicy:
        return MixedPolicy(
            net,
            head=self.head,
            version=(self.parent_version or 0) + self.steps,
            metadata=self._metadata(),
            exploration=self.exploration(),
            seed=self.seed,
        )

    def snapshot(self) -> MixedPolicy:
        """An independent eval-mode copy of the current network."""
        net = copy.deepcopy(self.net)
        net.eval()
        return self._wrap(net)

    def acting_policy(self) -> MixedPolicy:
        """A policy over the live network (switches it to eval mode while acting)."""
        return self._wrap(self.net)


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target ← (1 − τ)·target + τ·source, parameter by parameter (τ = 1 copies)."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.lerp_(s, tau)
