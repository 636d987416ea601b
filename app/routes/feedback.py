"""``POST /v1/feedback`` and ``POST /v1/feedback/batch``: join users' responses with
their decisions and enqueue them for the trainer."""

from __future__ import annotations

import logging

import orjson
from fastapi import APIRouter, HTTPException, Response
from fastapi.exceptions import RequestValidationError

from app.ab import record_feedback
from app.deps import UNAUTHORIZED, ApiKeyDep, ServiceDep
from app.feedback_batch import counts, ingest_batch, validate_batch
from app.schemas import (
    ErrorResponse,
    FeedbackBatchRequest,
    FeedbackBatchResponse,
    FeedbackRequest,
    FeedbackResponse,
)
from app.state import UNAVAILABLE, redis_errors, unavailable
from app.validation import field_error, validate_reward

logger = logging.getLogger(__name__)

router = APIRouter(tags=["serving"])


@router.post("/v1/feedback", status_code=202, response_model=FeedbackResponse,
             summary="Report the user's response to a recommendation",
             responses={200: {"model": FeedbackResponse,
                              "description": "duplicate: this event already had feedback"},
                        404: {"model": ErrorResponse, "description": "unknown or expired "
                              "event_id"},
                        409: {"model": ErrorResponse, "description": "item_id was not in "
                              "the recommended slate"},
                        **UNAUTHORIZED, **UNAVAILABLE})
async def feedback(body: FeedbackRequest, svc: ServiceDep, response: Response,
                   _auth: ApiKeyDep) -> FeedbackResponse:
    """Join the feedback with its decision and enqueue one transition for the trainer.

    Each event id is accepted once; a repeat is answered 200 with status
    ``duplicate`` and never learned twice."""
    outcomes = svc.metrics.feedback
    validate_reward(body.reward, svc.settings)
    item, why = svc.item_ids.to_index(body.item_id)
    if item is None:
        outcomes.labels(outcome="rejected").inc()
        raise RequestValidationError([field_error(("body", "item_id"), why, "unknown_item",
                                                  body.item_id)])
    try:
        decision = await svc.store.get(body.event_id)
    except redis_errors() as exc:
        outcomes.labels(outcome="unavailable").inc()
        raise unavailable(svc.settings, "cannot read the decision") from exc
    if decision is None:
        outcomes.labels(outcome="rejected").inc()
        raise HTTPException(404, detail=f"unknown or expired event_id '{body.event_id}' "
                            f"(decisions accept feedback for {svc.settings.decision_ttl_s}"
                            f" s; at most the newest {svc.settings.decision_cap} are "
                            "kept)")
    if item not in decision.items:
        outcomes.labels(outcome="rejected").inc()
        slate = svc.item_ids.to_external(decision.items)
        raise HTTPException(409, detail=f"item_id {body.item_id!r} was not recommended "
                            f"in event '{body.event_id}' (slate: {slate})")
    transition = decision.transition(item, body.reward, body.done)
    try:
        stream_id = await svc.bus.publish(transition)
    except redis_errors() as exc:
        outcomes.labels(outcome="unavailable").inc()
        raise unavailable(svc.settings, "cannot enqueue the feedback") from exc
    if stream_id is None:
        outcomes.labels(outcome="duplicate").inc()
        response.status_code = 200
        return FeedbackResponse(event_id=body.event_id, status="duplicate")
    outcomes.labels(outcome="accepted").inc()
    if svc.ab is not None:
        svc.metrics.ab_reward.labels(arm=decision.arm).observe(body.reward)
        try:
            await record_feedback(svc.client, svc.keys.ab_stats, svc.keys.ab_popularity,
                                  decision.arm, item, body.reward)
        except redis_errors() as exc:
            # The event itself is safely enqueued; only the A/B counters miss it (logged).
            logger.warning("A/B counters not updated for %s: %s", body.event_id, exc)
    return FeedbackResponse(event_id=body.event_id, status="accepted",
                            stream_id=stream_id)


@router.post("/v1/feedback/batch", status_code=200, response_model=FeedbackBatchResponse,
             summary="Report many responses in one call",
             responses={**UNAUTHORIZED, **UNAVAILABLE})
async def feedback_batch(body: FeedbackBatchRequest, svc: ServiceDep,
                         _auth: ApiKeyDep) -> Response:
    """Join every event with its decision and enqueue the transitions: one read of the
    decisions and one enqueue script per shard for the whole batch.

    Answers 200 with one result per event, in order (what ``/v1/feedback`` would answer
    for it: accepted, duplicate, unknown_event, not_in_slate). A malformed event makes
    the whole batch 422 (the error's ``loc`` names its index); a Redis failure makes it
    503 with ``Retry-After``, and retrying the same batch is safe: events enqueued before
    the failure come back ``duplicate``, never twice."""
    items = validate_batch(body.events, svc)
    results = await ingest_batch(body.events, items, svc)
    # Built here rather than validated against FeedbackBatchResponse again: every field
    # has its declared type by construction (tests check the schema), and a batch has
    # up to a thousand results.
    return Response(orjson.dumps({"counts": counts(results), "results": results}),
                    media_type="application/json")
