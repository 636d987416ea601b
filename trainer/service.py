"""The online trainer process: feedback stream in, new policy versions out.

Loop: read deliveries from the :class:`~trainer.bus.FeedbackBus` (own pending entries
first after a restart, then idle entries claimed from dead consumers, then new ones),
dead-letter transitions that do not fit the catalogue, *commit* the rest (learned marker
+ durable buffer + acknowledgement in one atomic step, so each event id enters the
buffer once), and every ``update_every`` buffered transitions run one learner update,
anneal α and publish a new version (weights + α + metadata) through
:class:`~trainer.publication.PolicyRegistry`. Each publication is first checkpointed to
disk, so a restarted trainer continues from the last published version and α. A
rollback made through the API (``current`` names an older version) is noticed before
the next update and training continues from that version.

Schemes: ``ap`` serves π̃ = (1-α)·πθ + α·πβ with θ frozen and β learned, α following
the schedule; ``ft`` (and ``none``) serve the learned network alone (α = 0). Until a
learner with its own A-iALP scheme exists, ``ap`` trains β with the configured learner
(default A2C) and composes the mixture here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from policy.types import Transition
from trainer.audit import LearnAudit
from trainer.bus import Delivery, FeedbackBus, transition_to_json
from trainer.guardrail import GuardConfig, RewardGuard
from trainer.publication import PolicyRegistry, nonfinite_parameters

if TYPE_CHECKING:
    from policy.mixed import MixedPolicy

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
POLICY_DIR = "policy"


class TrainerSettings(BaseSettings):
    """Configuration of ``ialp trainer`` (environment ``IALP_*`` or flags)."""

    model_config = SettingsConfigDict(env_prefix="IALP_", extra="ignore")

    redis_url: str | None = Field(
        default=None, description="Redis URL; unset uses (or starts) the embedded server.")
    embedded_redis_port: int = Field(default=6399, description="Embedded server port.")
    embedded_redis_dir: Path | None = Field(default=None, description="Embedded data dir.")
    namespace: str = Field(default="ialp", pattern=r"^[A-Za-z0-9_.-]+$",
                           description="Prefix of every Redis key of this deployment.")
    checkpoint: Path | None = Field(
        default=None, description="Initial policy (θ) when neither the state directory "
        "nor Redis holds one.")
    state_dir: Path = Field(
        default=Path("runs/trainer"), description="Where the trainer checkpoints every "
        "published version and its counters (restart continues from here).")
    num_items: int = Field(default=300, ge=1, description="Catalogue size of the untrained "
                           "policy used when no checkpoint exists.")
    max_len: int = Field(default=50, ge=1, description="History window of that policy.")
    seed: int = Field(default=0, description="Seed of initialisation and learning.")
    method: str | None = Field(
        default=None, description="Learner passed to make_learner(); unset: the scheme's "
        "own (ap: the eq. 15 learner, ft: the fine-tune learner), the same classes the "
        "in-process experiments use. Any other registered learner must publish the scheme.")
    scheme: Literal["ap", "ft"] = Field(
        default="ap", description="ap: learn β beside frozen θ, anneal α; ft: fine-tune θ.")
    beta_init: Literal["copy", "random"] = Field(
        default="copy", description="ap: β starts as a copy of θ (Alg. 2) or random "
        "(section 5.4).")
    learner_options: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword arguments of make_learner (JSON).")
    update_every: int = Field(default=64, ge=1, description="Transitions per update.")
    flush_idle_s: float = Field(
        default=5.0, ge=0.0, description="Update with fewer transitions after this long "
        "without new ones (0: never), so quiet periods still get learned.")
    alpha_schedule: str = Field(default="linear", description="constant/linear/exponential.")
    alpha_start: float = Field(default=0.0, ge=0.0, le=1.0, description="α at update 0.")
    alpha_steps: int = Field(default=200, ge=1, description="Updates until α = 1.")
    keep_versions: int = Field(default=5, ge=1, description="Versions kept for rollback.")
    group: str = Field(default="trainer", description="Consumer group name.")
    consumer: str = Field(
        default_factory=lambda: f"trainer-{socket.gethostname()}",
        description="Consumer name; stable across restarts so a restarted trainer re-reads "
        "its own pending entries (give each trainer on one host its own name).")
    read_count: int = Field(default=256, ge=1, description="Entries per stream read.")
    block_ms: int = Field(default=500, ge=1, description="Longest blocking read.")
    claim_idle_ms: int = Field(default=30_000, ge=1, description="Idle time after which "
                               "another consumer's pending entry is claimed.")
    claim_every_s: float = Field(default=5.0, gt=0.0, description="Claim interval.")
    max_deliveries: int = Field(default=5, ge=1, description="Deliveries before an entry "
                                "is dead-lettered.")
    dedup_ttl_s: int = Field(default=7 * 24 * 3600, ge=1, description="How long learned "
                             "event ids are remembered.")
    metrics_port: int = Field(default=0, ge=0, description="Prometheus port (0: off).")
    redis_timeout_s: float = Field(
        default=10.0, gt=0.0, description="Socket timeout of Redis commands (beyond the "
        "blocking read's own wait): a silent connection fails instead of hanging.")
    audit_log: Path | None = Field(
        default=None, description="Append which event ids each saved state learned "
        "(JSON lines, trainer/audit.py); unset: off.")
    torch_threads: int = Field(default=1, ge=1, description="Intra-op threads of torch.")
    guard_window: int = Field(
        default=2000, ge=0, description="Reward guardrail: feedback transitions compared "
        "per check (sliding window; 0 disables the guardrail).")
    guard_min_samples: int = Field(
        default=50, ge=2, description="Reward guardrail: samples each source (theta, beta) "
        "needs in the window before a verdict.")
    guard_z: float = Field(
        default=3.0, gt=0.0, description="Reward guardrail: one-sided z threshold of "
        "mean_theta - mean_beta.")
    guard_margin: float = Field(
        default=0.0, ge=0.0, description="Reward guardrail: reward gap tolerated.")
    guard_backoff: float = Field(
        default=0.5, ge=0.0, lt=1.0, description="Reward guardrail: on alarm the α "
        "schedule's step is multiplied by this.")


@dataclass
class TrainerState:
    """Counters saved beside each checkpoint."""

    version: int = 0
    """Last published version."""
    updates: int = 0
    """Learner updates so far (the α schedule's step)."""
    events_learned: int = 0
    """Transitions consumed by updates."""
    alpha_step: int | None = None
    """Step of the α schedule (``None``: equal to ``updates``); the reward guardrail
    pulls it back, so it can lag ``updates``."""
    consumed_ids: list[str] = field(default_factory=list)
    """Event ids inside this state (learned, or consumed by a refused update) that may
    still sit in Redis' durable buffer: a restart removes exactly these, by id."""

    def __post_init__(self) -> None:
        if self.alpha_step == self.updates:
            self.alpha_step = None  # one representation of "the schedule follows updates"

    @property
    def anneal_step(self) -> int:
        """The α schedule's step."""
        return self.updates if self.alpha_step is None else self.alpha_step

    def save(self, directory: Path) -> None:
        """Atomic write of ``trainer_state.json``."""
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, directory / STATE_FILE)

    @classmethod
    def load(cls, directory: Path) -> TrainerState | None:
        """The saved state, or ``None``."""
        path = directory / STATE_FILE
        if not path.is_file():
            return None
        d = json.loads(path.read_text())
        step = d.get("alpha_step")
        return cls(int(d["version"]), int(d["updates"]), int(d["events_learned"]),
                   None if step is None else int(step),
                   [str(x) for x in d.get("consumed_ids", [])])


