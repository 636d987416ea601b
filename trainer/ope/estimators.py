"""Off-policy estimators on plain arrays: per decision and per trajectory.

Notation: a logged decision i has state s_i, action a_i drawn by the logging policy μ with
propensity μ_i = μ(a_i|s_i), reward r_i. The candidate (target) policy π gives the logged
action probability π_i = π(a_i|s_i). The importance weight is w_i = π_i / μ_i, optionally
clipped at ``clip`` (w_i ← min(w_i, clip): lower variance, biased towards 0 for rewards ≥ 0).

Per decision (a contextual bandit: each decision's value is its immediate reward, and the
states are those the logging policy visited), with n decisions:

* IPS:   V = (1/n) Σ w_i r_i                      unbiased when μ_i > 0 wherever π > 0.
* SNIPS: V = Σ w_i r_i / Σ w_i                     self-normalised: biased O(1/n), lower
  variance, invariant to a constant shift of the rewards.
* DR:    V = (1/n) Σ [ v̂_i + w_i (r_i − q̂_i) ]     q̂_i = q̂(s_i, a_i) is a direct model of
  the reward, v̂_i = Σ_a π(a|s_i) q̂(s_i, a) its value under π. Unbiased when either the
  propensities or the direct model are right.

Per trajectory (the episode Return Σ_t r_t; episodes are padded to a common length T with
``mask``; after its end an episode is absorbing with reward 0 and ratio 1), with the
cumulative weight ρ_{e,t} = Π_{k≤t} w_{e,k} (clipped at ``clip``):

* PDIS:  V = (1/E) Σ_e Σ_t ρ_{e,t} r_{e,t}         per-decision importance sampling.
* WPDIS: V = Σ_t [ Σ_e ρ_{e,t} r_{e,t} / Σ_e ρ_{e,t} ]   weighted (self-normalised per t).
* DR:    V = (1/E) Σ_e Σ_t [ ρ_{e,t} (r_{e,t} − q̂_{e,t}) + ρ_{e,t−1} v̂_{e,t} ]  (Jiang & Li,
  2016), ρ_{e,−1} = 1; q̂ / v̂ of the return-to-go, or any function of the state (it is a
  control variate: a poor one costs variance, not bias).

Effective sample size of weights w: ESS = (Σ w)² / Σ w² (n for equal weights; small
when few decisions carry the estimate).

Confidence intervals: percentile bootstrap, resampling *groups* (by default every decision
its own group; pass episode or user ids so that correlated decisions are resampled
together). The bootstrap does not fix a biased estimator (clipping, a bad direct model in
SNIPS-like ratios) and is optimistic when a few huge weights were never drawn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

STEP_ESTIMATORS = ("ips", "snips", "dr")
TRAJECTORY_ESTIMATORS = ("pdis", "wpdis", "dr")


@dataclass(frozen=True)
class Estimate:
    """One estimator's value with its bootstrap interval and weight diagnostics."""

    estimator: str
    value: float
    low: float
    """Lower end of the (1 − level) percentile bootstrap interval (nan without bootstrap)."""
    high: float
    """Upper end of the interval."""
    ess: float
    """Effective sample size of the (clipped) weights."""
    n: int
    """Decisions (per-decision estimators) or episodes (trajectory estimators)."""
    max_weight: float
    """Largest (clipped) weight."""
    clipped: int
    """How many weights the clip lowered."""
    clip: float | None
    """The clip, or None."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (nan kept as None)."""
        d = asdict(self)
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in d.items()}

    def covers(self, truth: float) -> bool:
        """Whether the interval holds ``truth``."""
        return bool(self.low <= truth <= self.high)


