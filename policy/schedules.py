"""Schedules of the mixing weight α of A-iALP_ap (eq. 14): α rises to 1 with learner steps.

α never exceeds ``end`` (1 by default).

* ``constant``: α(t) = start for every t (an ablation: π̃ never hands over fully).
* ``linear``: α(t) = start + (1 − start)·t / steps, then 1.
* ``exponential``: the gap 1 − α shrinks geometrically from 1 − start to ``floor`` over
  ``steps`` steps, then α = 1 exactly: 1 − α(t) = (1 − start)·(floor / (1 − start))^(t/steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "linear", "exponential")


@dataclass(frozen=True)
class AlphaSchedule:
    """α as a function of the learner step."""

    kind: str = "linear"
    """One of ``constant``, ``linear``, ``exponential``."""
    start: float = 0.0
    """α at step 0 (the share of the learnable policy π_β at the start)."""
    steps: int = 10_000
    """Learner steps after which α = 1 (ignored by ``constant``)."""
    floor: float = 1e-3
    """``exponential`` only: remaining gap 1 − α just before ``steps``."""
    end: float = 1.0
    """α after ``steps`` (1: π̃ = πβ as in the paper; below 1 keeps a share of πθ on the
    traffic, a control the reward guardrail can always compare β with)."""

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown alpha schedule {self.kind!r}; choose {', '.join(SCHEDULES)}")
        if not 0.0 <= self.start <= 1.0:
            raise ValueError(f"start must lie in [0, 1], got {self.start}")
        if self.steps <= 0:
            raise ValueError(f"steps must be positive, got {self.steps}")
        if not 0.0 < self.floor < 1.0:
            raise ValueError(f"floor must lie in (0, 1), got {self.floor}")
        if not 0.0 < self.end <= 1.0:
            raise ValueError(f"end must lie in (0, 1], got {self.end}")

    def __call__(self, step: int) -> float:
        """α after ``step`` learner steps, in [0, ``end``], non-decreasing."""
        return min(self._rise(step), self.end)

    def _rise(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self.kind == "constant":
            return self.start
        if step >= self.steps:
            return 1.0
        frac = step / self.steps
        if self.kind == "linear":
            return self.start + (1.0 - self.start) * frac
        gap0 = 1.0 - self.start
        if gap0 <= self.floor:
            return self.start  # already within the floor: hold until the end snaps to 1
        return 1.0 - gap0 * math.exp(frac * math.log(self.floor / gap0))
