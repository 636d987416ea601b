"""A2C as in section 4.1.2 (eqs. 6–10), the learner of iALP and the A2C baseline.

For a minibatch of (s_t, a_t, r_t, s_t+1):

* critic (eq. 8): y = r_t + γ·(1 − done)·max_a' Q(s_t+1, a'),  L_Q = mean (y − Q(s_t, a_t))²
* advantage (eq. 9): A(s_t, a_t) = y − Q(s_t, a_t), treated as a constant for the actor
* actor (eqs. 6 and the line after 9): L_A = mean −log π(a_t|s_t)·A(s_t, a_t)
* total (eq. 10): L = L_A + L_Q, one Adam step over encoder, actor and critic together.

Choices the paper leaves open (each a setting in :class:`A2CConfig`):

* ``done``: no bootstrap after the user left (the paper's eq. 8 has no terminal case;
  the next state of a departed user has no future reward).
* Target network: by default the max over next-state Q uses a Polyak-averaged copy of the
  network (``target_tau = 0.01``). Bootstrapping a max from the network being trained is
  the classic source of Q over-estimation and oscillation; a slow copy keeps y stable
  within a few hundred updates. ``target_tau = 0`` is the literal reading (the online
  network, detached).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from policy.config import PolicyConfig
from policy.mixed import MixedPolicy
from trainer.batch import TransitionBatch
from trainer.learners.base import BaseLearner, soft_update


@dataclass(frozen=True)
class A2CConfig:
    """A2C hyperparameters."""

    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam L2 penalty."""
    grad_clip: float = 10.0
    """Global gradient-norm clip; 0 disables clipping."""
    gamma: float = 0.9
    """Discount factor γ of eq. 8."""
    target_tau: float = 0.01
    """Polyak rate of the target network used for max_a' Q(s_t+1, a'); 0 = no target
    network (bootstrap from the online network, detached)."""
    entropy_coef: float = 0.0
    """Weight of an entropy bonus on π (0 = exactly eq. 10)."""
    normalize_advantage: bool = False
    """Standardise A over the minibatch before weighting the actor loss (off = eq. 9)."""
    advantage: str = "td"
    """``td``: A = y − Q(s_t, a_t), eq. 9 as written. ``expected``: A = y − V(s_t) with
    V(s_t) = Σ_a π(a|s_t)·Q(s_t, a), a state baseline whose mean over π is zero, so the
    actor is not pushed towards whatever it already samples (see docs/policy.md)."""

    def __post_init__(self) -> None:
        if self.advantage not in ("td", "expected"):
            raise ValueError(f"advantage must be 'td' or 'expected', not {self.advantage!r}")


class A2CLearner(BaseLearner):
    """Actor-critic with a Q critic over the whole catalogue (shared SASRec encoder)."""

    method = "a2c"
    hyper: A2CConfig

    def __init__(
        self,
        config: PolicyConfig,
        hyper: A2CConfig | None = None,
        *,
        seed: int,
        init: MixedPolicy | None = None,
    ) -> None:
        super().__init__(config, hyper or A2CConfig(), seed=seed, init=init)
        self.target = copy.deepcopy(self.net) if self.hyper.target_tau > 0 else None
        if self.target is not None:
            self.target.eval()
            self.target.requires_grad_(False)

    def _log_pi(self, batch: TransitionBatch, state: torch.Tensor) -> torch.Tensor:
        """log π(·|s_t) [B, I]; the adaptive scheme overrides this with log π̃."""
        return F.log_softmax(self.net.actor(state), dim=-1)

    def _losses(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        state = self.net.encode(batch.histories, batch.user_ids)  # [B, H]
        q = self.net.critic(state)  # [B, I]
        q_sa = q.gather(1, batch.actions[:, None]).squeeze(1)  # [B]
        with torch.no_grad():
            boot = self.target if self.target is not None else self.net
            was_training = boot.training
            boot.eval()
            q_next = boot.q_values(batch.next_histories, batch.user_ids).max(dim=1).values  # [B]
            boot.train(was_training)
            y = batch.rewards + self.hyper.gamma * (1.0 - batch.dones) * q_next  # [B]
        td = y - q_sa  # [B]
        critic_loss = td.pow(2).mean()
        log_pi = self._log_pi(batch, state)  # [B, I]
        if self.hyper.advantage == "td":
            adv = td.detach()
        else:
            v = (log_pi.exp() * q).sum(dim=1)  # [B] V(s) = E_π Q(s, ·)
            adv = (y - v).detach()
        if self.hyper.normalize_advantage and len(adv) > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        log_pa = log_pi.gather(1, batch.actions[:, None]).squeeze(1)  # [B]
        actor_loss = -(log_pa * adv).mean()
        entropy = -(log_pi.exp() * log_pi).sum(dim=1).mean()
        total = actor_loss + critic_loss - self.hyper.entropy_coef * entropy
        return {
            "loss": total,
            "actor_loss": actor_loss,
            "critic_loss": critic_loss,
            "q_mean": q_sa.mean(),
            "target_mean": y.mean(),
            "advantage_mean": adv.mean(),
            "entropy": entropy,
        }

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        """One step on L = L_A + L_Q; then the target network moves by ``target_tau``."""
        self.net.train()
        losses = self._losses(batch)
        grad_norm = self._step(losses["loss"])
        if self.target is not None:
            soft_update(self.target, self.net, self.hyper.target_tau)
        out = {k: float(v.detach()) for k, v in losses.items()}
        out["grad_norm"] = grad_norm
        return out
