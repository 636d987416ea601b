"""Route dependencies: the service state, the metrics and the API-key checks.

Routes declare what they need with the typed aliases (``svc: ServiceDep``,
``_auth: ApiKeyDep``); everything comes from the application's state, so no route is
a closure over :func:`app.main.create_app`'s locals.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request
from pydantic import SecretStr

from app.metrics import ServiceMetrics
from app.schemas import ErrorResponse
from app.settings import ServiceSettings
from app.state import ServiceState

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"

#: OpenAPI declaration of the 401 that :func:`require_api_key` and
#: :func:`require_admin_key` answer.
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "missing or wrong API key"}}


async def get_service(request: Request) -> ServiceState:
    """The resources the lifespan created (``app.state.svc``)."""
    svc: ServiceState = request.app.state.svc
    return svc


async def get_metrics(request: Request) -> ServiceMetrics:
    """The application's metrics (``app.state.metrics``).

    Set by ``create_app`` rather than the lifespan, so it is there before start-up."""
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


ServiceDep = Annotated[ServiceState, Depends(get_service)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]


def _check_key(given: str | None, expected: SecretStr | None,
               settings: ServiceSettings) -> None:
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


def require_api_key(
    svc: ServiceDep,
    x_api_key: Annotated[str | None, Header(alias=API_KEY_HEADER,
                                            description="API key (when configured)")] = None,
) -> None:
    """Check the API key header for feedback calls (constant-time compare)."""
    _check_key(x_api_key, svc.settings.api_key, svc.settings)


def require_admin_key(
    svc: ServiceDep,
    x_api_key: Annotated[str | None, Header(alias=API_KEY_HEADER,
                                            description="admin key (when configured)")] = None,
) -> None:
    """Admin calls need ``admin_api_key`` when set, else ``api_key`` (when set)."""
    settings = svc.settings
    _check_key(x_api_key, settings.admin_api_key or settings.api_key, settings)


ApiKeyDep = Annotated[None, Depends(require_api_key)]
AdminKeyDep = Annotated[None, Depends(require_admin_key)]


def auth_warnings(settings: ServiceSettings) -> None:
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