def importance_weights(
    target_prob: np.ndarray, logging_prob: np.ndarray, clip: float | None = None
) -> tuple[np.ndarray, int]:
    """w = π/μ (float64) and how many entries ``clip`` lowered.

    Raises ``ValueError`` on a logging propensity outside (0, 1] or a target probability
    outside [0, 1]: a zero propensity means the action could not have been logged.
    """
    pi = np.asarray(target_prob, dtype=np.float64)
    mu = np.asarray(logging_prob, dtype=np.float64)
    if pi.shape != mu.shape:
        raise ValueError(f"target {pi.shape} and logging {mu.shape} shapes differ")
    if mu.size and (not np.all(np.isfinite(mu)) or mu.min() <= 0.0 or mu.max() > 1.0 + 1e-9):
        raise ValueError("logging propensities must lie in (0, 1]")
    if pi.size and (not np.all(np.isfinite(pi)) or pi.min() < 0.0 or pi.max() > 1.0 + 1e-9):
        raise ValueError("target probabilities must lie in [0, 1]")
    w = pi / mu
    clipped = 0
    if clip is not None:
        if clip <= 0:
            raise ValueError(f"clip must be positive, got {clip}")
        clipped = int((w > clip).sum())
        w = np.minimum(w, clip)
    return w, clipped


def effective_sample_size(weights: np.ndarray) -> float:
    """(Σ w)² / Σ w²; 0 when every weight is 0."""
    w = np.asarray(weights, dtype=np.float64)
    sq = float((w * w).sum())
    return 0.0 if sq <= 0.0 else float(w.sum()) ** 2 / sq


