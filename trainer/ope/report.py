"""The OPE report of a candidate on logged decisions (what ``ialp ope`` prints and writes).

Estimand: the candidate's expected reward *per decision* on the logged states (a
contextual bandit: each decision scored by its immediate feedback; the state distribution
is the one the served policies produced). Rows used:

* the fed-back item at the first slate position, or with an unknown position (the stored
  decision expired; with k = 1 the position is always 0). Rows known to be at a later
  position are skipped: their logged propensity is conditional on the items drawn before
  them, which the candidate's top-item probability does not match;
* logged propensity < 1. A propensity of 1 is a greedy decision (``explore=False``): the
  logging policy could not have shown anything else, so no weight can correct for it.

Intervals: percentile bootstrap resampling *users* (decisions of one user are correlated).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policy.mixed import MixedPolicy
from trainer.ope.candidate import target_and_cross_direct
from trainer.ope.estimators import bootstrap_interval, step_estimates
from trainer.ope.logs import LogError, LoggedRecord, to_arrays

DETERMINISTIC = 1.0 - 1e-9
"""Logged propensities at or above this are treated as greedy (deterministic) decisions."""


def evaluate_records(
    records: Sequence[LoggedRecord],
    policy: MixedPolicy,
    *,
    direct: str = "reward-model",
    clip: float | None = None,
    soften: float = 0.0,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """IPS / SNIPS / DR of ``policy`` on ``records`` and the logged (served) mean reward,
    with diagnostics. Raises :class:`LogError` when no usable decision is left."""
    if not records:
        raise LogError("no logged decisions (empty feedback stream or export, or nothing "
                       "after --since)")
    later = [r for r in records if r.position > 0]
    greedy = [r for r in records
              if r.position <= 0 and r.transition.propensity >= DETERMINISTIC]
    used = [r for r in records
            if r.position <= 0 and r.transition.propensity < DETERMINISTIC]
    skipped = {"later_position": len(later), "deterministic_logging": len(greedy)}
    if not used:
        raise LogError(f"none of the {len(records)} logged decisions can be evaluated "
                       f"(skipped: {skipped}); off-policy evaluation needs decisions served "
                       "with exploration (propensity < 1) at the first slate position")
    arr = to_arrays([r.transition for r in used], max_len=max(policy.config.max_len, 50))
    pi, q, v = target_and_cross_direct(policy, arr.histories, arr.user_ids, arr.actions,
                                       arr.rewards, arr.user_ids, direct=direct,
                                       soften=soften, seed=seed)
    est = step_estimates(arr.rewards, pi, arr.propensities, q_logged=q, v_target=v,
                         clip=clip, groups=arr.user_ids, n_boot=n_boot, level=level,
                         seed=seed)
    # The served policies' own value on the same decisions, resampled the same way.
    _, inv = np.unique(arr.user_ids, return_inverse=True)
    stats = np.zeros((int(inv.max()) + 1, 2))
    np.add.at(stats, inv, np.stack([arr.rewards, np.ones(len(arr))], axis=1))
    lo, hi = bootstrap_interval(stats, lambda s: s[..., 0] / s[..., 1], n_boot=n_boot,
                                level=level, seed=seed + 99)
    times = [r.logged_at for r in used if np.isfinite(r.logged_at)]
    return {
        "estimand": "expected reward per decision on the logged states (first position)",
        "candidate": {"version": int(policy.version), "scheme": policy.scheme,
                      "alpha": float(policy.alpha), "head": policy.head,
                      "exploration": policy.exploration.strategy,
                      "epsilon": float(policy.exploration.epsilon),
                      "num_items": int(policy.num_items)},
        "settings": {"direct": direct, "clip": clip, "soften": soften, "n_boot": n_boot,
                     "level": level, "seed": seed, "bootstrap_groups": "user_id"},
        "decisions": {"logged": len(records), "used": len(used), "skipped": skipped,
                      "users": int(stats.shape[0]),
                      "by_version": {str(k): c for k, c in
                                     sorted(Counter(int(x) for x in arr.versions).items())},
                      "first_logged_at": min(times) if times else None,
                      "last_logged_at": max(times) if times else None},
        "logged": {"value": float(arr.rewards.mean()), "low": lo, "high": hi},
        "estimates": {k: e.to_dict() for k, e in est.items()},
        "weights": {"ess": est["ips"].ess, "max": est["ips"].max_weight,
                    "mean": float(np.mean(pi / arr.propensities)),
                    "zero_target_share": float(np.mean(pi == 0.0))},
    }


def report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows: the logged value, then one row per estimator."""
    lg = report["logged"]
    rows = [{"estimator": "logged (served)", "value": lg["value"], "low": lg["low"],
             "high": lg["high"], "ess": float(report["decisions"]["used"])}]
    for name, e in report["estimates"].items():
        rows.append({"estimator": name, "value": e["value"],
                     "low": float("nan") if e["low"] is None else e["low"],
                     "high": float("nan") if e["high"] is None else e["high"],
                     "ess": e["ess"]})
    return rows


def plot_report(report: dict[str, Any], path: str | Path, *, title: str = "") -> Path:
    """Estimates with their intervals beside the logged value (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report_rows(report)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for i, r in enumerate(rows):
        lo = r["value"] if not np.isfinite(r["low"]) else r["low"]
        hi = r["value"] if not np.isfinite(r["high"]) else r["high"]
        ax.errorbar([i], [r["value"]], yerr=[[r["value"] - lo], [hi - r["value"]]],
                    fmt="o", capsize=5, color="grey" if i == 0 else "C0")
    ax.set_xticks(range(len(rows)), [r["estimator"] for r in rows])
    ax.set_ylabel("reward per decision")
    ax.set_title(title or f"candidate v{report['candidate']['version']}: OPE "
                 f"({report['decisions']['used']} decisions, "
                 f"{int(report['settings']['level'] * 100)} % bootstrap)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