class TrainerMetrics:
    """Prometheus collectors of the trainer."""

    def __init__(self) -> None:
        """Own registry (several trainers can live in one test process)."""
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.events_learned = Counter("ialp_trainer_events_learned",
                                      "Transitions learned into a published version.",
                                      registry=r)
        self.events_buffered = Counter("ialp_trainer_events_buffered",
                                       "Transitions committed to the replay buffer.",
                                       registry=r)
        self.duplicates = Counter("ialp_trainer_duplicates",
                                  "Deliveries of already learned event ids.", registry=r)
        self.dead_lettered = Counter("ialp_trainer_dead_lettered",
                                     "Entries parked in the dead-letter stream.", registry=r)
        self.updates = Counter("ialp_trainer_updates",
                               "Learner updates inside a published version.", registry=r)
        self.update_seconds = Histogram("ialp_trainer_update_seconds",
                                        "Duration of one update + publication.", registry=r)
        self.version = Gauge("ialp_trainer_policy_version", "Last published version.",
                             registry=r)
        self.alpha = Gauge("ialp_trainer_alpha", "α of the last published version.",
                           registry=r)
        self.buffer = Gauge("ialp_trainer_buffer_size", "Transitions awaiting an update.",
                            registry=r)
        self.rejected_updates = Counter(
            "ialp_trainer_rejected_updates", "Updates not published because the loss or "
            "the weights became non-finite (the last good version stays served).",
            ["reason"], registry=r)
        for reason in ("nonfinite_loss", "nonfinite_weights"):
            self.rejected_updates.labels(reason=reason)
        self.events_rejected = Counter(
            "ialp_trainer_events_rejected", "Transitions of rejected updates (consumed, "
            "not learned).", registry=r)
        self.guard_alarm = Gauge(
            "ialp_trainer_guardrail_alarm", "1 while the learnable policy's online reward "
            "is measurably below the frozen policy's (α is being pulled back).", registry=r)
        self.guard_alarms = Counter(
            "ialp_trainer_guardrail_alarms", "Updates at which the guardrail pulled α "
            "back.", registry=r)
        self.guard_reward = Gauge(
            "ialp_trainer_guardrail_mean_reward", "Mean online reward per source over the "
            "guardrail window.", ["source"], registry=r)
        self.guard_z = Gauge("ialp_trainer_guardrail_z", "Welch z of mean_theta - "
                             "mean_beta over the window (nan without a verdict).",
                             registry=r)


