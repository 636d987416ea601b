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

What is compared (``metric``). Where users leave (sessions end: feedback with
``done``), the reward per decision misjudges: a policy that keeps users longer may earn a
little less per item and far more per session (measured in the Coat demo: β's items
averaged 1.87 against θ's 2.08 while β's sessions were four times longer and its Return
57 against 15). The ``session`` value of a source is its reward per decision divided by
its leave rate per decision, r̄ / p̂(done), the Return of a session whose every decision
that source made (a geometric session length); its variance comes from the delta method.
``auto`` (default) uses it once the window holds ``min_sessions`` ended sessions (both
sources together: the better a source keeps users, the fewer sessions it ends) and the
reward per decision otherwise (continuing tasks, no ``done`` at all). The leave rate is
Laplace-smoothed, (ended + 1) / (n + 2), so a source nobody has left yet gets a large but
uncertain value.
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
    metric: str = "auto"
    """"reward" (per decision), "session" (reward per decision / leave rate) or "auto"."""
    min_sessions: int = 10
    """Ended sessions (``done``, both sources together) before ``auto`` uses ``session``."""


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
    """(value_θ - value_β - margin) / standard error (nan without a verdict)."""
    metric: str = "reward"
    """What was compared: "reward" per decision or "session" value."""
    value_theta: float = math.nan
    """θ's compared value (= ``mean_theta`` for the reward metric)."""
    value_beta: float = math.nan
    """β's compared value."""


def _mean_var(xs: list[float]) -> tuple[float, float]:
    n = len(xs)
    if n == 0:
        return math.nan, math.nan
    m = sum(xs) / n
    v = sum((x - m) ** 2 for x in xs) / (n - 1) if n > 1 else 0.0
    return m, v


def source_value(rewards: list[float], dones: list[bool], metric: str) -> tuple[float, float]:
    """``(value, variance of the estimate)`` of one source's feedback: the mean reward per
    decision, or with ``metric == "session"`` the reward per decision over the leave rate
    (delta method)."""
    n = len(rewards)
    mr, vr = _mean_var(rewards)
    if n < 2:
        return mr, math.nan
    if metric != "session":
        return mr, vr / n
    d = [1.0 if x else 0.0 for x in dones]
    _, vd = _mean_var(d)
    # Laplace-smoothed leave rate: a side that nobody left yet gets a finite, uncertain
    # value instead of an infinite one.
    md = (sum(d) + 1.0) / (n + 2.0)
    cov = sum((r - mr) * (x - md) for r, x in zip(rewards, d, strict=True)) / (n - 1)
    value = mr / md
    var = (vr / md**2 - 2 * mr * cov / md**3 + mr**2 * vd / md**4) / n
    return value, max(var, 0.0)


def choose_metric(metric: str, dones: Iterable[list[bool]], min_sessions: int) -> str:
    """``metric``, with "auto" resolved: "session" when the groups together hold
    ``min_sessions`` ended sessions (users do leave), else "reward". Counted together on
    purpose: the side that keeps users longest ends the fewest sessions."""
    if metric != "auto":
        return metric
    return "session" if sum(sum(d) for d in dones) >= min_sessions else "reward"


def welch_z(a: tuple[float, float], b: tuple[float, float], margin: float) -> float:
    """(value_a − value_b − margin) / se from two ``(value, variance)`` estimates."""
    gap = a[0] - b[0] - margin
    se = math.sqrt(a[1] + b[1])
    if not math.isfinite(gap):
        return math.nan
    return gap / se if se > 0 else (math.inf if gap > 0 else -math.inf if gap < 0 else 0.0)


class RewardGuard:
    """Sliding-window comparison of β's and θ's online reward (see module docstring)."""

    def __init__(self, config: GuardConfig) -> None:
        """An empty window."""
        self.config = config
        self._window: deque[tuple[str, float, bool]] = deque(maxlen=max(1, config.window))

    @property
    def enabled(self) -> bool:
        """False when ``window`` is 0."""
        return self.config.window > 0

    def observe(self, items: Iterable[tuple[str, float, bool]]) -> None:
        """Add ``(source, reward, done)``; sources other than theta/beta are ignored."""
        if not self.enabled:
            return
        for source, reward, done in items:
            if source in ("theta", "beta") and math.isfinite(reward):
                self._window.append((source, float(reward), bool(done)))

    def check(self) -> GuardVerdict:
        """Compare the two sources over the window."""
        theta = [(r, d) for s, r, d in self._window if s == "theta"]
        beta = [(r, d) for s, r, d in self._window if s == "beta"]
        c = self.config
        rt, dt = [r for r, _ in theta], [d for _, d in theta]
        rb, db = [r for r, _ in beta], [d for _, d in beta]
        mt, mb = _mean_var(rt)[0], _mean_var(rb)[0]
        if not self.enabled or min(len(theta), len(beta)) < c.min_samples:
            return GuardVerdict(False, len(theta), len(beta), mt, mb, math.nan)
        metric = choose_metric(c.metric, (dt, db), c.min_sessions)
        vt, vb = source_value(rt, dt, metric), source_value(rb, db, metric)
        z = welch_z(vt, vb, c.margin)
        return GuardVerdict(bool(z > c.z), len(theta), len(beta), mt, mb, z, metric,
                            vt[0], vb[0])
