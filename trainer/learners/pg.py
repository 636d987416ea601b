"""REINFORCE policy gradient (Williams, 1992) on the same encoder, using the actor head.

L = mean −log π(a_t|s_t)·(G_t − b) − c·H(π), with G_t the discounted return from step t
of the episode and b a baseline (the minibatch mean of G by default). On-policy: the
runner feeds each batch of finished episodes once. When a batch carries no returns (events
from the service, where episodes are not assembled), G_t falls back to the immediate
reward r_t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from policy.config import PolicyConfig
from policy.mixed import MixedPolicy
from trainer.batch import TransitionBatch
from trainer.learners.base import BaseLearner

BASELINES = ("mean", "none")


@dataclass(frozen=True)
class PGConfig:
    """REINFORCE hyperparameters."""

    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam L2 penalty."""
    grad_clip: float = 10.0
    """Global gradient-norm clip; 0 disables clipping."""
    gamma: float = 0.9
    """Discount factor γ used by the runner to compute returns G_t."""
    baseline: str = "mean"
    """``mean``: subtract the minibatch mean of G_t; ``none``: raw returns."""
    normalize: bool = True
    """Divide (G_t − b) by the minibatch standard deviation."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus."""

    def __post_init__(self) -> None:
        if self.baseline not in BASELINES:
            raise ValueError(f"unknown baseline {self.baseline!r}; choose {', '.join(BASELINES)}")


class PGLearner(BaseLearner):
    """REINFORCE on the actor head; the critic head is unused."""

    method = "pg"
    on_policy = True
    hyper: PGConfig

    def __init__(
        self,
        config: PolicyConfig,
        hyper: PGConfig | None = None,
        *,
        seed: int,
        init: MixedPolicy | None = None,
    ) -> None:
        super().__init__(config, hyper or PGConfig(), seed=seed, init=init)

    def _losses(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        returns = batch.returns if batch.returns is not None else batch.rewards  # [B]
        adv = returns
        if self.hyper.baseline == "mean":
            adv = adv - adv.mean()
        if self.hyper.normalize and len(adv) > 1:
            adv = adv / (adv.std() + 1e-8)
        logits = self.net.logits(batch.histories, batch.user_ids)  # [B, I]
        mask = self.history_mask(batch.histories)
        if mask is not None:  # the acting policy: renormalised over items not in the history
            # Without it the logits of never-acted history items grow unchecked and the
            # unmasked log π(a|s) of the chosen items falls without bound (suite: a loss of
            # 2.5e5 on LFM).
            logits = logits.masked_fill(mask, -1e9)
        log_pi = F.log_softmax(logits, dim=-1)
        log_pa = log_pi.gather(1, batch.actions[:, None]).squeeze(1)  # [B]
        pg_loss = -(log_pa * adv).mean()
        entropy = -(log_pi.exp() * log_pi).sum(dim=1).mean()
        return {
            "loss": pg_loss - self.hyper.entropy_coef * entropy,
            "pg_loss": pg_loss,
            "return_mean": returns.mean(),
            "entropy": entropy,
        }

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        """One policy-gradient step."""
        self.net.train()
        losses = self._losses(batch)
        grad_norm = self._step(losses["loss"])
        out = {k: float(v.detach()) for k, v in losses.items()}
        out["grad_norm"] = grad_norm
        return out
