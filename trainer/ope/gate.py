"""The promotion gate's test: is a candidate not worse than the served version, judged
off-policy on the same logged decisions?

Both policies are evaluated with self-normalised IPS on the same decisions (first-position
probabilities from :func:`trainer.ope.candidate.candidate_distribution`, weights against the
logged propensities), and the *difference* D = V(candidate) − V(served) gets a paired
bootstrap interval (users resampled together). This is a non-inferiority test: the
candidate is promoted when the lower end of D's interval is at least ``−margin``, rejected
when the upper end is below ``−margin`` (clearly worse), and left waiting for more data
otherwise. A paired difference is much tighter than two separate intervals: a candidate
equal to the served policy has D ≡ 0 whatever the noise in the logs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from trainer.ope.estimators import bootstrap_interval, effective_sample_size, group_index

Decision = Literal["promote", "reject", "wait"]


@dataclass(frozen=True)
class GateConfig:
    """Settings of the promotion gate."""

    margin: float = 0.0
    """Reward per decision the candidate may lose to the served version and still be
    promoted (0: it must not be shown worse)."""
    level: float = 0.95
    """Confidence level of the interval of the difference."""
    min_samples: int = 200
    """Logged decisions (with a propensity below 1) needed before any verdict."""
    clip: float = 20.0
    """Importance weights are capped here (variance against a small downward bias)."""
    n_boot: int = 500
    """Bootstrap resamples."""
    seed: int = 0
    """Seed of the bootstrap."""


@dataclass(frozen=True)
class GateVerdict:
    """The gate's answer for one candidate on one window of logged decisions."""

    decision: Decision
    """"promote", "reject" or "wait" (not enough evidence either way)."""
    candidate: float
    """SNIPS value of the candidate (mean reward per decision)."""
    served: float
    """SNIPS value of the served version on the same decisions."""
    diff: float
    """candidate − served."""
    diff_low: float
    """Lower end of the interval of ``diff``."""
    diff_high: float
    """Upper end of the interval of ``diff``."""
    n: int
    """Logged decisions used."""
    ess: float
    """Effective sample size of the candidate's weights."""
    reason: str
    """One line a person can read."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe fields (NaN as None)."""
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in asdict(self).items()}


def compare(
    rewards: np.ndarray,
    logging_prob: np.ndarray,
    candidate_prob: np.ndarray,
    served_prob: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    config: GateConfig | None = None,
) -> GateVerdict:
    """The verdict for a candidate: [n] rewards, the logged propensities μ(a_i|s_i), and
    each policy's probability of the logged action π(a_i|s_i)."""
    cfg = config or GateConfig()
    r = np.asarray(rewards, dtype=np.float64)
    mu = np.asarray(logging_prob, dtype=np.float64)
    n = len(r)
    if n < cfg.min_samples:
        return GateVerdict("wait", float("nan"), float("nan"), float("nan"), float("nan"),
                           float("nan"), n, 0.0,
                           f"{n} logged decisions, {cfg.min_samples} needed")
    if np.any(mu <= 0.0) or not np.all(np.isfinite(r)):
        raise ValueError("logged propensities must be positive and rewards finite")
    wc = np.minimum(np.asarray(candidate_prob, dtype=np.float64) / mu, cfg.clip)
    ws = np.minimum(np.asarray(served_prob, dtype=np.float64) / mu, cfg.clip)
    gi, g = group_index(groups, n)
    stats = np.zeros((g, 4))
    np.add.at(stats, gi, np.stack([wc * r, wc, ws * r, ws], axis=1))

    def diff(s: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return s[..., 0] / s[..., 1] - s[..., 2] / s[..., 3]

    total = stats.sum(axis=0)
    cand = float(total[0] / total[1]) if total[1] > 0 else float("nan")
    served = float(total[2] / total[3]) if total[3] > 0 else float("nan")
    d = cand - served
    lo, hi = bootstrap_interval(stats, diff, n_boot=cfg.n_boot, level=cfg.level,
                                seed=cfg.seed)
    ess = effective_sample_size(wc)
    pct = f"{cfg.level:.0%}"
    if not np.isfinite(lo) or not np.isfinite(d):
        decision: Decision = "wait"
        reason = "the candidate puts no weight on the logged decisions"
    elif lo >= -cfg.margin:
        decision = "promote"
        reason = (f"candidate − served = {d:+.4f}, {pct} interval [{lo:+.4f}, {hi:+.4f}] "
                  f"lies above −{cfg.margin:g}")
    elif hi < -cfg.margin:
        decision = "reject"
        reason = (f"candidate − served = {d:+.4f}, {pct} interval [{lo:+.4f}, {hi:+.4f}] "
                  f"lies below −{cfg.margin:g}")
    else:
        decision = "wait"
        reason = (f"candidate − served = {d:+.4f}, {pct} interval [{lo:+.4f}, {hi:+.4f}] "
                  f"contains −{cfg.margin:g}: more data needed")
    return GateVerdict(decision, cand, served, d, lo, hi, n, ess, reason)
