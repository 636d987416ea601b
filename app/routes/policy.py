"""``/v1/policy``: what this replica serves, and the admin rollback to a kept version."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query

from app.deps import UNAUTHORIZED, AdminKeyDep, ServiceDep
from app.schemas import CandidateInfo, ErrorResponse, PolicyEvent, PolicyInfo, RollbackRequest
from app.settings import ServiceSettings
from app.state import UNAVAILABLE, ServiceState, redis_errors, unavailable
from trainer.transport.publication import VersionNotFoundError

if TYPE_CHECKING:
    from policy.mixed import MixedPolicy

router = APIRouter(tags=["policy"])


def _policy_info(policy: MixedPolicy, settings: ServiceSettings, **extra: Any) -> PolicyInfo:
    meta = dict(policy.metadata)

    def _opt_int(v: Any) -> int | None:
        return None if v is None else int(v)

    pool = policy.beta_pool
    genee = {k.removeprefix("genee_"): v for k, v in meta.items() if k.startswith("genee_")}
    return PolicyInfo(
        beta_pool=None if pool is None else list(pool), genee=genee or None,
        version=int(policy.version), scheme=str(policy.scheme), alpha=float(policy.alpha),
        num_items=int(policy.num_items), updates=int(meta.get("updates", 0) or 0),
        events_learned=int(meta.get("events_learned", 0) or 0),
        parent_version=_opt_int(meta.get("parent_version")),
        created_at=None if meta.get("created_at") is None else str(meta["created_at"]),
        reward_min=settings.reward_min, reward_max=settings.reward_max, **extra)


@router.get("/v1/policy", response_model=PolicyInfo,
            summary="The served policy: version, scheme, α, learning progress")
async def policy_info(svc: ServiceDep) -> PolicyInfo:
    """What this replica serves, plus trainer lag and kept versions from Redis."""
    policy = svc.holder.policy
    lag: int | None = None
    lag_s: float | None = None
    kept: list[int] = []
    current: int | None = None
    try:
        stats = await svc.bus.stats()
        lag = max(0, stats["enqueued"] - stats.get("events_learned", 0))
        lag_s = await svc.bus.unread_age_s()
        kept = await svc.policies.versions()
        current = await svc.policies.current_version()
    except redis_errors():
        # Redis' part is optional: the served policy is answered even when it is down.
        pass
    return _policy_info(policy, svc.settings, trainer_lag=lag, trainer_lag_s=lag_s,
                        kept_versions=kept,
                        current_version=current, candidate=await _candidate(svc))


async def _candidate(svc: ServiceState) -> CandidateInfo | None:
    """The candidate as Redis names it, with the gate's verdict and this replica's shadow
    statistics (None when there is none or Redis is down)."""
    try:
        version = await svc.policies.candidate_version()
        if version is None:
            return None
        gate = (await svc.policies.meta(version)).get("gate")
    except VersionNotFoundError:
        return None
    except redis_errors():
        return None
    held = svc.shadow.info() if svc.shadow is not None else None
    shadow = held["shadow"] if held is not None and held["version"] == version else None
    return CandidateInfo(version=version, gate=gate, shadow=shadow)


@router.get("/v1/policy/events", response_model=list[PolicyEvent],
            summary="Deployment events: promotions, rejections, rollbacks (newest first)",
            responses={**UNAVAILABLE})
async def policy_events(svc: ServiceDep,
                        count: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[PolicyEvent]:
    """The deployment log the trainer and ``ialp policy submit`` write."""
    try:
        events = await svc.policies.events(count)
    except redis_errors() as exc:
        raise unavailable(svc.settings, "cannot read the deployment log") from exc
    return [PolicyEvent(id=e.pop("id"), kind=e.pop("kind"), detail=e) for e in events]


@router.post("/v1/policy/rollback", response_model=PolicyInfo,
             summary="Serve an earlier kept version (admin)",
             responses={404: {"model": ErrorResponse, "description": "version not kept"},
                        **UNAUTHORIZED, **UNAVAILABLE})
async def rollback(svc: ServiceDep, _auth: AdminKeyDep,
                   body: Annotated[RollbackRequest | None, Body()] = None) -> PolicyInfo:
    """Make an earlier version current for every replica; the trainer continues
    from it."""
    try:
        version = await svc.policies.rollback(body.version if body else None)
        await svc.watcher.sync()
        kept = await svc.policies.versions()
    except VersionNotFoundError as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    except redis_errors() as exc:
        raise unavailable(svc.settings, "cannot roll back") from exc
    return _policy_info(svc.holder.policy, svc.settings, trainer_lag=None, kept_versions=kept,
                        current_version=version)
