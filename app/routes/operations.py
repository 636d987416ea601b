"""Operations: liveness, readiness, Prometheus metrics, and the optional benchmark route.

:data:`noop_router` holds ``POST /v1/noop``; ``create_app`` includes it only when
``settings.enable_noop`` is on.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse

from app.deps import MetricsDep, ServiceDep
from app.schemas import HealthResponse, RecommendRequest
from app.state import UNAVAILABLE, redis_errors

router = APIRouter(tags=["operations"])
noop_router = APIRouter()


@router.get("/healthz", response_model=HealthResponse, summary="Liveness")
async def healthz(svc: ServiceDep) -> HealthResponse:
    """The process is up and holds a policy."""
    return HealthResponse(status="ok", policy_version=svc.holder.policy.version)


@router.get("/readyz", response_model=HealthResponse,
            summary="Readiness: policy loaded, Redis reachable and decisions recordable",
            responses=UNAVAILABLE)
async def readyz(svc: ServiceDep, response: Response) -> HealthResponse:
    """200 when a policy is loaded, Redis answers PING and accepts a write, else 503.

    A probe write (a small key with a 5 s TTL) stands for the decision writes, so a
    replica whose Redis answers PING but refuses writes (out of memory, read-only
    replica) is taken out of rotation instead of serving slates whose feedback cannot
    be learned. Its outcome also opens or closes the recommend path's Redis gate, so
    the cooldown after a failure ends as soon as Redis is known to be back."""
    try:
        redis_ok = bool(await svc.client.ping())
    except redis_errors():
        redis_ok = False
        svc.gate.failed()
    writable = False
    if redis_ok:
        try:
            await svc.client.set(f"{svc.keys.namespace}:stats:ready", "1", px=5000)
            writable = True
            svc.gate.succeeded()
        except redis_errors():
            svc.gate.failed()
    svc.metrics.redis_up.set(1 if redis_ok else 0)
    if not writable:
        response.status_code = 503
        response.headers["Retry-After"] = str(svc.settings.retry_after_s)
    return HealthResponse(status="ok" if writable else "unavailable", redis=redis_ok,
                          decisions_recordable=writable,
                          policy_version=svc.holder.policy.version)


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
async def prometheus_metrics(metrics: MetricsDep) -> Response:
    """Prometheus text exposition."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@noop_router.post("/v1/noop", include_in_schema=False)
async def noop(req: RecommendRequest) -> dict[str, Any]:
    """Parses like /v1/recommend and answers at once (benchmark baseline)."""
    return {"event_id": "", "items": req.history[: req.k], "propensities": [],
            "sources": [], "policy_version": 0, "alpha": 0.0,
            "decision_recorded": False}
