"""The online trainer process: feedback stream in, new policy versions out.

Loop: read deliveries from the :class:`~trainer.transport.bus.FeedbackBus` (own pending entries
first after a restart, then idle entries claimed from dead consumers, then new ones),
dead-letter transitions that do not fit the catalogue, *commit* the rest (learned marker
+ durable buffer + acknowledgement in one atomic step, so each event id enters the
buffer once), and every ``update_every`` buffered transitions run one learner update,
anneal α and publish a new version (weights + α + metadata) through
:class:`~trainer.transport.publication.PublishedPolicies`. Each publication is first checkpointed to
disk, so a restarted trainer continues from the last published version and α. A
rollback made through the API (``current`` names an older version) is noticed before
the next update and training continues from that version.

Schemes: the learner registered for the scheme does the learning and the mixing — ``ap``
(eq. 15: θ frozen, β learned, π̃ = (1-α)·πθ + α·πβ, α annealed) or ``ft`` (θ fine-tuned);
the trainer feeds it batches and publishes its snapshot. The same learner classes run
in ``ialp experiment``.

GenEE service mode (``genee``, scheme ``ap``): a :class:`~trainer.online.genee.GenEEMode`
is fed the same learned transitions as the learner, and every published version restricts
π_β to its pool (``beta_pool``); see ``trainer/online/genee.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from policy.types import CONTROL_SOURCES, Transition
from trainer.audit import LearnAudit
from trainer.online.anneal import GuardedAnneal
from trainer.online.deployment import Deployment
from trainer.online.genee import GenEEMode, nan_if_none
from trainer.online.metrics import TrainerMetrics
from trainer.online.quarantine import fit_or_isolate, invalid_reason, nonfinite_update
from trainer.online.rehearsal import Rehearsal
from trainer.online.settings import TrainerSettings
from trainer.online.state import POLICY_DIR, TrainerState, initial_policy
from trainer.transport.bus import Delivery, FeedbackBus, transition_to_json
from trainer.transport.publication import PublishedPolicies, nonfinite_parameters

if TYPE_CHECKING:
    from policy.mixed import MixedPolicy

logger = logging.getLogger(__name__)


class NonFinitePolicyError(ValueError):
    """A composed policy holds NaN or infinite values and must not be published."""


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


class TrainerService:
    """One trainer: owns the learner, the buffer and publication."""

    def __init__(self, settings: TrainerSettings, bus: FeedbackBus,
                 policies: PublishedPolicies, *, stats_client: Any | None = None,
                 metrics: TrainerMetrics | None = None) -> None:
        """``stats_client`` (Redis) receives the counters hash read by ``/v1/policy``."""
        self.settings = settings
        self.bus = bus
        self.policies = policies
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
        # Transitions counted since the last publication (learned, or consumed as A/B
        # controls): a learner rebuilt from that publication must learn them again.
        self._held: list[Transition] = []
        self._last_new = time.monotonic()
        self._last_publish = -math.inf  # monotonic time of the last publication
        self._stop = asyncio.Event()
        self._needs_resync = False
        self.audit = LearnAudit(settings.audit_log) if settings.audit_log else None
        self.rehearsal: Rehearsal | None = None  # built with the learner (needs max_len)
        self.anneal = GuardedAnneal(settings, self.metrics)
        self.deployment = Deployment(settings, policies, self.metrics)
        self._seen_current: int | None = None  # the last current version followed
        self.genee: GenEEMode | None = None  # built in setup() when settings.genee
        # The GenEE state of the last publication: what re-learning held-back events
        # starts from again (see _requeue_held).
        self._genee_published: dict[str, Any] | None = None

    # -- set-up ------------------------------------------------------------------------
    @property
    def method(self) -> str:
        """The learner's policies name: ``method`` when set, else the scheme's."""
        return self.settings.method or self.settings.scheme

    def _build_learner(self, policy: MixedPolicy) -> None:
        """The scheme's learner from a served policy (any scheme).

        One implementation for every driver: the learner registered for the scheme (the
        same class ``ialp experiment`` trains) owns θ, β, the mixing and α; the trainer
        only feeds it batches and publishes its snapshot."""
        from trainer.learners import make_learner

        s, opts = self.settings, dict(self.settings.learner_options)
        if self.method == "ap":
            # The trainer's α and β settings reach the learner unless learner_options set them.
            opts.setdefault("alpha_schedule", s.alpha_schedule)
            opts.setdefault("alpha_start", s.alpha_start)
            opts.setdefault("alpha_steps", s.alpha_steps)
            opts.setdefault("alpha_end", s.alpha_end)
            opts.setdefault("beta_init", s.beta_init)
        self.learner = make_learner(self.method, policy.config, seed=s.seed, init=policy, **opts)
        published = self.learner.snapshot().scheme
        if published != s.scheme:
            raise ValueError(
                f"learner {self.method!r} publishes scheme {published!r}, not {s.scheme!r}: "
                f"leave --method unset to use the scheme's learner")
        self.num_items = policy.num_items
        self.max_len = policy.config.max_len
        if self.rehearsal is None and s.replay_updates > 0:
            self.rehearsal = Rehearsal(updates=s.replay_updates, capacity=s.replay_capacity,
                                       batch_size=s.replay_batch, max_len=self.max_len,
                                       seed=s.seed + 3)

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
        if self.genee is not None:
            policy.beta_pool = self.genee.items
            policy.metadata.update(self.genee.summary())
        return policy

    async def setup(self) -> None:
        """Resolve the starting policy, rebuild the learner, recover the buffer."""
        policy, saved = await initial_policy(self.settings, self.policies)
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
        if self.settings.genee:
            resume = saved.genee if saved is not None else None
            self.genee = await asyncio.to_thread(GenEEMode.build, self.settings,
                                                 self.num_items, saved=resume)
            self._genee_published = self.genee.state_dict()
            self._genee_metrics()
        self.state.genee = None  # held by self.genee; written only into saved states
        await self.policies.ensure_seq_at_least(self.state.version)
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
        current = await self.policies.current_version()
        self._seen_current = current
        unpublished = saved is not None and saved.version not in await self.policies.versions()
        if current is None or unpublished:
            # Nothing served yet (or Redis was wiped), or the trainer died between saving
            # a version and publishing it: publish what we have. A current version that
            # differs from a published one of ours is a rollback, followed in step().
            await self._publish(parent=current, promote=True if current is None else None)
            self._seen_current = await self.policies.current_version()
        self.metrics.buffer.set(len(self.buffer))
        self.metrics.version.set(self.state.version)
        self.metrics.alpha.set(float(getattr(self.learner, "alpha", 0.0)))

    # -- the loop ------------------------------------------------------------------------
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
            self.anneal.guard.observe((t.source, t.reward, t.done) for t in found)
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
        bad = [(d, invalid_reason(d.event, self.num_items)) for d in deliveries]
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
            self.anneal.guard.observe((t.source, t.reward, t.done) for t in new)
            self.deployment.observe(new)
            self.metrics.events_buffered.inc(len(new))
        await self.flush()  # a publication that failed earlier goes first
        current = await self.policies.current_version()  # read once per step
        outcome = await self.deployment.run(current)
        if outcome is not None and outcome[0] in ("promote", "rollback"):
            current = outcome[1]  # the deployment just made it current
            if outcome[0] == "promote" and current == self.state.version:
                self._seen_current = current  # our own candidate: nothing to follow
        await self.follow_rollback(current)
        every = self.settings.update_every
        while len(self.buffer) >= every:
            await self.update(self.buffer[:every])
        idle = time.monotonic() - self._last_new
        if self.buffer and self.settings.flush_idle_s > 0 and idle >= self.settings.flush_idle_s:
            await self.update(list(self.buffer))
        self.metrics.buffer.set(len(self.buffer))
        return len(new)

    async def follow_rollback(self, current: int | None) -> bool:
        """Continue from Redis' ``current`` version when it changed to one this trainer did
        not just publish: a rollback (admin, :class:`Deployment`) or a foreign promotion."""
        if current is None or current == self._seen_current:
            return False
        self._seen_current = current
        if current == self.state.version:
            return False
        policy = await self.policies.load(current)
        logger.warning("current version is %d (was %d): continuing from it", current,
                       self.state.version)
        self._build_learner(policy)
        meta = policy.metadata
        # Published events stay learned (in the version rolled away from); events held
        # back by the publish interval were never served: they are learned again.
        held = len(self._held)
        if held:
            self._requeue_held(0)
        self.state = TrainerState(version=current,
                                  updates=int(meta.get("updates", 0) or 0),
                                  events_learned=self.state.events_learned - held,
                                  alpha_step=_opt_int(meta.get("alpha_step")))
        self.policy = policy
        if self.audit is not None:
            self.audit.resume(self.state.updates)
        return True

    async def update(self, batch: list[Transition]) -> dict[str, float]:
        """Learn ``batch`` (the oldest buffered; A/B control-arm events are consumed, not
        learned), then publish. The batch leaves the buffer once used; a failed
        publication and trim are retried by the next :meth:`step`, so a batch is never
        learned twice. A batch whose loss is not finite is split until the transitions
        that cause it are quarantined (dead-lettered with the reason) and the rest is
        learned: one hostile event never costs the honest ones."""
        start = time.perf_counter()
        self._sync_alpha_step()
        control = [t for t in batch if t.source in CONTROL_SOURCES]  # A/B controls
        learnable = [t for t in batch if t.source not in CONTROL_SOURCES]
        learned, bad, stats, steps = await fit_or_isolate(self.learner, learnable,
                                                          self.max_len)
        if len(learnable) > 1 and not learned:
            # Every transition fails on its own: the learner may be broken rather than
            # the data. Rebuild it from the last published (finite) version and try once
            # more; what still fails on a known-good learner is the data's fault.
            assert self.policy is not None
            logger.error("every transition of a batch of %d makes the loss non-finite: "
                         "rebuilding the learner from version %d", len(batch),
                         self.policy.version)
            self.metrics.rejected_updates.labels(reason="nonfinite_learner").inc()
            self._restart_learner(insert_at=len(batch))  # behind this batch
            learned, bad, stats, steps = await fit_or_isolate(self.learner, learnable,
                                                              self.max_len)
        del self.buffer[: len(batch)]
        if control:  # consumed and counted exactly once, like learned events
            self.metrics.events_control.inc(len(control))
            self.state.events_learned += len(control)
            self._consumed_ids.extend(t.event_id for t in control)
            self._held.extend(control)
            self._unpublished_ids.extend(t.event_id for t in control)
            self._publication_due = True
        if bad:
            await self._quarantine(bad)
        if learned:
            self._sync_alpha_step()
            if self.rehearsal is not None:
                await self.rehearsal.run(self.learner, learned)
            problem = await asyncio.to_thread(
                nonfinite_update, stats, lambda: self._compose(self.state.version, None))
            if problem is not None:
                await self._reject(learned, *problem)
                self.metrics.update_seconds.observe(time.perf_counter() - start)
                return stats
            for _ in range(steps):
                self.anneal.step(self.state)  # reads the schedule step before this update counts
                self.state.updates += 1
                self._sync_alpha_step()
            self.state.events_learned += len(learned)
            ids = [t.event_id for t in learned]
            self._consumed_ids.extend(ids)
            self._publication_due = True
            self._unpublished_ids.extend(ids)
            self._unpublished_updates += steps
            self._held.extend(learned)
            if self.genee is not None:
                # Exactly the learned transitions, once: what the learner learned.
                await self._feed_genee(learned)
        await self.flush()
        self.metrics.update_seconds.observe(time.perf_counter() - start)
        return stats

    async def _feed_genee(self, learned: list[Transition]) -> None:
        """Count learned transitions in the GenEE pool (an iteration that ends proposes,
        possibly through a language model: off the event loop)."""
        assert self.genee is not None
        await asyncio.to_thread(self.genee.feed, learned)
        self._genee_metrics()

    def _genee_metrics(self) -> None:
        if self.genee is not None:
            self.metrics.genee_iteration.set(self.genee.pool.iteration)
            self.metrics.genee_pool_ctr.set(nan_if_none(self.genee.pool_ctr()))
            self.metrics.genee_last_ctr.set(nan_if_none(self.genee.last_ctr()))

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
        # The learner's weights (and optimizer state) are poisoned: restart from the last
        # published version, as after a rollback.
        self._restart_learner(insert_at=0)
        await self.flush()

    def _restart_learner(self, *, insert_at: int) -> None:
        """Rebuild the learner from the last published version. Updates held back by
        ``publish_interval_s`` since then are lost with the old learner: their transitions
        go back into the buffer (at ``insert_at``) and the counters back to that
        version's, so they are learned again — neither lost nor counted twice."""
        assert self.policy is not None
        self._build_learner(self.policy)
        if not self._held:
            return
        meta = self.policy.metadata
        self.state.updates = int(meta.get("updates", 0) or 0)
        self.state.events_learned = int(meta.get("events_learned", 0) or 0)
        self.state.alpha_step = _opt_int(meta.get("alpha_step"))
        self._requeue_held(insert_at)

    def _requeue_held(self, insert_at: int) -> None:
        """Put the held-back transitions back into the buffer; nothing is unpublished."""
        held = {t.event_id for t in self._held}
        logger.warning("%d transitions learned since version %d are learned again",
                       len(held), self.state.version)
        self._consumed_ids = [e for e in self._consumed_ids if e not in held]
        self._unpublished_ids = []
        self._unpublished_updates = 0
        self.buffer[insert_at:insert_at] = self._held
        self._held = []
        self._publication_due = False
        if self.genee is not None and self._genee_published is not None:
            # The pool counted these events too: back to the last publication's pool,
            # so relearning them counts them once.
            self.genee.load_state_dict(self._genee_published)
            self._genee_metrics()

    def _sync_alpha_step(self) -> None:
        """An ``ap`` learner anneals its own α: keep its step on the trainer's, which the
        reward guardrail may pull back."""
        if hasattr(self.learner, "alpha_step"):
            self.learner.alpha_step = self.state.anneal_step

    def publish_wait(self) -> float:
        """Seconds until a due publication may go out (``publish_interval_s`` after the
        last one); 0 when it may go now or none is due."""
        if not self._publication_due:
            return 0.0
        since = time.monotonic() - self._last_publish
        return max(0.0, self.settings.publish_interval_s - since)

    async def flush(self, *, force: bool = False) -> None:
        """Publish the learned state and trim the durable buffer, if still due.

        Within ``publish_interval_s`` of the last publication nothing happens unless
        ``force``: the next step publishes, with the updates made meanwhile. The trim
        waits with it: an event leaves the durable buffer only once a saved state names
        it, so a crash in between re-learns it from the buffer, never loses it."""
        if self._publication_due and not force and self.publish_wait() > 0:
            return
        if self._publication_due:
            await self._publish(parent=self.state.version)
            self._publication_due = False
            # Counted once published, so the metrics describe what replicas can serve.
            self.metrics.events_learned.inc(len(self._unpublished_ids))
            self.metrics.updates.inc(self._unpublished_updates)
            self._unpublished_ids = []
            self._unpublished_updates = 0
            self._held = []
        if self._consumed_ids:
            # Trim by id and count in one idempotent step; the saved state lists these
            # ids, so a crash before this line is repaired at the next start.
            await self.bus.consume_buffer(self._consumed_ids,
                                          learned_total=self.state.events_learned)
            self._consumed_ids = []

    async def _publish(self, parent: int | None, promote: bool | None = None) -> None:
        """Checkpoint, then publish the learned state: as the current version, or as
        the candidate under ``promotion = "gate"`` (``promote`` overrides)."""
        from policy.checkpoint import policy_to_bytes, save_checkpoint

        if promote is None:
            promote = self.settings.promotion == "direct"

        version = await self.policies.next_version()
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
        genee = self.genee.state_dict() if self.genee is not None else None
        on_disk = TrainerState(version, self.state.updates, self.state.events_learned,
                               self.state.alpha_step, list(self._consumed_ids), genee)
        if self.audit is not None and self._unpublished_ids:
            self.audit.learn(self.state.updates, self._unpublished_ids)
        await asyncio.to_thread(save_checkpoint, policy, self.settings.state_dir / POLICY_DIR)
        await asyncio.to_thread(on_disk.save, self.settings.state_dir)
        await self.policies.publish(policy, blob, promote=promote)
        self._last_publish = time.monotonic()
        if promote:
            self._seen_current = version
        self.state.version = version
        self.policy = policy
        stats = {"updates": self.state.updates, "version": version}
        if self.genee is not None:
            self._genee_published = genee
            stats["genee_iteration"] = self.genee.pool.iteration
        await self._write_stats(stats)
        self.metrics.version.set(version)
        self.metrics.alpha.set(policy.alpha)
        logger.info("published version %d (α=%.3f, %d updates, %d events learned)",
                    version, policy.alpha, self.state.updates, self.state.events_learned)

    async def _write_stats(self, values: dict[str, int]) -> None:
        if self.stats_client is not None:
            keys = self.policies.keys
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
                # A held-back publication must not wait for a full blocking read.
                wait = self.publish_wait()
                block = s.block_ms if wait <= 0 else max(1, min(s.block_ms,
                                                                math.ceil(wait * 1000)))
                deliveries = await self.bus.read(s.read_count, block)
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
        if self._publication_due and not self._needs_resync:
            from redis.exceptions import RedisError

            # A clean stop publishes what the interval held back (a crash re-learns it).
            with contextlib.suppress(RedisError, OSError):
                await self.flush(force=True)
