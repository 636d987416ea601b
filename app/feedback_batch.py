"""Batch feedback ingestion: join many events with their decisions and enqueue them in a
few round trips.

``POST /v1/feedback/batch`` does per batch what ``/v1/feedback`` does per event: one MGET
reads every decision (one per shard with sharded streams), the events are joined in
memory, and one Lua call per shard appends every new transition together with its
de-duplication marker (:meth:`~trainer.transport.bus.FeedbackBus.publish_many`). Each event
gets the answer the single endpoint would give it (accepted 202, duplicate 200, unknown
event 404, item not in the slate 409), in the request's order.

Exactly once, with retries: a batch whose Redis calls fail is answered 503 as a whole.
Some shards may have enqueued their part by then; a retry of the same batch finds those
events ``duplicate`` (their markers were set in the same atomic step as the append), so
no event is lost (the client retries) and none is enqueued twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi.exceptions import RequestValidationError

from app.ab import record_feedback_many
from app.schemas import FeedbackRequest
from app.state import ServiceState, redis_errors, unavailable
from app.validation import field_error
from policy.types import Transition

logger = logging.getLogger(__name__)

# The single endpoint's answer for each outcome (reported per event).
CODES = {"accepted": 202, "duplicate": 200, "unknown_event": 404, "not_in_slate": 409}


def validate_batch(events: Sequence[FeedbackRequest], svc: ServiceState) -> list[int]:
    """The events' item indices; 422 naming each bad event's index (batch too long,
    reward out of range, item not in the catalogue)."""
    settings = svc.settings
    if len(events) > settings.feedback_batch_max:
        raise RequestValidationError([field_error(
            ("body", "events"), f"a batch holds at most {settings.feedback_batch_max} "
            f"events, not {len(events)} (IALP_FEEDBACK_BATCH_MAX)", "too_long",
            len(events))])
    errors: list[dict[str, Any]] = []
    items: list[int] = []
    lo, hi = settings.reward_min, settings.reward_max
    for i, ev in enumerate(events):
        if not lo <= ev.reward <= hi:
            errors.append(field_error(
                ("body", "events", i, "reward"), f"reward {ev.reward!r} is outside the "
                f"accepted range [{lo:g}, {hi:g}] (IALP_REWARD_MIN, IALP_REWARD_MAX)",
                "out_of_range", ev.reward))
        item, why = svc.item_ids.to_index(ev.item_id)
        if item is None:
            errors.append(field_error(("body", "events", i, "item_id"), why,
                                      "unknown_item", ev.item_id))
            item = -1
        items.append(item)
        if len(errors) >= 10:  # enough to fix a request; a huge bad body stays cheap
            break
    if errors:
        raise RequestValidationError(errors)
    return items


async def ingest_batch(events: Sequence[FeedbackRequest], items: Sequence[int],
                       svc: ServiceState) -> list[dict[str, Any]]:
    """Join and enqueue ``events`` (``items``: their item indices); one result per event
    (``event_id``, ``status``, ``code``, and ``stream_id`` or ``detail``). Raises the
    503 of :func:`~app.state.unavailable` when Redis fails."""
    outcomes = svc.metrics.feedback
    try:
        decisions = await svc.store.get_many([ev.event_id for ev in events])
    except redis_errors() as exc:
        outcomes.labels(outcome="unavailable").inc(len(events))
        raise unavailable(svc.settings, "cannot read the decisions") from exc
    results: list[dict[str, Any]] = []
    joined: list[Transition] = []
    positions: list[int] = []  # result index of each joined transition
    arms: list[tuple[str, int, float]] = []
    for ev, item, decision in zip(events, items, decisions, strict=True):
        if decision is None:
            results.append(_refused(ev.event_id, "unknown_event", "unknown or expired "
                                    f"event_id (decisions accept feedback for "
                                    f"{svc.settings.decision_ttl_s} s; at most the newest "
                                    f"{svc.settings.decision_cap} are kept)"))
            continue
        if item not in decision.items:
            slate = svc.item_ids.to_external(decision.items)
            results.append(_refused(ev.event_id, "not_in_slate", f"item_id "
                                    f"{ev.item_id!r} was not recommended (slate: {slate})"))
            continue
        positions.append(len(results))
        results.append({})  # filled once enqueued
        joined.append(decision.transition(item, ev.reward, ev.done))
        arms.append((decision.arm, item, ev.reward))
    try:
        stream_ids = await svc.bus.publish_many(joined)
    except redis_errors() as exc:
        outcomes.labels(outcome="unavailable").inc(len(events))
        raise unavailable(svc.settings, "cannot enqueue the feedback") from exc
    accepted: list[tuple[str, int, float]] = []
    for pos, t, stream_id, arm in zip(positions, joined, stream_ids, arms, strict=True):
        if stream_id is None:
            results[pos] = {"event_id": t.event_id, "status": "duplicate",
                            "code": CODES["duplicate"]}
        else:
            results[pos] = {"event_id": t.event_id, "status": "accepted",
                            "code": CODES["accepted"], "stream_id": stream_id}
            accepted.append(arm)
    refused = len(events) - len(joined)
    if refused:
        outcomes.labels(outcome="rejected").inc(refused)
    if accepted:
        outcomes.labels(outcome="accepted").inc(len(accepted))
    if len(joined) > len(accepted):
        outcomes.labels(outcome="duplicate").inc(len(joined) - len(accepted))
    if svc.ab is not None and accepted:
        await _record_ab(svc, accepted)
    return results


def _refused(event_id: str, status: str, detail: str) -> dict[str, Any]:
    return {"event_id": event_id, "status": status, "code": CODES[status], "detail": detail}


async def _record_ab(svc: ServiceState, accepted: Sequence[tuple[str, int, float]]) -> None:
    """Per-arm counters of the accepted events (as /v1/feedback counts them), in one
    round trip."""
    for arm, _, reward in accepted:
        svc.metrics.ab_reward.labels(arm=arm).observe(reward)
    try:
        await record_feedback_many(svc.client, svc.keys.ab_stats, svc.keys.ab_popularity,
                                   accepted)
    except redis_errors() as exc:
        # The events themselves are safely enqueued; only the A/B counters miss them.
        logger.warning("A/B counters not updated for a batch of %d: %s", len(accepted), exc)


def counts(results: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Events per status (every status present, 0 when none)."""
    out = dict.fromkeys(CODES, 0)
    for r in results:
        out[r["status"]] += 1
    return out
