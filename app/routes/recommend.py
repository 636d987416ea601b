"""``POST /v1/recommend``: serve a slate from the current policy."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, HTTPException, Request, Response

from app.item_ids import user_index
from app.recommender import OverloadedError, RecommendCall
from app.schemas import RecommendRequest, RecommendResponse
from app.state import ServiceState
from app.validation import validate_recommend

router = APIRouter(tags=["serving"])


@router.post("/v1/recommend", response_model=RecommendResponse,
             summary="Recommend k items for a user")
async def recommend(req: RecommendRequest, request: Request) -> Response:
    """Serve a slate from the current policy and record the decision for feedback."""
    # The service state straight from the application (what ServiceDep resolves):
    # dependency resolution costs more than anything else this route adds per request.
    svc: ServiceState = request.app.state.svc
    history, exclude = validate_recommend(req, svc.item_ids, svc.settings)
    user = user_index(req.user_id)
    # 128 random bits; with sharded streams, an id in the user's shard.
    event_id = svc.shards.new_event_id(user)
    arm = svc.ab.assign(user, event_id) if svc.ab is not None else "mixed"
    call = RecommendCall(event_id, user, history, req.k, exclude, req.explore, arm)
    try:
        slate, policy, recorded = await svc.recommender.recommend(call)
    except OverloadedError as exc:
        raise HTTPException(503, detail=f"overloaded: {exc}; retry later",
                            headers={"Retry-After": str(svc.settings.retry_after_s)}) from exc
    # The answer is built here, not validated against RecommendResponse again (every
    # field has its declared type by construction; tests check the schema): on the
    # hot path that validation cost as much as the forward pass.
    return Response(orjson.dumps({
        "event_id": event_id, "items": svc.item_ids.to_external(slate.items),
        "propensities": [float(p) for p in slate.propensities],
        "sources": list(slate.sources), "policy_version": int(policy.version),
        "alpha": float(policy.alpha), "decision_recorded": recorded, "arm": arm}),
        media_type="application/json")
