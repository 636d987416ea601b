"""The trainer's side of safe deployment: the promotion gate and automatic rollback.

* **Gate** (``promotion = "gate"``): a new version is published as the *candidate*; it
  becomes current only when off-policy evaluation on the newest logged decisions shows it
  is not worse than the served version (:mod:`trainer.ope.gate`: paired SNIPS difference,
  bootstrap interval, non-inferiority margin). A clearly worse candidate is rejected and
  withdrawn; an undecided one waits for more data, re-evaluated every ``gate_every`` new
  decisions. Candidates from elsewhere (``ialp policy submit``) pass the same gate.
* **Rollback**: the rewards of the feedback logged under the served version are compared
  with those logged under the version it replaced (Welch z over the newest
  ``rollback_window`` events of each, once both have ``rollback_min_samples``); when the
  served one is worse beyond ``rollback_margin`` at ``rollback_z``, the previous version is
  made current again and the bad one is never promoted again.

Every promotion, rejection and rollback is logged, appended to the policy log stream
(``GET /v1/policy/events``) and counted in Prometheus.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from policy.types import Transition
from trainer.guardrail import choose_metric, source_value, welch_z
from trainer.online.metrics import TrainerMetrics
from trainer.online.settings import TrainerSettings
from trainer.ope.gate import GateConfig, GateVerdict, compare
from trainer.transport.publication import PublishedPolicies, VersionNotFoundError

if TYPE_CHECKING:
    from policy.mixed import MixedPolicy

logger = logging.getLogger(__name__)

_VERSIONS_TRACKED = 16
"""Versions whose rewards are remembered for the rollback comparison."""


def logged_action_probs(policy: MixedPolicy, transitions: list[Transition],
                        chunk: int = 512) -> np.ndarray:
    """[n] the probability that ``policy`` puts each logged action first (chunked, so a
    large catalogue never needs an [n, I] matrix)."""
    from trainer.ope.candidate import candidate_distribution
    from trainer.ope.logs import to_arrays

    arrays = to_arrays(transitions, max_len=policy.config.max_len)
    out = np.empty(len(transitions))
    for start in range(0, len(transitions), chunk):
        sl = slice(start, start + chunk)
        probs = candidate_distribution(policy, arrays.histories[sl], arrays.user_ids[sl])
        out[sl] = probs[np.arange(len(probs)), arrays.actions[sl]]
    return out


class Deployment:
    """Gates candidates and rolls back a served version that hurts its users."""

    def __init__(self, settings: TrainerSettings, policies: PublishedPolicies,
                 metrics: TrainerMetrics) -> None:
        s = settings
        self.settings = s
        self.policies = policies
        self.metrics = metrics
        self.gated = s.promotion == "gate"
        self.gate = GateConfig(margin=s.gate_margin, level=s.gate_level,
                               min_samples=s.gate_min_samples)
        self.window: deque[Transition] = deque(maxlen=s.gate_window)
        """Newest logged decisions the gate can re-weight (propensity in (0, 1))."""
        self.rewards: OrderedDict[int, deque[tuple[float, bool]]] = OrderedDict()
        """(reward, done) of the newest feedback per serving version."""
        self.previous: dict[int, int] = {}
        """Served version → the version it replaced."""
        self.rejected: set[int] = set()
        """Versions the gate rejected or that were rolled back: never promoted again."""
        self.last_verdict: dict[int, GateVerdict] = {}
        self._seen_current: int | None = None
        self._logged = 0
        self._evaluated_at: dict[int, int] = {}
        self._loaded: OrderedDict[int, MixedPolicy] = OrderedDict()

    def observe(self, transitions: Iterable[Transition]) -> None:
        """Remember new feedback: rewards per version, re-weightable decisions."""
        for t in transitions:
            if not math.isfinite(t.reward):
                continue
            per = self.rewards.get(t.policy_version)
            if per is None:
                per = self.rewards[t.policy_version] = deque(
                    maxlen=self.settings.rollback_window)
                while len(self.rewards) > _VERSIONS_TRACKED:
                    self.rewards.popitem(last=False)
            per.append((float(t.reward), bool(t.done)))
            if 0.0 < t.propensity < 1.0:
                self.window.append(t)
                self._logged += 1

    async def run(self, current: int | None) -> tuple[str, int] | None:
        """One check against ``current`` (Redis' current version): ``("rollback", to)``,
        ``("promote", version)``, ``("reject", version)`` or ``None``."""
        if current is None:
            return None
        self._track(current)
        to = await self._check_rollback(current)
        if to is not None:
            return "rollback", to
        if self.gated:
            return await self._check_gate(current)
        return None

    def _track(self, current: int) -> None:
        if current != self._seen_current:
            if self._seen_current is not None and current not in self.previous:
                self.previous[current] = self._seen_current
            self._seen_current = current

    # -- rollback ------------------------------------------------------------------------
    async def _check_rollback(self, current: int) -> int | None:
        s = self.settings
        prev = self.previous.get(current)
        if s.rollback_min_samples == 0 or prev is None or prev in self.rejected:
            return None
        served, before = self.rewards.get(current, ()), self.rewards.get(prev, ())
        nb, na = len(served), len(before)
        if min(na, nb) < max(s.rollback_min_samples, 2):
            return None
        ra, da = [r for r, _ in before], [d for _, d in before]
        rb, db = [r for r, _ in served], [d for _, d in served]
        metric = choose_metric(s.guard_metric, (da, db), s.guard_min_sessions)
        (ma, va), (mb, vb) = source_value(ra, da, metric), source_value(rb, db, metric)
        z = welch_z((ma, va), (mb, vb), s.rollback_margin)
        if not z > s.rollback_z:
            return None
        try:
            await self.policies.rollback(to=prev)
        except VersionNotFoundError as exc:
            logger.error("version %d hurts rewards (%.4f vs %.4f, z=%.1f) but cannot be "
                         "rolled back: %s", current, mb, ma, z, exc)
            self.rejected.add(prev)  # do not retry every step
            return None
        self.rejected.add(current)
        self._seen_current = prev
        self.metrics.rollbacks.inc()
        detail = {"from": current, "to": prev, "metric": metric, "served_mean": mb,
                  "served_n": nb, "previous_mean": ma, "previous_n": na, "z": z}
        await self.policies.log_event("rollback", **detail)
        logger.warning("rollback: version %d's %s value %.4f (n=%d) is below version "
                       "%d's %.4f (n=%d), z=%.1f > %.1f; serving %d again", current, metric,
                       mb, nb, prev, ma, na, z, s.rollback_z, prev)
        return prev

    # -- gate ----------------------------------------------------------------------------
    async def _load(self, version: int) -> MixedPolicy:
        if version not in self._loaded:
            self._loaded[version] = await self.policies.load(version)
            while len(self._loaded) > 3:
                self._loaded.popitem(last=False)
        return self._loaded[version]

    def _verdict(self, candidate: MixedPolicy, served: MixedPolicy,
                 data: list[Transition]) -> GateVerdict:
        if len(data) < self.gate.min_samples:  # compare() waits without the probabilities
            pc = ps = np.zeros(len(data))
        else:
            pc, ps = logged_action_probs(candidate, data), logged_action_probs(served, data)
        return compare(np.asarray([t.reward for t in data]),
                       np.asarray([t.propensity for t in data]), pc, ps,
                       groups=np.asarray([t.user_id for t in data]), config=self.gate)

    async def _check_gate(self, current: int) -> tuple[str, int] | None:
        cand = await self.policies.candidate_version()
        if cand is None or cand == current:
            return None
        if cand in self.rejected:
            await self.policies.withdraw_candidate(cand)
            return None
        last = self._evaluated_at.get(cand)
        if last is not None and self._logged - last < self.settings.gate_every:
            return None
        self._evaluated_at[cand] = self._logged
        try:
            candidate, served = await self._load(cand), await self._load(current)
        except VersionNotFoundError as exc:
            logger.warning("promotion gate: %s", exc)
            return None
        if candidate.num_items != served.num_items:
            verdict = GateVerdict("reject", math.nan, math.nan, math.nan, math.nan, math.nan,
                                  0, 0.0, f"candidate has {candidate.num_items} items, the "
                                  f"served version {served.num_items}")
        else:
            verdict = await asyncio.to_thread(self._verdict, candidate, served,
                                              list(self.window))
        self.last_verdict[cand] = verdict
        await self.policies.annotate(cand, gate={**verdict.as_dict(), "served_version": current})
        detail = {"version": cand, "served_version": current, **verdict.as_dict()}
        if verdict.decision == "promote":
            await self.policies.promote(cand)
            self.previous[cand] = current
            self._seen_current = cand
            self.metrics.promotions.inc()
            await self.policies.log_event("promotion", **detail)
            logger.info("promotion gate: version %d promoted over %d (%s)", cand, current,
                        verdict.reason)
            return "promote", cand
        if verdict.decision == "reject":
            self.rejected.add(cand)
            await self.policies.withdraw_candidate(cand)
            self.metrics.gate_rejections.inc()
            await self.policies.log_event("rejection", **detail)
            logger.warning("promotion gate: version %d rejected against %d (%s)", cand,
                           current, verdict.reason)
            return "reject", cand
        logger.info("promotion gate: version %d waits (%s)", cand, verdict.reason)
        return None

