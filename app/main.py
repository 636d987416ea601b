"""The FastAPI application: ``create_app()`` builds settings, routes and the lifespan.

The lifespan owns every resource: the Redis client (or an embedded redis-server), the
served policy and its watcher, the micro-batcher's worker thread and the optional
default-reward sweeper. Nothing is created at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse

from app.decisions import DecisionStore
from app.item_ids import ItemIds, user_index
from app.limits import RateLimitMiddleware, RequestLimitMiddleware, TokenBuckets
from app.metrics import LatencyMiddleware, ServiceMetrics
from app.policy_holder import PolicyHolder, PolicyWatcher
from app.recommender import RecommendCall, Recommender
from app.redis_gate import RedisGate
from app.schemas import (
    CatalogueInfo,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    PolicyInfo,
    RecommendRequest,
    RecommendResponse,
    RollbackRequest,
)
from app.settings import ServiceSettings
from trainer.transport.bus import RedisStreamBus
from trainer.transport.keys import RedisKeys
from trainer.transport.publication import PolicyRegistry, VersionNotFoundError, nonfinite_parameters

if TYPE_CHECKING:
    from policy.mixed import MixedPolicy
    from trainer.transport.redis_server import EmbeddedRedis

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"


@dataclass
class ServiceState:
    """Resources created by the lifespan (``app.state.svc``)."""

    settings: ServiceSettings
    metrics: ServiceMetrics
    client: Any
    keys: RedisKeys
    registry: PolicyRegistry
    holder: PolicyHolder
    watcher: PolicyWatcher
    store: DecisionStore
    bus: RedisStreamBus
    gate: RedisGate
    recommender: Recommender
    item_ids: ItemIds
    embedded: EmbeddedRedis | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError, asyncio.TimeoutError)


def _unavailable(settings: ServiceSettings, what: str) -> HTTPException:
    return HTTPException(
        status_code=503, detail=f"{what}: Redis is unreachable; retry later",
        headers={"Retry-After": str(settings.retry_after_s)})


async def _initial_policy(settings: ServiceSettings, registry: PolicyRegistry) -> MixedPolicy:
    """Redis' current version if any, else the checkpoint, else an untrained policy."""
    try:
        version = await registry.current_version()
        if version is not None:
            policy = await registry.load(version)
            bad = await asyncio.to_thread(nonfinite_parameters, policy)
            if not bad:
                logger.info("loaded current policy version %d from Redis", version)
                return policy
            logger.error("current version %d has non-finite values (%s); serving the "
                         "local policy", version, ", ".join(bad[:5]))
    except _redis_errors() as exc:
        logger.warning("Redis unreachable at start-up (%s); serving the local policy", exc)
    except VersionNotFoundError as exc:
        logger.warning("%s; serving the local policy", exc)
    if settings.checkpoint is not None:
        from policy.checkpoint import load_checkpoint

        return await asyncio.to_thread(load_checkpoint, settings.checkpoint)
    from policy.checkpoint import init_policy
    from policy.config import PolicyConfig

    logger.warning("no checkpoint given: serving an untrained policy over %d items",
                   settings.num_items)
    return init_policy(PolicyConfig(num_items=settings.num_items, max_len=settings.max_len),
                       seed=settings.seed)


def _load_item_ids(settings: ServiceSettings, num_items: int) -> ItemIds:
    """The deployment's id rule: the configured catalogue, else the checkpoint's, else
    integer indices. A catalogue whose size differs from the policy's stops start-up."""
    from policy.catalogue import CATALOGUE_FILE, Catalogue

    path = settings.catalogue
    if path is None and settings.checkpoint is not None:
        candidate = Path(settings.checkpoint) / CATALOGUE_FILE
        path = candidate if candidate.is_file() else None
    if path is None:
        logger.info("no catalogue: items are the integer indices 0..%d", num_items - 1)
        return ItemIds(num_items)
    catalogue = Catalogue.from_file(path)
    logger.info("catalogue %s: %d items (fingerprint %s)", path, len(catalogue),
                catalogue.fingerprint)
    return ItemIds(num_items, catalogue)


