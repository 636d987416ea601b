"""A2C as in section 4.1.2 (eqs. 6–10), the learner of iALP and the A2C baseline.

For a minibatch of (s_t, a_t, r_t, s_t+1):

* critic (eq. 8): y = r_t + γ·(1 − done)·max_a' Q(s_t+1, a'),  L_Q = mean (y − Q(s_t, a_t))²
* advantage (eq. 9): A(s_t, a_t) = y − Q(s_t, a_t), treated as a constant for the actor
* actor (eqs. 6 and the line after 9): L_A = mean −log π(a_t|s_t)·A(s_t, a_t)
* total (eq. 10): L = L_A + L_Q, one Adam step over encoder, actor and critic together.

Choices the paper leaves open (each a setting in :class:`A2CConfig`):

* ``done``: no bootstrap after the user left (the paper's eq. 8 has no terminal case;
  the next state of a departed user has no future reward).
* Target network: by default the next-state value uses a Polyak-averaged copy of the
  network (``target_tau = 0.01``). Bootstrapping a max from the network being trained is
  the classic source of Q over-estimation and oscillation; a slow copy keeps y stable
  within a few hundred updates. ``target_tau = 0`` is the literal reading (the online
  network, detached).
* Bootstrap (``bootstrap``): ``max`` is eq. 8; ``double`` (default) picks a' with the
  online network and values it with the target network (double Q-learning), which removes
  most of the max's over-estimation on a catalogue of thousands of items.
* Bounded targets (``bound_targets``, default on): the bootstrapped value is clipped to
  the range of returns reachable with the rewards seen so far, [min(0, r_min), max(0,
  r_max)]/(1 − γ), so neither y nor Q can run away (an unbounded critic had reached a loss
  of 1e7 in pre-training).

Defaults (:data:`ONLINE_A2C`): the settings that learn online (docs/experiments-baselines.md,
docs/learning-core.md): lr 3e-3, the expected-Q advantage, normalised, entropy 0.01.
Eq. 9 as written is ``advantage="td"``, ``normalize_advantage=False``, ``entropy_coef=0``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from policy.actor_critic import ActorCritic
from policy.config import PolicyConfig
from policy.mixed import MixedPolicy
from trainer.batch import TransitionBatch
from trainer.learners.base import BaseLearner, soft_update


@dataclass(frozen=True)
class A2CConfig:
    """A2C hyperparameters."""

    lr: float = 3e-3
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
    entropy_coef: float = 0.01
    """Weight of an entropy bonus on π (0 = exactly eq. 10)."""
    normalize_advantage: bool = True
    """Standardise A over the minibatch before weighting the actor loss (off = eq. 9)."""
    advantage: str = "expected"
    """``td``: A = y − Q(s_t, a_t), eq. 9 as written. ``expected``: A = y − V(s_t) with
    V(s_t) = Σ_a π(a|s_t)·Q(s_t, a), a state baseline whose mean over π is zero, so the
    actor is not pushed towards whatever it already samples (see docs/policy.md)."""
    bootstrap: str = "double"
    """Next-state value of the TD target: ``max`` (eq. 8), ``double`` (argmax by the
    online network, valued by the target network)."""
    bound_targets: bool = True
    """Clip the bootstrapped value to the returns reachable with the rewards seen so far."""
    truncate_is: float = 1.0
    """Weight the actor term of a replayed action by min(c, π(a|s)/μ(a|s)), μ the policy
    that acted (its stored propensity); 0 = no weight (eq. 6 as written). Replayed actions
    the policy no longer takes then stop pushing their log-probability towards −∞, which
    otherwise makes the logits grow without bound at lr 3e-3."""
    anchor: float = 0.0
    """Weight of KL(π₀ ‖ π) added to the loss, π₀ the actor the learner started from
    (frozen; renormalised over the same items when history is masked). Pre-training
    (``trainer.pretrain``) uses it so the judge's preference becomes a correction of the
    starting policy (the operator's popularity prior) instead of replacing it; 0 = off."""
    anchor_mode: str = "forward"
    """Direction of the anchor term. ``forward``: KL(π₀ ‖ π), which keeps π at least as
    broad as π₀ (mass-covering). ``reverse``: KL(π ‖ π₀) = −H(π) − E_π[log π₀], which lets
    π sharpen within π₀'s support but penalises mass on items π₀ finds unlikely; its
    optimum is π ∝ π₀·exp(Q/anchor), a prior-relative entropy bonus."""
    serve_average: bool = False
    """Snapshots (what is evaluated and published) carry the Polyak-averaged network of
    ``target_tau`` instead of the latest weights; acting during training stays on the
    latest. The average changes by ``target_tau`` per update, so a few unlucky updates
    move what users are served only a little."""

    def __post_init__(self) -> None:
        if self.serve_average and self.target_tau <= 0:
            raise ValueError("serve_average needs a target network (target_tau > 0)")
        if self.advantage not in ("td", "expected"):
            raise ValueError(f"advantage must be 'td' or 'expected', not {self.advantage!r}")
        if self.bootstrap not in ("max", "double"):
            raise ValueError(f"bootstrap must be 'max' or 'double', not {self.bootstrap!r}")
        if self.anchor < 0:
            raise ValueError(f"anchor must be >= 0, not {self.anchor}")
        if self.anchor_mode not in ("forward", "reverse"):
            raise ValueError(f"anchor_mode must be 'forward' or 'reverse', "
                             f"not {self.anchor_mode!r}")


ONLINE_A2C: dict[str, Any] = {
    "lr": A2CConfig.lr,
    "advantage": A2CConfig.advantage,
    "normalize_advantage": A2CConfig.normalize_advantage,
    "entropy_coef": A2CConfig.entropy_coef,
}
"""The online actor-critic settings (the defaults of :class:`A2CConfig`), in one place for
every caller that spells them out (suite, LLMOnline, the service's learner options)."""

PAPER_A2C: dict[str, Any] = {
    "advantage": "td", "normalize_advantage": False, "entropy_coef": 0.0,
    "bootstrap": "max", "bound_targets": False, "truncate_is": 0.0,
}
"""Eqs. 6–10 exactly as written (for comparisons and tests)."""


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
        self.anchor_net = copy.deepcopy(self.net) if self.hyper.anchor > 0 else None
        """Frozen copy of the starting network, π₀ of the ``anchor`` term."""
        if self.anchor_net is not None:
            self.anchor_net.eval()
            self.anchor_net.requires_grad_(False)
        self.reward_range: tuple[float, float] | None = None
        """(min, max) reward seen in training batches (for ``bound_targets``)."""

    def value_bounds(self, rewards: torch.Tensor) -> tuple[float, float]:
        """Returns reachable with the rewards seen so far (``rewards`` included)."""
        lo, hi = float(rewards.min()), float(rewards.max())
        if self.reward_range is not None:
            lo, hi = min(lo, self.reward_range[0]), max(hi, self.reward_range[1])
        self.reward_range = (lo, hi)
        scale = 1.0 / max(1.0 - self.hyper.gamma, 1e-6)
        return min(0.0, lo) * scale, max(0.0, hi) * scale

    def _next_value(self, batch: TransitionBatch) -> torch.Tensor:
        """Bootstrapped value of s_t+1 [B] (no gradient)."""
        boot = self.target if self.target is not None else self.net
        was_training, net_training = boot.training, self.net.training
        boot.eval()
        q_next_boot = boot.q_values(batch.next_histories, batch.user_ids)  # [B, I]
        mask = self.history_mask(batch.next_histories)
        if mask is not None:
            q_next_boot = q_next_boot.masked_fill(mask, -1e9)
        if self.hyper.bootstrap == "double" and boot is not self.net:
            self.net.eval()
            q_online = self.net.q_values(batch.next_histories, batch.user_ids)
            if mask is not None:
                q_online = q_online.masked_fill(mask, -1e9)
            pick = q_online.argmax(dim=1)
            self.net.train(net_training)
            value = q_next_boot.gather(1, pick[:, None]).squeeze(1)
        else:
            value = q_next_boot.max(dim=1).values
        boot.train(was_training)
        if self.hyper.bound_targets and len(batch.rewards):
            lo, hi = self.value_bounds(batch.rewards)
            value = value.clamp(lo, hi)
        return value

    def _log_pi(self, batch: TransitionBatch, state: torch.Tensor) -> torch.Tensor:
        """log π(·|s_t) [B, I]; the adaptive scheme overrides this with log π̃."""
        return F.log_softmax(self.net.actor(state), dim=-1)

    def _losses(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        state = self.net.encode(batch.histories, batch.user_ids)  # [B, H]
        q = self.net.critic(state)  # [B, I]
        q_sa = q.gather(1, batch.actions[:, None]).squeeze(1)  # [B]
        with torch.no_grad():
            q_next = self._next_value(batch)  # [B]
            y = batch.rewards + self.hyper.gamma * (1.0 - batch.dones) * q_next  # [B]
        td = y - q_sa  # [B]
        critic_loss = td.pow(2).mean()
        log_pi = self._log_pi(batch, state)  # [B, I]
        mask = self.history_mask(batch.histories)
        if mask is not None:  # the acting policy: renormalised over items not in the history
            log_pi = F.log_softmax(log_pi.masked_fill(mask, -1e9), dim=-1)
        if self.hyper.advantage == "td":
            adv = td.detach()
        else:
            v = (log_pi.exp() * q).sum(dim=1)  # [B] V(s) = E_π Q(s, ·)
            adv = (y - v).detach()
        if self.hyper.normalize_advantage and len(adv) > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        log_pa = log_pi.gather(1, batch.actions[:, None]).squeeze(1)  # [B]
        if self.hyper.truncate_is > 0:
            with torch.no_grad():
                mu = batch.propensities.clamp_min(1e-12)
                rho = (log_pa.exp() / mu).clamp(max=self.hyper.truncate_is)
            actor_loss = -(rho * log_pa * adv).mean()
        else:
            actor_loss = -(log_pa * adv).mean()
        entropy = -(log_pi.exp() * log_pi).sum(dim=1).mean()
        total = actor_loss + critic_loss - self.hyper.entropy_coef * entropy
        extra: dict[str, torch.Tensor] = {}
        if self.anchor_net is not None:
            kl = self._anchor_kl(batch.histories, batch.user_ids, log_pi, mask)
            total = total + self.hyper.anchor * kl
            extra["anchor_kl"] = kl
        return {
            "loss": total,
            "actor_loss": actor_loss,
            "critic_loss": critic_loss,
            "q_mean": q_sa.mean(),
            "q_abs_max": q_sa.detach().abs().max(),
            "target_mean": y.mean(),
            "advantage_mean": adv.mean(),
            "entropy": entropy,
            **extra,
        }

    def imitate(self, histories: np.ndarray, user_ids: np.ndarray | None,
                candidates: np.ndarray, labels: np.ndarray, *, weight: float = 1.0
                ) -> dict[str, float]:
        """One listwise step towards a judge's choices: the actor's softmax restricted to
        each row's candidates, cross-entropy against the chosen one.

        ``histories`` [B, L] (PAD-padded), ``candidates`` [B, k] item ids, ``labels`` [B]
        the index of the chosen candidate. Only the ranking *within* the candidate list
        is taught (the items the judge never saw keep their scores), which is what one
        answer says: the picked item above the k − 1 others. With an ``anchor`` the KL to
        the starting actor is added, as in :meth:`update`."""
        self.net.train()
        h = torch.as_tensor(histories, dtype=torch.long)
        u = None if user_ids is None else torch.as_tensor(user_ids, dtype=torch.long)
        cands = torch.as_tensor(candidates, dtype=torch.long)  # [B, k]
        y = torch.as_tensor(labels, dtype=torch.long)  # [B]
        logits = self.net.actor(self.net.encode(h, u))  # [B, I]
        listwise = F.cross_entropy(logits.gather(1, cands), y)  # over [B, k]
        loss = weight * listwise
        out = {"listwise_loss": float(listwise.detach())}
        if self.anchor_net is not None:
            mask = self.history_mask(h)
            log_pi = F.log_softmax(logits if mask is None else logits.masked_fill(mask, -1e9),
                                   dim=-1)
            kl = self._anchor_kl(h, u, log_pi, mask)
            loss = loss + self.hyper.anchor * kl
            out["listwise_anchor_kl"] = float(kl.detach())
        out["listwise_grad_norm"] = self._step(loss)
        return out

    def _anchor_kl(self, histories: torch.Tensor, user_ids: torch.Tensor | None,
                   log_pi: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Mean KL over the states between π and π₀, the frozen starting actor, in the
        direction of ``anchor_mode``."""
        assert self.anchor_net is not None
        with torch.no_grad():
            logits0 = self.anchor_net.actor(self.anchor_net.encode(histories, user_ids))
            if mask is not None:
                logits0 = logits0.masked_fill(mask, -1e9)
            log_p0 = F.log_softmax(logits0, dim=-1)
        if self.hyper.anchor_mode == "reverse":
            p = log_pi.exp()
            return (p * (log_pi - log_p0)).sum(dim=1).mean()
        p0 = log_p0.exp()
        return (p0 * (log_p0 - log_pi)).sum(dim=1).mean()

    def served_network(self) -> ActorCritic:
        """The network a snapshot copies: the Polyak average with ``serve_average``,
        else the latest weights."""
        if self.hyper.serve_average and self.target is not None:
            return self.target
        return self.net

    def served_copy(self) -> ActorCritic:
        """An independent eval-mode copy of :meth:`served_network`, trainable like a copy
        of the live network (a snapshot may become another learner's init)."""
        net = copy.deepcopy(self.served_network())
        net.requires_grad_(True)
        net.eval()
        return net

    def snapshot(self) -> MixedPolicy:
        """A policy over :meth:`served_copy`."""
        return self._wrap(self.served_copy())

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
