"""``GET /v1/ab``: the A/B arms and what their users gave (all replicas)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from app.ab import report
from app.deps import ServiceDep
from app.schemas import ABArmReport, ABReport, ErrorResponse
from app.state import UNAVAILABLE, redis_errors, unavailable

router = APIRouter(tags=["policy"])


@router.get("/v1/ab", response_model=ABReport,
            summary="A/B arms: per-arm feedback, mean reward, difference to mixed",
            responses={404: {"model": ErrorResponse, "description": "no A/B arms "
                             "configured"}, **UNAVAILABLE})
async def ab_report(svc: ServiceDep) -> ABReport:
    """Per-arm counts from Redis: feedback events, mean reward with a 95 % interval, and
    the difference to the mixed policy."""
    if svc.ab is None:
        raise HTTPException(404, detail="no A/B arms configured (set IALP_AB_ARMS)")
    try:
        raw = await svc.client.hgetall(svc.keys.ab_stats)
    except redis_errors() as exc:
        raise unavailable(svc.settings, "cannot read the A/B counters") from exc
    rows = report(svc.ab.arms, raw)
    return ABReport(bucketing=svc.settings.ab_bucketing,
                    arms={arm: ABArmReport(**row) for arm, row in rows.items()})
