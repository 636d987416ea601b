"""Request checks that depend on the deployment, and the 422 answer for every rejection.

Pydantic checks a body's shape; :func:`validate_recommend` and :func:`validate_reward`
add what only the served catalogue and the configured limits know. Every failure,
either kind, is answered by :func:`on_invalid_request` as a JSON-safe 422.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError

from app.item_ids import ItemIds
from app.metrics import ServiceMetrics
from app.schemas import RecommendRequest
from app.settings import ServiceSettings

# Longest echo of a rejected value: a multi-megabyte body must not come back whole.
_ECHO_CHARS = 200


def json_safe(value: Any) -> Any:
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
        return {str(json_safe(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, BaseException):
        return str(value)[:_ECHO_CHARS]
    return repr(value)[:_ECHO_CHARS]


def field_error(loc: tuple[str | int, ...], msg: str, kind: str,
                value: Any) -> dict[str, Any]:
    """One entry of a :class:`RequestValidationError`, shaped like pydantic's own."""
    return {"type": kind, "loc": loc, "msg": msg, "input": value}


def _indices(item_ids: ItemIds, name: str, values: list[int | str],
             errors: list[dict[str, Any]]) -> list[int]:
    """The policy's indices of ``values``; unknown ids add errors (the first 10: enough to
    fix a request)."""
    indices, bad = item_ids.to_indices(values)
    for pos, value, why in bad[:10]:
        errors.append(field_error(("body", name, pos), why, "unknown_item", value))
    return indices


def validate_recommend(req: RecommendRequest, item_ids: ItemIds,
                       settings: ServiceSettings) -> tuple[list[int], list[int]]:
    """Checks that depend on the catalogue and the configured limits (422 on failure).

    Returns the history and the exclude list as the policy's item indices."""
    errors: list[dict[str, Any]] = []
    if len(req.history) > settings.max_history:
        errors.append(field_error(("body", "history"),
                                  f"history has {len(req.history)} items; at most "
                                  f"{settings.max_history} are accepted", "too_long",
                                  len(req.history)))
    if len(req.exclude) > settings.max_exclude:
        errors.append(field_error(("body", "exclude"),
                                  f"exclude has {len(req.exclude)} items; at most "
                                  f"{settings.max_exclude} are accepted", "too_long",
                                  len(req.exclude)))
    if errors:  # no lookups for bodies that are too long anyway
        raise RequestValidationError(errors)
    history = _indices(item_ids, "history", req.history, errors)
    exclude = _indices(item_ids, "exclude", req.exclude, errors)
    num_items = item_ids.num_items
    available = num_items - len(set(exclude))
    limit = min(settings.max_k, available)
    if req.k > limit:
        errors.append(field_error(("body", "k"),
                                  f"k={req.k} is out of range: 1..{limit} (max_k "
                                  f"{settings.max_k}, {available} recommendable items)",
                                  "out_of_range", req.k))
    if errors:
        raise RequestValidationError(errors)
    return history, exclude


def validate_reward(reward: float, settings: ServiceSettings) -> None:
    """422 naming ``reward`` when it lies outside the configured range."""
    if not settings.reward_min <= reward <= settings.reward_max:
        raise RequestValidationError([field_error(
            ("body", "reward"), f"reward {reward!r} is outside the accepted range "
            f"[{settings.reward_min:g}, {settings.reward_max:g}] (IALP_REWARD_MIN, "
            "IALP_REWARD_MAX)", "out_of_range", reward)])


async def on_invalid_request(request: Request, exc: RequestValidationError) -> Response:
    """The application's handler of :class:`RequestValidationError`: a 422 whose
    ``detail`` lists every error, with each echoed input made JSON-safe."""
    from fastapi.encoders import jsonable_encoder
    from fastapi.responses import JSONResponse

    if request.url.path in ("/v1/feedback", "/v1/feedback/batch"):
        metrics: ServiceMetrics = request.app.state.metrics
        metrics.feedback.labels(outcome="rejected").inc()
    errors = []
    for err in exc.errors():
        # Echo NaN/Infinity, raw bytes (any body that is not JSON) and the rest as
        # text JSON can carry: a rejection must never become a 500.
        errors.append(json_safe(dict(err)))
    try:
        content = jsonable_encoder(errors)
    except Exception:  # last line of defence: drop the echoed input
        content = [{"type": str(e.get("type", "invalid")), "loc": e.get("loc", ["body"]),
                    "msg": str(e.get("msg", "invalid request"))} for e in errors]
    return JSONResponse(status_code=422, content={"detail": content})