async def _default_reward_loop(svc: ServiceState) -> None:
    """Learn ``default_reward`` for decisions whose feedback did not come in time."""
    settings = svc.settings
    assert settings.default_reward is not None
    while True:
        await asyncio.sleep(settings.default_reward_sweep_s)
        try:
            for event_id in await svc.store.pop_expired():
                decision = await svc.store.get(event_id)
                if decision is None or not decision.items:
                    continue
                t = decision.transition(decision.items[0], settings.default_reward, False)
                if await svc.bus.publish(t) is not None:
                    svc.metrics.default_rewards.inc()
        except _redis_errors() as exc:
            logger.debug("default-reward sweep skipped: %s", exc)


def _make_lifespan(settings: ServiceSettings, metrics: ServiceMetrics) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import redis.asyncio as aioredis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        embedded = None
        url: str
        if settings.redis_url is not None:
            url = settings.redis_url
        else:
            from trainer.transport.redis_server import ensure_embedded_redis

            url, embedded = await asyncio.to_thread(
                ensure_embedded_redis, settings.embedded_redis_dir,
                settings.embedded_redis_port)
        # Fail fast: a dead Redis must cost /v1/recommend milliseconds, not retries.
        client = aioredis.Redis.from_url(
            url, socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s, retry=Retry(NoBackoff(), 0))
        keys = RedisKeys(settings.namespace)
        registry = PolicyRegistry(client, keys, keep=settings.keep_versions)
        try:
            policy = await _initial_policy(settings, registry)
            item_ids = _load_item_ids(settings, policy.num_items)
        except BaseException:
            # A catalogue that does not fit stops start-up; release what was opened.
            with contextlib.suppress(Exception):
                await client.aclose()
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)
            raise

        def on_swap(p: MixedPolicy) -> None:
            metrics.policy_version.set(p.version)
            metrics.policy_alpha.set(p.alpha)
            metrics.policy_swaps.inc()

        holder = PolicyHolder(policy, on_swap=on_swap)
        watcher = PolicyWatcher(holder, registry, poll_s=settings.policy_poll_s,
                                expected_num_items=policy.num_items,
                                on_reject=metrics.policy_rejected.inc)
        store = DecisionStore(
            client, keys, ttl_s=settings.decision_ttl_s,
            default_reward_after_s=(settings.default_reward_after_s
                                    if settings.default_reward is not None else None),
            cap=settings.decision_cap)
        bus = RedisStreamBus(client, keys, dedup_ttl_s=settings.dedup_ttl_s)
        gate = RedisGate(settings.redis_cooldown_s)
        recommender = Recommender(
            holder, store, gate, metrics, micro_batching=settings.micro_batching,
            max_size=settings.batch_max_size, max_wait_ms=settings.batch_max_wait_ms,
            seed=settings.seed)
        svc = ServiceState(settings, metrics, client, keys, registry, holder, watcher,
                           store, bus, gate, recommender, item_ids, embedded)
        app.state.svc = svc
        recommender.start()
        watcher.start()
        if settings.default_reward is not None:
            svc.tasks.append(asyncio.create_task(_default_reward_loop(svc)))
        try:
            yield
        finally:
            for task in svc.tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await watcher.stop()
            await recommender.stop()
            with contextlib.suppress(Exception):
                await client.aclose()
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)

    return lifespan


def _svc(request: Request) -> ServiceState:
    svc: ServiceState = request.app.state.svc
    return svc


def _check_key(given: str | None, expected: Any, settings: ServiceSettings) -> None:
    """Constant-time comparison; the key never appears in an answer or a log line.

    No key configured: refused unless the operator opted out (``allow_anonymous``)."""
    if expected is None:
        if settings.allow_anonymous:
            return
        raise HTTPException(status_code=401, detail="this call needs an API key and none is "
                            "configured: start the service with IALP_API_KEY set (or "
                            "explicitly insecure with `ialp serve --insecure`)",
                            headers={"WWW-Authenticate": "ApiKey"})
    if not hmac.compare_digest((given or "").encode(), expected.get_secret_value().encode()):
        raise HTTPException(status_code=401, detail=f"missing or wrong {API_KEY_HEADER} header",
                            headers={"WWW-Authenticate": "ApiKey"})


