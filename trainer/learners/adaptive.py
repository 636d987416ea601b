"""Online adaptation of a pre-trained iALP policy (section 4.2, Algorithm 2).

Two learners, registered in :mod:`trainer.learners` as ``ft`` and ``ap``; the in-process
experiment runner and the service's trainer both build them with
``make_learner(method, config, seed=..., init=<πθ>, **hyper)``.

* ``ft`` (A-iALP_ft, eqs. 11–13): πθ keeps learning. Actor, critic and encoder of θ are
  updated by A2C on the environment's reward instead of the judge's r^p: the same losses
  as pre-training, only the reward source changes. Snapshots carry scheme ``ft``.
* ``ap`` (A-iALP_ap, eqs. 14–15): πθ is frozen and a learnable πβ (its own encoder, actor
  and critic) is added. Actions come from π̃ = (1 − α)·πθ + α·πβ; the actor loss is
  −log π̃(a|s)·A(s, a), whose gradient reaches β only (θ has no trainable parameter and
  its log-probabilities are computed without a graph); β's critic learns eq. 12 exactly
  as in ``ft``. α follows a :class:`policy.schedules.AlphaSchedule` in learner updates
  and reaches 1, when π̃ = πβ. Snapshots carry scheme ``ap``, both networks and α.

β's settings (:class:`APConfig`, measured on Industry, 3 seeds, 20k interactions; the
numbers are in docs/results-notes.md): β starts as a **copy** of θ (Algorithm 2, line 3)
and stays within θ's support through a **reverse KL anchor** KL(πβ ‖ πθ) (weight 0.05): it
may sharpen on the items θ finds plausible but not drift to items θ rules out, which is
what made a fresh β's final Return swing between ~40 and ~70 from seed to seed. Without
an entropy bonus (the anchor already carries one, relative to θ), at lr 2e-3, and
snapshots (what is served and evaluated) carry the Polyak average of β's weights. A
``random`` β (section 5.2's setup) remains selectable.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from policy.actor_critic import ActorCritic
from policy.checkpoint import build_network
from policy.config import PolicyConfig
from policy.mixed import MixedPolicy
from policy.schedules import AlphaSchedule
from trainer.batch import TransitionBatch
from trainer.learners.a2c import A2CConfig, A2CLearner

BETA_INITS = ("copy", "random")


@dataclass(frozen=True)
class FTConfig(A2CConfig):
    """A-iALP_ft hyperparameters: those of A2C (eqs. 12–13 are eqs. 8–10 with the
    environment's reward)."""


@dataclass(frozen=True)
class APConfig(A2CConfig):
    """A-iALP_ap hyperparameters: A2C's for β (five defaults differ, below), plus β's
    start and the α schedule."""

    lr: float = 2e-3
    """Adam learning rate of β (measured on Industry with the anchor: 1e-3, 2e-3 and 3e-3
    end within noise of one another, 2e-3 highest and steadiest)."""
    entropy_coef: float = 0.0
    """No entropy bonus: the reverse anchor already rewards entropy relative to θ."""
    anchor: float = 0.05
    """Weight of the KL anchor to the network β started from (θ with ``copy``)."""
    anchor_mode: str = "reverse"
    """KL(πβ ‖ π₀): β may sharpen within θ's support, not leave it."""
    serve_average: bool = True
    """Snapshots carry the Polyak average of β (``target_tau`` per update)."""
    beta_init: str = "copy"
    """``copy``: β starts as a copy of θ (Algorithm 2, line 3; the default); ``random``: a
    fresh network of the same shape seeded from the learner's seed (section 5.2's setup),
    whose only anchor is then its own start (the popularity prior)."""
    alpha_schedule: str = "linear"
    """α schedule kind: ``constant``, ``linear`` or ``exponential`` (policy.schedules)."""
    alpha_start: float = 0.0
    """α at update 0: the share of π̃ that comes from β at the start."""
    alpha_steps: int = 2_000
    """Learner updates after which α = 1 (π̃ = πβ)."""
    alpha_floor: float = 1e-3
    """``exponential`` only: the remaining gap 1 − α just before ``alpha_steps``."""
    alpha_end: float = 1.0
    """α never exceeds this (1: the paper's hand-over; below 1 keeps πθ as a control)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta_init not in BETA_INITS:
            raise ValueError(f"beta_init must be one of {', '.join(BETA_INITS)}, "
                             f"not {self.beta_init!r}")
        self.schedule()  # validates kind, start, steps and floor

    def schedule(self) -> AlphaSchedule:
        """The α schedule these settings describe."""
        return AlphaSchedule(kind=self.alpha_schedule, start=self.alpha_start,
                             steps=self.alpha_steps, floor=self.alpha_floor,
                             end=self.alpha_end)


class FTLearner(A2CLearner):
    """A-iALP_ft: A2C on the environment reward, starting from πθ (all of θ trains)."""

    method = "ft"
    hyper: FTConfig

    def __init__(
        self,
        config: PolicyConfig,
        hyper: FTConfig | None = None,
        *,
        seed: int,
        init: MixedPolicy | None = None,
    ) -> None:
        if init is None:
            raise ValueError("ft fine-tunes a pre-trained policy: pass init=<iALP policy>")
        if init.scheme == "ap":
            raise ValueError("ft starts from a single-network policy, got scheme 'ap'")
        super().__init__(config, hyper or FTConfig(), seed=seed, init=init)

    def _wrap(self, net: ActorCritic) -> MixedPolicy:
        return MixedPolicy(
            net, scheme="ft", head=self.head,
            version=(self.parent_version or 0) + self.steps,
            metadata=self._metadata(), exploration=self.exploration(), seed=self.seed,
        )


class APLearner(A2CLearner):
    """A-iALP_ap: frozen θ, learnable β (``self.net``), π̃ = (1 − α)·πθ + α·πβ.

    ``init`` is either a plain πθ (scheme ``none``/``ft``: β is created by
    ``beta_init``) or a published ``ap`` policy, whose θ, β and α step are resumed (the
    service restarts its learner from the last published version this way).
    """

    method = "ap"
    hyper: APConfig

    def __init__(
        self,
        config: PolicyConfig,
        hyper: APConfig | None = None,
        *,
        seed: int,
        init: MixedPolicy | None = None,
    ) -> None:
        hyper = hyper or APConfig()
        if init is None:
            raise ValueError("ap adapts a pre-trained policy: pass init=<iALP policy θ>")
        if init.config != config:
            raise ValueError(f"init policy has config {init.config}, expected {config}")
        step = 0
        if init.scheme == "ap":
            assert init.beta is not None
            theta, beta = init.theta, init.beta
            step = _resumed_alpha_step(init, hyper.schedule())
        elif hyper.beta_init == "copy":
            theta, beta = init.theta, init.theta
        else:
            theta, beta = init.theta, build_network(config, seed=seed + 7919)
            if theta.items is not None and beta.items is not None:  # same catalogue features
                beta.items.load_state_dict(theta.items.state_dict())
        # BaseLearner deep-copies the network of ``init`` into self.net: that copy is β.
        beta_init = MixedPolicy(beta, version=init.version)
        super().__init__(config, hyper, seed=seed, init=beta_init)
        self.theta: ActorCritic = copy.deepcopy(theta)
        self.theta.eval()  # frozen: no dropout, no gradients, never in the optimizer
        self.theta.requires_grad_(False)
        self.alpha_step = step
        """Step of the α schedule; advances by one per update (a driver may set it, e.g. to
        hold α back)."""

    @property
    def alpha(self) -> float:
        """Current α = schedule(alpha_step)."""
        return float(self.hyper.schedule()(self.alpha_step))

    def _log_pi(self, batch: TransitionBatch, state: torch.Tensor) -> torch.Tensor:
        """log π̃(·|s) [B, I] (eq. 15): the mixture of frozen θ and learnable β."""
        log_beta = F.log_softmax(self.net.actor(state), dim=-1)  # [B, I]
        alpha = self.alpha
        if alpha >= 1.0:
            return log_beta
        with torch.no_grad():
            log_theta = F.log_softmax(
                self.theta.logits(batch.histories, batch.user_ids), dim=-1
            )  # [B, I]
        if alpha <= 0.0:
            return log_theta  # π̃ = πθ: the actor term has no gradient into β yet
        # log((1-α)·πθ + α·πβ) computed stably in log space.
        return torch.logaddexp(log_theta + math.log1p(-alpha), log_beta + math.log(alpha))

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        """One A2C step on β with the actor term of eq. 15; then α advances one step."""
        alpha = self.alpha
        out = super().update(batch)
        self.alpha_step += 1
        out["alpha"] = alpha
        return out

    def _metadata(self) -> dict[str, Any]:
        meta = super()._metadata()
        meta.update(alpha=self.alpha, alpha_step=self.alpha_step,
                    beta_init=self.hyper.beta_init, schedule=asdict(self.hyper.schedule()))
        return meta

    def _wrap(self, net: ActorCritic, theta: ActorCritic | None = None) -> MixedPolicy:
        return MixedPolicy(
            self.theta if theta is None else theta, net, alpha=self.alpha, scheme="ap",
            head=self.head, version=(self.parent_version or 0) + self.steps,
            metadata=self._metadata(), exploration=self.exploration(), seed=self.seed,
        )

    def snapshot(self) -> MixedPolicy:
        """Independent eval-mode copies of θ and β with the current α."""
        return self._wrap(self.served_copy(), copy.deepcopy(self.theta))


def _resumed_alpha_step(policy: MixedPolicy, schedule: AlphaSchedule) -> int:
    """The α step a resumed ``ap`` learner continues from.

    Drivers record it in the metadata (``alpha_step``); without it, the first step whose
    α reaches the policy's α is used, so α never jumps back at a restart.
    """
    meta = policy.metadata.get("alpha_step")
    if isinstance(meta, int) and meta >= 0:
        return meta
    if schedule.kind == "constant" or policy.alpha <= schedule(0):
        return 0
    lo, hi = 0, schedule.steps
    while lo < hi:  # α(step) is non-decreasing: binary search
        mid = (lo + hi) // 2
        if schedule(mid) >= policy.alpha - 1e-12:
            hi = mid
        else:
            lo = mid + 1
    return lo


ONLINE_AP: dict[str, Any] = {
    "lr": APConfig.lr,
    "advantage": APConfig.advantage,
    "normalize_advantage": APConfig.normalize_advantage,
    "entropy_coef": APConfig.entropy_coef,
    "anchor": APConfig.anchor,
    "anchor_mode": APConfig.anchor_mode,
    "serve_average": APConfig.serve_average,
    "beta_init": APConfig.beta_init,
}
"""A-iALP_ap's online settings (the defaults of :class:`APConfig`), in one place for every
caller that spells them out (suite, LAAC + A-iALP_ap); the service's learner uses the
defaults themselves."""

__all__ = ["BETA_INITS", "ONLINE_AP", "APConfig", "APLearner", "FTConfig", "FTLearner"]
