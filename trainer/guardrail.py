"""Online safety checks of the trainer: reward guardrail and finiteness of what it serves.

Reward guardrail (beyond the paper). Under π̃ = (1-α)·πθ + α·πβ every served item is
drawn by one component, chosen by a coin with probability α independently of the user's
state, and the decision logs which one (``source`` = ``theta`` / ``beta``). The items
drawn by each component are therefore on-policy samples of that component on the live
traffic, so the mean reward of the ``beta``-sourced feedback estimates the value of πβ
and the ``theta``-sourced mean that of πθ, without importance weights. Since
R(π̃) = (1-α)·R(πθ) + α·R(πβ), π̃ is worse than πθ exactly when R(πβ) < R(πθ).

:class:`RewardGuard` keeps the last ``window`` feedback transitions and compares the two
means with a one-sided Welch test: it raises an alarm when

    mean_θ - mean_β > margin + z · sqrt(var_θ/n_θ + var_β/n_β)

and both sources have at least ``min_samples`` transitions in the window. With fewer
samples there is no verdict (not an alarm), so when α has been pulled to 0 and β stops
being served, its old samples leave the window, the alarm clears and annealing resumes:
α rises again and β is judged on fresh traffic.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class GuardConfig:
    """Parameters of the reward guardrail."""

    window: int = 2000
    """Feedback transitions kept (sliding window, all sources together); 0 disables."""
    min_samples: int = 50
    """Transitions each source needs in the window before a verdict is given."""
    z: float = 3.0
    """One-sided z threshold of the Welch test (3: about 0.1% false alarms per check)."""
    margin: float = 0.0
    """Reward gap tolerated before the test (in reward units)."""
    backoff: float = 0.5
    """On alarm the α schedule's step is multiplied by this (α is pulled towards its
    start value, 0 by default)."""


@dataclass(frozen=True)
class GuardVerdict:
    """Outcome of one check."""

    alarm: bool
    """The learnable policy makes users measurably worse off."""
    n_theta: int
    """θ-sourced transitions in the window."""
    n_beta: int
    """β-sourced transitions in the window."""
    mean_theta: float
    """Mean reward of θ's items (nan without samples)."""
    mean_beta: float
    """Mean reward of β's items (nan without samples)."""
    z: float
    """(mean_θ - mean_β - margin) / standard error (nan without a verdict)."""


def _mean_var(xs: list[float]) -> tuple[float, float]:
    n = len(xs)
    if n == 0:
        return math.nan, math.nan
    m = sum(xs) / n
    v = sum((x - m) ** 2 for x in xs) / (n - 1) if n > 1 else 0.0
    return m, v


class RewardGuard:
    """Sliding-window comparison of β's and θ's online reward (see module docstring)."""

    def __init__(self, config: GuardConfig) -> None:
        """An empty window."""
        self.config = config
        self._window: deque[tuple[str, float]] = deque(maxlen=max(1, config.window))

    @property
    def enabled(self) -> bool:
        """False when ``window`` is 0."""
        return self.config.window > 0

    def observe(self, items: Iterable[tuple[str, float]]) -> None:
        """Add ``(source, reward)`` pairs; sources other than theta/beta are ignored."""
        if not self.enabled:
            return
        for source, reward in items:
            if source in ("theta", "beta") and math.isfinite(reward):
                self._window.append((source, float(reward)))

    def check(self) -> GuardVerdict:
        """Compare the two sources over the window."""
        theta = [r for s, r in self._window if s == "theta"]
        beta = [r for s, r in self._window if s == "beta"]
        mt, vt = _mean_var(theta)
        mb, vb = _mean_var(beta)
        c = self.config
        if not self.enabled or min(len(theta), len(beta)) < c.min_samples:
            return GuardVerdict(False, len(theta), len(beta), mt, mb, math.nan)
        se = math.sqrt(vt / len(theta) + vb / len(beta))
        gap = mt - mb - c.margin
        z = gap / se if se > 0 else (math.inf if gap > 0 else -math.inf if gap < 0 else 0.0)
        return GuardVerdict(z > c.z, len(theta), len(beta), mt, mb, z)