def group_index(groups: np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    """``(row → group number [n], number of groups)``; every row its own group without
    ``groups``."""
    if groups is None:
        return np.arange(n), n
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups must have one entry per row ({n}), got {g.shape}")
    _, inv = np.unique(g, return_inverse=True)
    return inv.reshape(-1), int(inv.max()) + 1 if n else 0


def bootstrap_interval(
    stats: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    *,
    n_boot: int,
    level: float,
    seed: int,
    chunk: int = 64,
) -> tuple[float, float]:
    """Percentile interval of ``statistic`` over ``n_boot`` resamples of the rows of
    ``stats`` ([G, ...]: one row of additive sufficient statistics per group, e.g. Σ w r,
    Σ w, count). ``statistic`` maps summed statistics [B, ...] to estimates [B]."""
    if n_boot <= 0 or len(stats) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    g = len(stats)
    flat = stats.reshape(g, -1)
    p = np.full(g, 1.0 / g)
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        counts = rng.multinomial(g, p, size=b).astype(np.float64)  # [b, G]
        out[start:start + b] = statistic((counts @ flat).reshape(b, *stats.shape[1:]))
    out = out[np.isfinite(out)]
    if not len(out):
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(out, [tail, 100.0 - tail])
    return float(lo), float(hi)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def step_estimates(
    rewards: np.ndarray,
    target_prob: np.ndarray,
    logging_prob: np.ndarray,
    *,
    q_logged: np.ndarray | None = None,
    v_target: np.ndarray | None = None,
    clip: float | None = None,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Per-decision IPS, SNIPS and (when ``q_logged`` and ``v_target`` are given) DR.

    ``rewards``, ``target_prob`` (π(a_i|s_i)), ``logging_prob`` (μ(a_i|s_i)), ``q_logged``
    (q̂(s_i, a_i)) and ``v_target`` (Σ_a π(a|s_i) q̂(s_i, a)) are [n] arrays; ``groups`` [n]
    ids resampled together by the bootstrap. The interval is at ``level``.
    """
    r = np.asarray(rewards, dtype=np.float64)
    n = len(r)
    if n == 0:
        raise ValueError("no logged decisions to evaluate")
    if not np.all(np.isfinite(r)):
        raise ValueError("rewards must be finite")
    w, clipped = importance_weights(target_prob, logging_prob, clip)
    if w.shape != r.shape:
        raise ValueError(f"rewards {r.shape} and propensities {w.shape} shapes differ")
    with_dr = q_logged is not None and v_target is not None
    dr_term = np.zeros(n)
    if with_dr:
        q = np.asarray(q_logged, dtype=np.float64)
        v = np.asarray(v_target, dtype=np.float64)
        if q.shape != r.shape or v.shape != r.shape:
            raise ValueError("q_logged and v_target need one entry per decision")
        dr_term = v + w * (r - q)
    gi, g = group_index(groups, n)
    # Per-group sufficient statistics: Σ w r, Σ w, Σ dr, count.
    stats = np.zeros((g, 4))
    np.add.at(stats, gi, np.stack([w * r, w, dr_term, np.ones(n)], axis=1))
    ess = effective_sample_size(w)
    common: dict[str, Any] = {"ess": ess, "n": n, "max_weight": float(w.max()), "clipped": clipped,
              "clip": clip}
    fns: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "ips": lambda s: _safe_div(s[..., 0], s[..., 3]),
        "snips": lambda s: _safe_div(s[..., 0], s[..., 1]),
    }
    if with_dr:
        fns["dr"] = lambda s: _safe_div(s[..., 2], s[..., 3])
    total = stats.sum(axis=0)
    out: dict[str, Estimate] = {}
    for k, (name, fn) in enumerate(fns.items()):
        lo, hi = bootstrap_interval(stats, fn, n_boot=n_boot, level=level, seed=seed + k)
        out[name] = Estimate(name, float(fn(total[None, :])[0]), lo, hi, **common)
    return out


def trajectory_estimates(
    rewards: np.ndarray,
    ratios: np.ndarray,
    mask: np.ndarray,
    *,
    q_logged: np.ndarray | None = None,
    v_target: np.ndarray | None = None,
    clip: float | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Episode-Return estimators PDIS, WPDIS and (with ``q_logged``/``v_target``) DR.

    All inputs are [E, T] arrays, episodes left-aligned: ``ratios`` = π(a_t|s_t)/μ(a_t|s_t)
    of each step, ``mask`` True on real steps. Padding is treated as an absorbing state
    (reward, q̂ and v̂ 0, ratio 1). ``clip`` caps the cumulative weights ρ_{e,t}. The
    bootstrap resamples episodes; ESS is that of the final cumulative weights.
    """
    m = np.asarray(mask, dtype=bool)
    r = np.where(m, np.asarray(rewards, dtype=np.float64), 0.0)
    ratio = np.where(m, np.asarray(ratios, dtype=np.float64), 1.0)
    if r.ndim != 2 or r.shape != ratio.shape:
        raise ValueError("rewards, ratios and mask must be [episodes, steps] arrays")
    e = r.shape[0]
    if e == 0:
        raise ValueError("no logged episodes to evaluate")
    if not (np.all(np.isfinite(ratio)) and ratio.min() >= 0.0):
        raise ValueError("ratios must be finite and non-negative")
    rho = np.cumprod(ratio, axis=1)
    clipped = 0
    if clip is not None:
        clipped = int(((rho > clip) & m).sum())
        rho = np.minimum(rho, clip)
    per_t_num = rho * r  # [E, T]
    pdis_ep = per_t_num.sum(axis=1)  # [E]
    with_dr = q_logged is not None and v_target is not None
    dr_ep = np.zeros(e)
    if with_dr:
        q = np.where(m, np.asarray(q_logged, dtype=np.float64), 0.0)
        v = np.where(m, np.asarray(v_target, dtype=np.float64), 0.0)
        rho_prev = np.concatenate([np.ones((e, 1)), rho[:, :-1]], axis=1)
        dr_ep = (rho * (r - q) + rho_prev * v).sum(axis=1)
    t = r.shape[1]
    # Stats per episode: [PDIS, DR, 1, numerators per t..., denominators per t...]
    stats = np.concatenate([pdis_ep[:, None], dr_ep[:, None], np.ones((e, 1)), per_t_num,
                            rho], axis=1)

    def wpdis(s: np.ndarray) -> np.ndarray:
        num, den = s[..., 3:3 + t], s[..., 3 + t:]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0).sum(axis=-1)

    fns: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "pdis": lambda s: _safe_div(s[..., 0], s[..., 2]),
        "wpdis": wpdis,
    }
    if with_dr:
        fns["dr"] = lambda s: _safe_div(s[..., 1], s[..., 2])
    last = np.where(m.any(axis=1), rho[np.arange(e), np.maximum(m.sum(axis=1) - 1, 0)], 1.0)
    common: dict[str, Any] = {"ess": effective_sample_size(last), "n": e,
              "max_weight": float(rho[m].max()) if m.any() else 0.0,
              "clipped": clipped, "clip": clip}
    total = stats.sum(axis=0)
    out: dict[str, Estimate] = {}
    for k, (name, fn) in enumerate(fns.items()):
        lo, hi = bootstrap_interval(stats, fn, n_boot=n_boot, level=level, seed=seed + k)
        out[name] = Estimate(name, float(fn(total[None, :])[0]), lo, hi, **common)
    return out