def _auth_warnings(settings: ServiceSettings) -> None:
    """Say loudly at start-up when feedback or admin calls are open to anyone, or closed
    to everyone."""
    if settings.api_key is None and settings.admin_api_key is None:
        if settings.allow_anonymous:
            logger.warning("INSECURE: no API key and allow_anonymous is on: anyone who can "
                           "reach this port can send feedback (and so train the policy) "
                           "and roll the policy back. Set IALP_API_KEY for any deployment "
                           "beyond a private machine.")
        else:
            logger.warning("no IALP_API_KEY is set: /v1/feedback and /v1/policy/rollback "
                           "answer 401 to every call (set IALP_API_KEY, or start with "
                           "--insecure / IALP_ALLOW_ANONYMOUS=true on a private machine)")
    elif settings.api_key is None and settings.allow_anonymous:
        logger.warning("INSECURE: no IALP_API_KEY and allow_anonymous is on: anyone can "
                       "send feedback (admin calls still need IALP_ADMIN_API_KEY)")
    elif settings.api_key is None:
        logger.warning("no IALP_API_KEY is set: /v1/feedback answers 401 to every call")


def require_api_key(
    request: Request,
    x_api_key: Annotated[str | None, Header(alias=API_KEY_HEADER,
                                            description="API key (when configured)")] = None,
) -> None:
    """Check the API key header for feedback calls (constant-time compare)."""
    settings = _svc(request).settings
    _check_key(x_api_key, settings.api_key, settings)


def require_admin_key(
    request: Request,
    x_api_key: Annotated[str | None, Header(alias=API_KEY_HEADER,
                                            description="admin key (when configured)")] = None,
) -> None:
    """Admin calls need ``admin_api_key`` when set, else ``api_key`` (when set)."""
    settings = _svc(request).settings
    _check_key(x_api_key, settings.admin_api_key or settings.api_key, settings)


_ECHO_CHARS = 200


def _json_safe(value: Any) -> Any:
    """``value`` as JSON can carry it: non-finite floats as their text, bytes (a body that
    is not JSON, maybe not even UTF-8) and anything else as bounded, decoded text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        text = raw[:_ECHO_CHARS].decode("utf-8", errors="replace")
        return text + (f"... ({len(raw)} bytes)" if len(raw) > _ECHO_CHARS else "")
    if isinstance(value, dict):
        return {str(_json_safe(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, BaseException):
        return str(value)[:_ECHO_CHARS]
    return repr(value)[:_ECHO_CHARS]


def _error(loc: tuple[str | int, ...], msg: str, kind: str, value: Any) -> dict[str, Any]:
    return {"type": kind, "loc": loc, "msg": msg, "input": value}


def validate_recommend(req: RecommendRequest, item_ids: ItemIds,
                       settings: ServiceSettings) -> tuple[list[int], list[int]]:
    """Checks that depend on the catalogue and the configured limits (422 on failure).

    Returns the history and the exclude list as the policy's item indices."""
    errors: list[dict[str, Any]] = []
    if len(req.history) > settings.max_history:
        errors.append(_error(("body", "history"),
                             f"history has {len(req.history)} items; at most "
                             f"{settings.max_history} are accepted", "too_long",
                             len(req.history)))
    if len(req.exclude) > settings.max_exclude:
        errors.append(_error(("body", "exclude"),
                             f"exclude has {len(req.exclude)} items; at most "
                             f"{settings.max_exclude} are accepted", "too_long",
                             len(req.exclude)))
    if errors:  # no lookups for bodies that are too long anyway
        raise RequestValidationError(errors)
    history = item_ids.to_indices("history", req.history, errors)
    exclude = item_ids.to_indices("exclude", req.exclude, errors)
    num_items = item_ids.num_items
    available = num_items - len(set(exclude))
    limit = min(settings.max_k, available)
    if req.k > limit:
        errors.append(_error(("body", "k"),
                             f"k={req.k} is out of range: 1..{limit} (max_k "
                             f"{settings.max_k}, {available} recommendable items)",
                             "out_of_range", req.k))
    if errors:
        raise RequestValidationError(errors)
    return history, exclude


