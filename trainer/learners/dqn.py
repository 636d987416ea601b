"""DQN baseline (Mnih et al., 2013) on the same SASRec encoder, using the critic head.

Loss: Huber (or squared) error between Q(s_t, a_t) and y = r_t + γ·(1 − done)·max_a'
Q_target(s_t+1, a'), with a target network copied every ``target_update_every`` updates.
Acting: ε-greedy over Q with ε decaying linearly in learner updates; served greedily (or
as softmax(Q / T) when asked to sample).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from policy.config import PolicyConfig
from policy.exploration import ExplorationConfig
from policy.mixed import MixedPolicy
from trainer.batch import TransitionBatch
from trainer.learners.base import BaseLearner


@dataclass(frozen=True)
class DQNConfig:
    """DQN hyperparameters."""

    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam L2 penalty."""
    grad_clip: float = 10.0
    """Global gradient-norm clip; 0 disables clipping."""
    gamma: float = 0.9
    """Discount factor γ."""
    target_update_every: int = 200
    """Updates between hard copies of the online network into the target network."""
    huber: bool = True
    """Huber (smooth L1) TD loss; False = squared error."""
    double: bool = False
    """Double DQN: pick argmax with the online network, value it with the target."""
    eps_start: float = 1.0
    """ε of ε-greedy exploration at update 0."""
    eps_end: float = 0.05
    """ε after ``eps_decay_steps`` updates."""
    eps_decay_steps: int = 1000
    """Updates over which ε falls linearly from ``eps_start`` to ``eps_end``."""


class DQNLearner(BaseLearner):
    """Q-learning on the critic head; the actor head is unused."""

    method = "dqn"
    head = "q"
    hyper: DQNConfig

    def __init__(
        self,
        config: PolicyConfig,
        hyper: DQNConfig | None = None,
        *,
        seed: int,
        init: MixedPolicy | None = None,
    ) -> None:
        super().__init__(config, hyper or DQNConfig(), seed=seed, init=init)
        self.target = copy.deepcopy(self.net)
        self.target.eval()
        self.target.requires_grad_(False)

    def epsilon(self) -> float:
        """Current ε of the acting policy."""
        h = self.hyper
        frac = min(1.0, self.steps / max(1, h.eps_decay_steps))
        return h.eps_start + (h.eps_end - h.eps_start) * frac

    def exploration(self) -> ExplorationConfig:
        return ExplorationConfig(strategy="epsilon", epsilon=self.epsilon())

    def _losses(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        q = self.net.q_values(batch.histories, batch.user_ids)  # [B, I]
        q_sa = q.gather(1, batch.actions[:, None]).squeeze(1)  # [B]
        with torch.no_grad():
            q_next_t = self.target.q_values(batch.next_histories, batch.user_ids)  # [B, I]
            if self.hyper.double:
                was = self.net.training
                self.net.eval()
                pick = self.net.q_values(batch.next_histories, batch.user_ids).argmax(1)
                self.net.train(was)
                q_next = q_next_t.gather(1, pick[:, None]).squeeze(1)
            else:
                q_next = q_next_t.max(dim=1).values
            y = batch.rewards + self.hyper.gamma * (1.0 - batch.dones) * q_next  # [B]
        td_loss = F.smooth_l1_loss(q_sa, y) if self.hyper.huber else F.mse_loss(q_sa, y)
        return {"loss": td_loss, "q_mean": q_sa.mean(), "q_abs_max": q_sa.detach().abs().max(),
                "target_mean": y.mean()}

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        """One TD step; hard target sync every ``target_update_every`` updates."""
        self.net.train()
        losses = self._losses(batch)
        grad_norm = self._step(losses["loss"])
        if self.steps % self.hyper.target_update_every == 0:
            self.target.load_state_dict(self.net.state_dict())
        out = {k: float(v.detach()) for k, v in losses.items()}
        out.update(grad_norm=grad_norm, epsilon=self.epsilon())
        return out
