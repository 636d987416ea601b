"""α's schedule under the reward guardrail: advance one step per update, or pull the
schedule back while β's users fare worse than θ's (``trainer.guardrail``)."""

from __future__ import annotations

import logging

from trainer.guardrail import GuardConfig, RewardGuard
from trainer.online.metrics import TrainerMetrics
from trainer.online.settings import TrainerSettings
from trainer.online.state import TrainerState

logger = logging.getLogger(__name__)


class GuardedAnneal:
    """Owns the reward guardrail's window and moves ``TrainerState.alpha_step``."""

    def __init__(self, settings: TrainerSettings, metrics: TrainerMetrics) -> None:
        s = settings
        self.scheme = s.scheme
        self.metrics = metrics
        self.guard = RewardGuard(GuardConfig(
            window=s.guard_window, min_samples=s.guard_min_samples, z=s.guard_z,
            margin=s.guard_margin, backoff=s.guard_backoff, metric=s.guard_metric,
            min_sessions=s.guard_min_sessions))
        self.alarmed = False
        """Whether the last check raised the alarm (logged once when it clears)."""

    def step(self, state: TrainerState) -> None:
        """Before an update: advance ``state``'s α step, or back it off on an alarm (only
        the ``ap`` scheme anneals α online)."""
        verdict = self.guard.check()
        m = self.metrics
        m.guard_reward.labels(source="theta").set(verdict.mean_theta)
        m.guard_reward.labels(source="beta").set(verdict.mean_beta)
        m.guard_z.set(verdict.z)
        step = state.anneal_step
        if verdict.alarm and self.scheme == "ap":
            new_step = int(step * self.guard.config.backoff)
            m.guard_alarm.set(1)
            m.guard_alarms.inc()
            logger.warning(
                "guardrail: beta's online %s value %.3f (n=%d) is below theta's %.3f "
                "(n=%d), z=%.2f; α step %d -> %d", verdict.metric, verdict.value_beta,
                verdict.n_beta, verdict.value_theta, verdict.n_theta, verdict.z, step,
                new_step)
            state.alpha_step = new_step
            self.alarmed = True
        else:
            if self.alarmed:
                logger.warning("guardrail cleared: annealing α resumes from step %d", step)
            self.alarmed = False
            m.guard_alarm.set(0)
            # None while the schedule follows the update count (the usual case).
            state.alpha_step = None if step == state.updates else step + 1
