"""The largest magnitude every logged training metric reached over a run.

A run whose critic diverges shows it in its losses and Q values long before its Return
moves; a mean over the last window hides a spike that came and went. Learners return
metrics per update, and whoever drives them (the experiment runner, Algorithm 1's
pre-training) folds each update's metrics into one :class:`MetricExtremes`, which is
written beside the run's results and checked against the environment's reachable return
(``RecBatchEnv.max_return``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LOSS_KEYS = ("loss", "actor_loss", "critic_loss", "pg_loss")
"""Metrics that are losses (the stability check's "loss" column)."""

VALUE_KEYS = ("q_mean", "q_abs_max", "target_mean", "return_mean")
"""Metrics in the units of a return (the stability check's "Q" column)."""


@dataclass
class MetricExtremes:
    """Running max |value| per metric and a count of non-finite values."""

    max_abs: dict[str, float] = field(default_factory=dict)
    """Largest |value| seen per metric (finite values only)."""
    non_finite: dict[str, int] = field(default_factory=dict)
    """How many NaN or infinite values each metric logged."""
    updates: int = 0
    """Metric records folded in."""

    def add(self, metrics: Mapping[str, Any]) -> None:
        """Fold in one update's metrics (non-numeric entries are ignored)."""
        self.updates += 1
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            v = float(value)
            if not math.isfinite(v):
                self.non_finite[key] = self.non_finite.get(key, 0) + 1
                continue
            if abs(v) > self.max_abs.get(key, -1.0):
                self.max_abs[key] = abs(v)

    def largest(self, keys: tuple[str, ...]) -> float:
        """max |value| over ``keys`` (0 when none was logged)."""
        return max((self.max_abs[k] for k in keys if k in self.max_abs), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        """JSON form: ``max_abs``, ``non_finite`` (total), ``non_finite_by_key``, ``updates``,
        and the largest loss and return-unit value."""
        return {
            "max_abs": dict(sorted(self.max_abs.items())),
            "non_finite": sum(self.non_finite.values()),
            "non_finite_by_key": dict(sorted(self.non_finite.items())),
            "updates": self.updates,
            "max_loss": self.largest(LOSS_KEYS),
            "max_value": self.largest(VALUE_KEYS),
        }


__all__ = ["LOSS_KEYS", "VALUE_KEYS", "MetricExtremes"]