def validate_reward(reward: float, settings: ServiceSettings) -> None:
    """422 naming ``reward`` when it lies outside the configured range."""
    if not settings.reward_min <= reward <= settings.reward_max:
        raise RequestValidationError([_error(
            ("body", "reward"), f"reward {reward!r} is outside the accepted range "
            f"[{settings.reward_min:g}, {settings.reward_max:g}] (IALP_REWARD_MIN, "
            "IALP_REWARD_MAX)", "out_of_range", reward)])


def _policy_info(policy: MixedPolicy, settings: ServiceSettings, **extra: Any) -> PolicyInfo:
    meta = dict(policy.metadata)

    def _opt_int(v: Any) -> int | None:
        return None if v is None else int(v)

    return PolicyInfo(
        version=int(policy.version), scheme=str(policy.scheme), alpha=float(policy.alpha),
        num_items=int(policy.num_items), updates=int(meta.get("updates", 0) or 0),
        events_learned=int(meta.get("events_learned", 0) or 0),
        parent_version=_opt_int(meta.get("parent_version")),
        created_at=None if meta.get("created_at") is None else str(meta["created_at"]),
        reward_min=settings.reward_min, reward_max=settings.reward_max, **extra)


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """Build the application (settings from the environment unless given)."""
    settings = settings or ServiceSettings()
    metrics = ServiceMetrics()
    app = FastAPI(
        title="iALP recommendation service",
        version="1.0",
        description="Serves slates from the mixed policy π̃ = (1-α)·πθ + α·πβ, records "
        "each decision, and sends feedback through Redis to the online trainer, whose "
        "new versions are hot-swapped without a restart.",
        lifespan=_make_lifespan(settings, metrics),
    )
    _auth_warnings(settings)
    # Added innermost first: latency wraps everything, the body limit sits next to routes.
    app.add_middleware(RequestLimitMiddleware, max_bytes=settings.max_body_bytes,
                       max_header_bytes=settings.max_header_bytes)
    if settings.rate_limit_per_s > 0 or settings.rate_limit_key_per_s > 0:
        app.add_middleware(
            RateLimitMiddleware,
            anonymous=TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst,
                                   settings.rate_limit_clients)
            if settings.rate_limit_per_s > 0 else None,
            keyed=TokenBuckets(settings.rate_limit_key_per_s, settings.rate_limit_key_burst,
                               settings.rate_limit_clients)
            if settings.rate_limit_key_per_s > 0 else None,
            on_limited=metrics.rate_limited.inc,
            known_keys=[k.get_secret_value().encode()
                        for k in (settings.api_key, settings.admin_api_key) if k is not None])
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    app.state.metrics = metrics
    app.state.settings = settings
    errors_404: dict[int | str, dict[str, Any]] = {}
    unavailable: dict[int | str, dict[str, Any]] = {
        503: {"model": ErrorResponse, "description": "Redis unreachable; see Retry-After"}}
    unauthorized: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorResponse, "description": "missing or wrong API key"}}

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError) -> Response:
        from fastapi.encoders import jsonable_encoder
        from fastapi.responses import JSONResponse

        if request.url.path == "/v1/feedback":
            metrics.feedback.labels(outcome="rejected").inc()
        errors = []
        for err in exc.errors():
            # Echo NaN/Infinity, raw bytes (any body that is not JSON) and the rest as
            # text JSON can carry: a rejection must never become a 500.
            errors.append(_json_safe(dict(err)))
        try:
            content = jsonable_encoder(errors)
        except Exception:  # last line of defence: drop the echoed input
            content = [{"type": str(e.get("type", "invalid")), "loc": e.get("loc", ["body"]),
                        "msg": str(e.get("msg", "invalid request"))} for e in errors]
        return JSONResponse(status_code=422, content={"detail": content})

    @app.post("/v1/recommend", response_model=RecommendResponse, tags=["serving"],
              summary="Recommend k items for a user", responses=errors_404)
    async def recommend(req: RecommendRequest, request: Request) -> RecommendResponse:
        """Serve a slate from the current policy and record the decision for feedback."""
        svc = _svc(request)
        history, exclude = validate_recommend(req, svc.item_ids, svc.settings)
        call = RecommendCall(uuid.uuid4().hex, user_index(req.user_id), history, req.k,
                             exclude, req.explore)
        slate, policy, recorded = await svc.recommender.recommend(call)
        return RecommendResponse(
            event_id=call.event_id, items=svc.item_ids.to_external(slate.items),
            propensities=[float(p) for p in slate.propensities],
            sources=list(slate.sources), policy_version=int(policy.version),
            alpha=float(policy.alpha), decision_recorded=recorded)

    @app.post("/v1/feedback", status_code=202, response_model=FeedbackResponse,
              tags=["serving"], summary="Report the user's response to a recommendation",
              responses={200: {"model": FeedbackResponse,
                               "description": "duplicate: this event already had feedback"},
                         404: {"model": ErrorResponse, "description": "unknown or expired "
                               "event_id"},
                         409: {"model": ErrorResponse, "description": "item_id was not in "
                               "the recommended slate"},
                         **unauthorized, **unavailable})
    async def feedback(body: FeedbackRequest, request: Request, response: Response,
                       _auth: Annotated[None, Depends(require_api_key)]) -> FeedbackResponse:
        """Join the feedback with its decision and enqueue one transition for the trainer.

        Each event id is accepted once; a repeat is answered 200 with status
        ``duplicate`` and never learned twice."""
        svc = _svc(request)
        validate_reward(body.reward, svc.settings)
        item, why = svc.item_ids.to_index(body.item_id)
        if item is None:
            metrics.feedback.labels(outcome="rejected").inc()
            raise RequestValidationError([_error(("body", "item_id"), why, "unknown_item",
                                                 body.item_id)])
        try:
            decision = await svc.store.get(body.event_id)
        except _redis_errors() as exc:
            metrics.feedback.labels(outcome="unavailable").inc()
            raise _unavailable(svc.settings, "cannot read the decision") from exc
        if decision is None:
            metrics.feedback.labels(outcome="rejected").inc()
            raise HTTPException(404, detail=f"unknown or expired event_id '{body.event_id}' "
                                f"(decisions accept feedback for {svc.settings.decision_ttl_s}"
                                f" s; at most the newest {svc.settings.decision_cap} are "
                                "kept)")
        if item not in decision.items:
            metrics.feedback.labels(outcome="rejected").inc()
            slate = svc.item_ids.to_external(decision.items)
            raise HTTPException(409, detail=f"item_id {body.item_id!r} was not recommended "
                                f"in event '{body.event_id}' (slate: {slate})")
        transition = decision.transition(item, body.reward, body.done)
        try:
            stream_id = await svc.bus.publish(transition)
        except _redis_errors() as exc:
            metrics.feedback.labels(outcome="unavailable").inc()
            raise _unavailable(svc.settings, "cannot enqueue the feedback") from exc
        if stream_id is None:
            metrics.feedback.labels(outcome="duplicate").inc()
            response.status_code = 200
            return FeedbackResponse(event_id=body.event_id, status="duplicate")
        metrics.feedback.labels(outcome="accepted").inc()
        return FeedbackResponse(event_id=body.event_id, status="accepted",
                                stream_id=stream_id)

    @app.get("/v1/policy", response_model=PolicyInfo, tags=["policy"],
             summary="The served policy: version, scheme, α, learning progress")
    async def policy_info(request: Request) -> PolicyInfo:
        """What this replica serves, plus trainer lag and kept versions from Redis."""
        svc = _svc(request)
        policy = svc.holder.policy
        lag: int | None = None
        kept: list[int] = []
        current: int | None = None
        try:
            stats = await svc.bus.stats()
            lag = max(0, stats["enqueued"] - stats.get("events_learned", 0))
            kept = await svc.registry.versions()
            current = await svc.registry.current_version()
        except _redis_errors():
            pass
        return _policy_info(policy, svc.settings, trainer_lag=lag, kept_versions=kept,
                            current_version=current)

    @app.post("/v1/policy/rollback", response_model=PolicyInfo, tags=["policy"],
              summary="Serve an earlier kept version (admin)",
              responses={404: {"model": ErrorResponse, "description": "version not kept"},
                         **unauthorized, **unavailable})
    async def rollback(request: Request, _auth: Annotated[None, Depends(require_admin_key)],
                       body: Annotated[RollbackRequest | None, Body()] = None) -> PolicyInfo:
        """Make an earlier version current for every replica; the trainer continues
        from it."""
        svc = _svc(request)
        try:
            version = await svc.registry.rollback(body.version if body else None)
            await svc.watcher.sync()
            kept = await svc.registry.versions()
        except VersionNotFoundError as exc:
            raise HTTPException(404, detail=str(exc)) from exc
        except _redis_errors() as exc:
            raise _unavailable(svc.settings, "cannot roll back") from exc
        return _policy_info(svc.holder.policy, svc.settings, trainer_lag=None, kept_versions=kept,
                            current_version=version)

    @app.get("/v1/catalogue", response_model=CatalogueInfo, tags=["policy"],
             summary="The item ids this replica accepts and returns (paged)")
    async def catalogue(
        request: Request,
        offset: Annotated[int, Query(ge=0, description="first index of the page")] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000, description="page size")] = 1000,
    ) -> CatalogueInfo:
        """Which id is which item index: ``item_ids[j]`` is index ``offset + j``."""
        ids = _svc(request).item_ids
        stop = min(ids.num_items, offset + limit)
        cat = ids.catalogue
        return CatalogueInfo(
            mode="catalogue" if cat is not None else "index", size=ids.num_items,
            fingerprint=None if cat is None else cat.fingerprint, offset=offset,
            item_ids=ids.to_external(range(offset, stop)) if offset < stop else [])

    @app.get("/healthz", response_model=HealthResponse, tags=["operations"],
             summary="Liveness")
    async def healthz(request: Request) -> HealthResponse:
        """The process is up and holds a policy."""
        return HealthResponse(status="ok", policy_version=_svc(request).holder.policy.version)

    @app.get("/readyz", response_model=HealthResponse, tags=["operations"],
             summary="Readiness: policy loaded, Redis reachable and decisions recordable",
             responses=unavailable)
    async def readyz(request: Request, response: Response) -> HealthResponse:
        """200 when a policy is loaded, Redis answers PING and accepts a write, else 503.

        A probe write (a small key with a 5 s TTL) stands for the decision writes, so a
        replica whose Redis answers PING but refuses writes (out of memory, read-only
        replica) is taken out of rotation instead of serving slates whose feedback cannot
        be learned. Its outcome also opens or closes the recommend path's Redis gate, so
        the cooldown after a failure ends as soon as Redis is known to be back."""
        svc = _svc(request)
        try:
            redis_ok = bool(await svc.client.ping())
        except _redis_errors():
            redis_ok = False
            svc.gate.failed()
        writable = False
        if redis_ok:
            try:
                await svc.client.set(f"{svc.keys.namespace}:stats:ready", "1", px=5000)
                writable = True
                svc.gate.succeeded()
            except _redis_errors():
                svc.gate.failed()
        metrics.redis_up.set(1 if redis_ok else 0)
        if not writable:
            response.status_code = 503
            response.headers["Retry-After"] = str(svc.settings.retry_after_s)
        return HealthResponse(status="ok" if writable else "unavailable", redis=redis_ok,
                              decisions_recordable=writable,
                              policy_version=svc.holder.policy.version)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"],
             summary="Prometheus metrics")
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if settings.enable_noop:
        @app.post("/v1/noop", include_in_schema=False)
        async def noop(req: RecommendRequest) -> dict[str, Any]:
            """Parses like /v1/recommend and answers at once (benchmark baseline)."""
            return {"event_id": "", "items": req.history[: req.k], "propensities": [],
                    "sources": [], "policy_version": 0, "alpha": 0.0,
                    "decision_recorded": False}

    return app