class NonFinitePolicyError(ValueError):
    """A composed policy holds NaN or infinite values and must not be published."""


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


class TrainerService:
    """One trainer: owns the learner, the buffer and publication."""

    def __init__(self, settings: TrainerSettings, bus: FeedbackBus,
                 registry: PolicyRegistry, *, stats_client: Any | None = None,
                 metrics: TrainerMetrics | None = None) -> None:
        """``stats_client`` (Redis) receives the counters hash read by ``/v1/policy``."""
        self.settings = settings
        self.bus = bus
        self.registry = registry
        self.stats_client = stats_client
        self.metrics = metrics or TrainerMetrics()
        self.state = TrainerState()
        self.buffer: list[Transition] = []
        self.learner: Any = None
        self.policy: MixedPolicy | None = None  # last published
        self.num_items = 0
        self.max_len = 0
        self._publication_due = False
        # Event ids learned (or refused) in memory and still in Redis' durable buffer;
        # trimmed by id once published, so a retry after a lost reply trims nothing more.
        self._consumed_ids: list[str] = []
        self._unpublished_ids: list[str] = []  # learned since the last publication
        self._unpublished_updates = 0
        self._last_new = time.monotonic()
        self._stop = asyncio.Event()
        self._needs_resync = False
        self._guard_alarmed = False
        self.audit = LearnAudit(settings.audit_log) if settings.audit_log else None
        s = settings
        self.guard = RewardGuard(GuardConfig(
            window=s.guard_window, min_samples=s.guard_min_samples, z=s.guard_z,
            margin=s.guard_margin, backoff=s.guard_backoff))

    # -- set-up ------------------------------------------------------------------------
    @property
    def method(self) -> str:
        """The learner's registry name: ``method`` when set, else the scheme's."""
        return self.settings.method or self.settings.scheme

    def _build_learner(self, policy: MixedPolicy) -> None:
        """The scheme's learner from a served policy (any scheme).

        One implementation for every driver: the learner registered for the scheme (the
        same class ``ialp experiment`` trains) owns θ, β, the mixing and α; the trainer
        only feeds it batches and publishes its snapshot."""
        from trainer.learners import make_learner

        s = self.settings
        opts = dict(s.learner_options)
        if self.method == "ap":
            # The trainer's α and β settings reach the learner unless learner_options set them.
            opts.setdefault("alpha_schedule", s.alpha_schedule)
            opts.setdefault("alpha_start", s.alpha_start)
            opts.setdefault("alpha_steps", s.alpha_steps)
            opts.setdefault("beta_init", s.beta_init)
        self.learner = make_learner(self.method, policy.config, seed=s.seed, init=policy, **opts)
        published = self.learner.snapshot().scheme
        if published != s.scheme:
            raise ValueError(
                f"learner {self.method!r} publishes scheme {published!r}, not {s.scheme!r}: "
                f"leave --method unset to use the scheme's learner")
        self.num_items = policy.num_items
        self.max_len = policy.config.max_len

    def _compose(self, version: int, parent: int | None) -> MixedPolicy:
        """The policy to publish after ``self.state.updates`` updates."""
        from policy.checkpoint import now_iso

        policy = self.learner.snapshot()
        snap = policy
        policy.version = version
        policy.metadata = {
            **{k: v for k, v in snap.metadata.items() if isinstance(v, str | int | float)},
            "parent_version": parent, "updates": self.state.updates,
            "events_learned": self.state.events_learned, "created_at": now_iso(),
            "method": self.method, "alpha_step": self.state.anneal_step,
        }
        return policy

    async def _initial_policy(self) -> tuple[MixedPolicy, TrainerState | None]:
        s = self.settings
        saved = TrainerState.load(s.state_dir)
        if saved is not None and (s.state_dir / POLICY_DIR).is_dir():
            from policy.checkpoint import load_checkpoint

            policy = await asyncio.to_thread(load_checkpoint, s.state_dir / POLICY_DIR)
            logger.info("resuming from %s: version %d, %d updates, α=%.3f", s.state_dir,
                        saved.version, saved.updates, policy.alpha)
            return policy, saved
        current = await self.registry.current_version()
        if current is not None:
            policy = await self.registry.load(current)
            logger.info("starting from Redis' current version %d", current)
            return policy, None
        if s.checkpoint is not None:
            from policy.checkpoint import load_checkpoint

            return await asyncio.to_thread(load_checkpoint, s.checkpoint), None
        from policy.checkpoint import init_policy
        from policy.config import PolicyConfig

        return init_policy(PolicyConfig(num_items=s.num_items, max_len=s.max_len),
                           seed=s.seed), None

    async def setup(self) -> None:
        """Resolve the starting policy, rebuild the learner, recover the buffer."""
        policy, saved = await self._initial_policy()
        meta = policy.metadata
        if saved is not None:
            self.state = saved
        else:
            # A policy that was never adapted online (e.g. fresh from iALP pre-training,
            # whose metadata counts offline updates) starts its α schedule at 0.
            fresh = policy.scheme == "none" and "alpha_step" not in meta
            self.state = TrainerState(version=int(policy.version),
                                      updates=int(meta.get("updates", 0) or 0),
                                      events_learned=int(meta.get("events_learned", 0) or 0),
                                      alpha_step=0 if fresh else _opt_int(meta.get("alpha_step")))
        self._build_learner(policy)
        await self.registry.ensure_seq_at_least(self.state.version)
        if saved is not None:
            # A crash between saving a state and trimming the durable buffer leaves
            # transitions of that state in it: the state names them, remove exactly those.
            await self.bus.consume_buffer(saved.consumed_ids,
                                          learned_total=saved.events_learned)
            self.state.consumed_ids = []
        self.buffer = await self.bus.buffered()
        if self.audit is not None:
            self.audit.resume(self.state.updates)
        # Counters continue across restarts (Prometheus counters only go up from here).
        self.metrics.events_learned.inc(self.state.events_learned)
        self.metrics.updates.inc(self.state.updates)
        self.policy = policy
        current = await self.registry.current_version()
        unpublished = saved is not None and saved.version not in await self.registry.versions()
        if current is None or unpublished:
            # Nothing served yet (or Redis was wiped), or the trainer died between saving
            # a version and publishing it: publish what we have. A current version that
            # differs from a published one of ours is a rollback, followed in step().
            await self._publish(parent=current)
        self.metrics.buffer.set(len(self.buffer))
        self.metrics.version.set(self.state.version)
        self.metrics.alpha.set(float(getattr(self.learner, "alpha", 0.0)))

    # -- the loop ------------------------------------------------------------------------
    def _valid(self, t: Transition) -> str | None:
        n = self.num_items
        if not 0 <= t.action < n:
            return f"action {t.action} outside the catalogue of {n} items"
        if any(not 0 <= x < n for x in t.history):
            return f"history item outside the catalogue of {n} items"
        return None

    async def resync(self) -> None:
        """Rebuild the in-memory buffer from Redis, the source of truth.

        After a Redis error the trainer cannot know what a command whose reply was lost
        did: a commit may have buffered and acknowledged its entries, a read may have
        delivered entries that never arrived. The durable buffer, minus what this process
        already learned, is the buffer; the consumer's own pending entries are read again.
        """
        done = set(self._consumed_ids)
        known = {t.event_id for t in self.buffer}
        self.buffer = [t for t in await self.bus.buffered() if t.event_id not in done]
        found = [t for t in self.buffer if t.event_id not in known]
        if found:
            logger.warning("resync: %d committed transitions were missing in memory",
                           len(found))
            self.guard.observe((t.source, t.reward) for t in found)
            self.metrics.events_buffered.inc(len(found))
        self.bus.restart_reading()
        self._needs_resync = False
        self.metrics.buffer.set(len(self.buffer))

    async def _check_buffer(self) -> None:
        """While idle: a commit whose reply came late or never may have buffered entries
        this process does not hold; compare sizes and resync on a mismatch."""
        if self._consumed_ids:
            return  # a trim is still due; the sizes cannot agree yet
        if await self.bus.buffered_count() != len(self.buffer):
            await self.resync()

    async def step(self, deliveries: Sequence[Delivery]) -> int:
        """Commit deliveries and run due updates; returns the number of new transitions."""
        if self._needs_resync:
            await self.resync()
        if not deliveries:
            await self._check_buffer()
        bad = [(d, self._valid(d.event)) for d in deliveries]
        invalid = [(d.entry_id, transition_to_json(d.event), why) for d, why in bad if why]
        if invalid:
            await self.bus.dead_letter(invalid)
            self.metrics.dead_lettered.inc(len(invalid))
        valid = [d for d, why in bad if not why]
        new = await self.bus.commit(valid) if valid else []
        if len(new) < len(valid):
            self.metrics.duplicates.inc(len(valid) - len(new))
        if new:
            self._last_new = time.monotonic()
            self.buffer.extend(new)
            self.guard.observe((t.source, t.reward) for t in new)
            self.metrics.events_buffered.inc(len(new))
        await self.flush()  # a publication that failed earlier goes first
        await self.follow_rollback()
        every = self.settings.update_every
        while len(self.buffer) >= every:
            await self.update(self.buffer[:every])
        idle = time.monotonic() - self._last_new
        if self.buffer and self.settings.flush_idle_s > 0 and idle >= self.settings.flush_idle_s:
            await self.update(list(self.buffer))
        self.metrics.buffer.set(len(self.buffer))
        return len(new)

    async def follow_rollback(self) -> bool:
        """Continue from ``current`` when someone rolled back to an older version."""
        current = await self.registry.current_version()
        if current is None or current == self.state.version:
            return False
        policy = await self.registry.load(current)
        logger.warning("current version is %d (was %d): continuing from it", current,
                       self.state.version)
        self._build_learner(policy)
        meta = policy.metadata
        self.state = TrainerState(version=current,
                                  updates=int(meta.get("updates", 0) or 0),
                                  events_learned=self.state.events_learned,
                                  alpha_step=_opt_int(meta.get("alpha_step")))
        self.policy = policy
        if self.audit is not None:
            self.audit.resume(self.state.updates)
        return True

    async def update(self, batch: list[Transition]) -> dict[str, float]:
        """Learn ``batch`` (the oldest buffered), then publish.

        The batch leaves the in-memory buffer as soon as the learner has used it; if
        publishing fails (Redis down), the publication and the trimming of the durable
        buffer are retried by the next :meth:`step`, so a batch is never learned twice.
        A batch whose loss is not finite is split until the transitions that cause it
        are found: those are quarantined (dead-lettered with the reason), the rest is
        learned — one hostile event never costs the honest ones.
        """
        start = time.perf_counter()
        self._sync_alpha_step()
        learned, bad, stats, steps = await self._fit(batch)
        del self.buffer[: len(batch)]
        if bad:
            await self._quarantine(bad)
        if learned:
            problem = await asyncio.to_thread(self._nonfinite, stats)
            if problem is not None:
                await self._reject(learned, *problem)
                self.metrics.update_seconds.observe(time.perf_counter() - start)
                return stats
            for _ in range(steps):
                self._apply_guardrail()  # reads the schedule step before this update counts
                self.state.updates += 1
                self._sync_alpha_step()
            self.state.events_learned += len(learned)
            ids = [t.event_id for t in learned]
            self._consumed_ids.extend(ids)
            self._publication_due = True
            self._unpublished_ids.extend(ids)
            self._unpublished_updates += steps
        await self.flush()
        self.metrics.update_seconds.observe(time.perf_counter() - start)
        return stats

    async def _fit(
        self, batch: list[Transition]
    ) -> tuple[list[Transition], list[tuple[Transition, str]], dict[str, float], int]:
        """``(learned, [(quarantined, why)], last stats, learner steps)``.

        The learner raises :class:`NonFiniteLossError` before its weights or optimizer
        change; the only state it touches first is the reward range of its target bound,
        which is put back, so a refused attempt leaves no trace and the halves are tried
        on the same learner."""
        from trainer.batch import TransitionBatch
        from trainer.learners.base import NonFiniteLossError

        def _learn(part: list[Transition]) -> dict[str, float]:
            tb = TransitionBatch.from_transitions(part, self.max_len)
            return dict(self.learner.update(tb))

        saved_range = getattr(self.learner, "reward_range", None)
        try:
            stats = await asyncio.to_thread(_learn, batch)
            return batch, [], stats, 1
        except NonFiniteLossError as exc:
            if hasattr(self.learner, "reward_range"):
                self.learner.reward_range = saved_range
            if len(batch) == 1:
                return [], [(batch[0], f"nonfinite_loss: {exc}")], {}, 0
        half = len(batch) // 2
        a = await self._fit(batch[:half])
        b = await self._fit(batch[half:])
        return a[0] + b[0], a[1] + b[1], b[2] or a[2], a[3] + b[3]

    async def _quarantine(self, bad: list[tuple[Transition, str]]) -> None:
        """Park transitions that make the loss non-finite in the dead-letter stream (with
        the reason) and drop them from the buffer; they are never learned."""
        self.metrics.rejected_updates.labels(reason="nonfinite_loss").inc()
        self.metrics.events_rejected.inc(len(bad))
        logger.error("update rejected (nonfinite_loss): %d transitions quarantined in the "
                     "dead-letter stream (event ids %s...), the rest of the batch is learned",
                     len(bad), ",".join(t.event_id for t, _ in bad[:3]))
        await self.bus.quarantine([(t.event_id, transition_to_json(t), why)
                                   for t, why in bad])
        self.metrics.dead_lettered.inc(len(bad))
        ids = [t.event_id for t, _ in bad]
        self._consumed_ids.extend(ids)
        if self.audit is not None:
            self.audit.reject(self.state.updates, ids, "nonfinite_loss")

    def _nonfinite(self, stats: dict[str, float]) -> tuple[str, str] | None:
        """``(reason, what)`` when the update produced NaN/inf losses or weights."""
        bad = sorted(k for k, v in stats.items() if not math.isfinite(float(v)))
        if bad:
            return "nonfinite_loss", ", ".join(f"{k}={stats[k]}" for k in bad)
        # The policy as it would be published (β and the frozen θ it is mixed with).
        tensors = nonfinite_parameters(self._compose(self.state.version, None))
        if tensors:
            return "nonfinite_weights", ", ".join(tensors[:5])
        return None

    async def _reject(self, batch: list[Transition], reason: str, what: str) -> None:
        """Drop a poisoned update (its weights came out non-finite): keep serving the
        last good version and continue learning from it; the batch is consumed (it would
        poison every retry)."""
        self.metrics.rejected_updates.labels(reason=reason).inc()
        self.metrics.events_rejected.inc(len(batch))
        logger.error("update rejected (%s: %s): %d transitions dropped (event ids %s...); "
                     "keeping version %d", reason, what, len(batch),
                     ",".join(t.event_id for t in batch[:3]), self.state.version)
        ids = [t.event_id for t in batch]
        self._consumed_ids.extend(ids)
        if self.audit is not None:
            self.audit.reject(self.state.updates, ids, reason)
        assert self.policy is not None
        # The learner's weights (and optimizer state) are poisoned: restart from the last
        # published version, as after a rollback.
        self._build_learner(self.policy)
        await self.flush()

    def _sync_alpha_step(self) -> None:
        """An ``ap`` learner anneals its own α: keep its step on the trainer's, which the
        reward guardrail may pull back."""
        if hasattr(self.learner, "alpha_step"):
            self.learner.alpha_step = self.state.anneal_step

    def _apply_guardrail(self) -> None:
        """Advance the α schedule, or pull it back while β's users fare worse."""
        verdict = self.guard.check()
        m = self.metrics
        m.guard_reward.labels(source="theta").set(verdict.mean_theta)
        m.guard_reward.labels(source="beta").set(verdict.mean_beta)
        m.guard_z.set(verdict.z)
        step = self.state.anneal_step
        if verdict.alarm and self.settings.scheme == "ap":
            new_step = int(step * self.guard.config.backoff)
            m.guard_alarm.set(1)
            m.guard_alarms.inc()
            logger.warning(
                "guardrail: beta's online reward %.3f (n=%d) is below theta's %.3f (n=%d), "
                "z=%.2f; α step %d -> %d", verdict.mean_beta, verdict.n_beta,
                verdict.mean_theta, verdict.n_theta, verdict.z, step, new_step)
            self.state.alpha_step = new_step
            self._guard_alarmed = True
        else:
            if self._guard_alarmed:
                logger.warning("guardrail cleared: annealing α resumes from step %d", step)
            self._guard_alarmed = False
            m.guard_alarm.set(0)
            # None while the schedule follows the update count (the usual case).
            self.state.alpha_step = None if step == self.state.updates else step + 1

    async def flush(self) -> None:
        """Publish the learned state and trim the durable buffer, if still due."""
        if self._publication_due:
            await self._publish(parent=self.state.version)
            self._publication_due = False
            # Counted once published, so the metrics describe what replicas can serve.
            self.metrics.events_learned.inc(len(self._unpublished_ids))
            self.metrics.updates.inc(self._unpublished_updates)
            self._unpublished_ids = []
            self._unpublished_updates = 0
        if self._consumed_ids:
            # Trim by id and count in one idempotent step; the saved state lists these
            # ids, so a crash before this line is repaired at the next start.
            await self.bus.consume_buffer(self._consumed_ids,
                                          learned_total=self.state.events_learned)
            self._consumed_ids = []

    async def _publish(self, parent: int | None) -> None:
        from policy.checkpoint import policy_to_bytes, save_checkpoint

        version = await self.registry.next_version()
        policy = self._compose(version, parent)
        bad = await asyncio.to_thread(nonfinite_parameters, policy)
        if bad:
            # Last line of defence (e.g. a corrupt starting checkpoint): never publish it.
            self.metrics.rejected_updates.labels(reason="nonfinite_weights").inc()
            logger.error("refusing to publish version %d: non-finite %s", version,
                         ", ".join(bad[:5]))
            raise NonFinitePolicyError(f"policy has non-finite {', '.join(bad[:5])}")
        blob = await asyncio.to_thread(policy_to_bytes, policy)
        # Disk first: a restart must never resume from something older than Redis serves.
        on_disk = TrainerState(version, self.state.updates, self.state.events_learned,
                               self.state.alpha_step, list(self._consumed_ids))
        if self.audit is not None and self._unpublished_ids:
            self.audit.learn(self.state.updates, self._unpublished_ids)
        await asyncio.to_thread(save_checkpoint, policy, self.settings.state_dir / POLICY_DIR)
        await asyncio.to_thread(on_disk.save, self.settings.state_dir)
        await self.registry.publish(policy, blob)
        self.state.version = version
        self.policy = policy
        await self._write_stats({"updates": self.state.updates, "version": version})
        self.metrics.version.set(version)
        self.metrics.alpha.set(policy.alpha)
        logger.info("published version %d (α=%.3f, %d updates, %d events learned)",
                    version, policy.alpha, self.state.updates, self.state.events_learned)

    async def _write_stats(self, values: dict[str, int]) -> None:
        if self.stats_client is not None:
            keys = self.registry.keys
            await self.stats_client.hset(keys.trainer_stats,
                                         mapping={k: int(v) for k, v in values.items()})

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current step."""
        self._stop.set()

    async def run(self) -> None:
        """Read, commit, update, publish until :meth:`stop`."""
        s = self.settings
        while not self._stop.is_set():
            try:
                deliveries = await self.bus.read(s.read_count, s.block_ms)
                await self.step(deliveries)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                from redis.exceptions import RedisError

                if not isinstance(exc, RedisError | OSError):
                    raise
                logger.warning("Redis unavailable (%s); retrying", exc)
                # What the failed command did is unknown: take Redis' word before going on.
                self._needs_resync = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)


async def run_trainer(settings: TrainerSettings) -> None:
    """Connect, set up and run a trainer until SIGTERM/SIGINT."""
    import signal

    import redis.asyncio as aioredis
    import torch

    from trainer.bus import RedisStreamBus
    from trainer.keys import RedisKeys

    torch.set_num_threads(settings.torch_threads)
    embedded = None
    url = settings.redis_url
    if url is None:
        from trainer.redis_server import ensure_embedded_redis

        url, embedded = ensure_embedded_redis(settings.embedded_redis_dir,
                                              settings.embedded_redis_port)
    # A reply that never comes must fail the command (and trigger a resync), not hang it.
    timeout = settings.redis_timeout_s + settings.block_ms / 1000.0
    client = aioredis.Redis.from_url(url, socket_timeout=timeout,
                                     socket_connect_timeout=settings.redis_timeout_s)
    keys = RedisKeys(settings.namespace)
    bus = RedisStreamBus(client, keys, group=settings.group, consumer=settings.consumer,
                         dedup_ttl_s=settings.dedup_ttl_s,
                         claim_idle_ms=settings.claim_idle_ms,
                         claim_every_s=settings.claim_every_s,
                         max_deliveries=settings.max_deliveries)
    registry = PolicyRegistry(client, keys, keep=settings.keep_versions)
    metrics = TrainerMetrics()
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr="127.0.0.1", registry=metrics.registry)
    service = TrainerService(settings, bus, registry, stats_client=client, metrics=metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop)
    try:
        await bus.ensure_group()
        await service.setup()
        logger.info("trainer %s ready (version %d, scheme %s, method %s)", settings.consumer,
                    service.state.version, settings.scheme, settings.method)
        await service.run()
    finally:
        await client.aclose()
        if embedded is not None:
            embedded.stop()
