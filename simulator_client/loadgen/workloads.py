"""The service's workloads as pre-encoded requests: no-op, recommend, recommend with
chained feedback, and a health check for services without the no-op endpoint."""

from __future__ import annotations

from collections.abc import Sequence

from simulator_client.loadgen.config import Target, Workload
from simulator_client.loadgen.wire import encode_get, encode_post, json_body


def recommend_bodies(histories: Sequence[Sequence[int | str]], *, k: int = 1,
                     user_prefix: str = "load-") -> list[bytes]:
    """One ``/v1/recommend`` body per history (users ``load-0``, ``load-1``…)."""
    return [json_body({"user_id": f"{user_prefix}{i}", "history": list(h), "k": k})
            for i, h in enumerate(histories)]


def post_workload(target: Target, endpoint: str, path: str, bodies: Sequence[bytes], *,
                  feedback_ratio: float = 0.0, reward: float = 1.0) -> Workload:
    """``POST path`` with each body in turn, labelled ``endpoint``; ``feedback_ratio`` of
    the 200 answers are followed by feedback on the same connection."""
    if not bodies:
        raise ValueError("a workload needs at least one body")
    host = f"{target.host}:{target.port}"
    return Workload(
        endpoint=endpoint,
        requests=tuple(encode_post(host, path, b, target.api_key) for b in bodies),
        feedback_ratio=feedback_ratio, reward=reward, host=host, api_key=target.api_key)


def noop_workload(target: Target, bodies: Sequence[bytes]) -> Workload:
    """``POST /v1/noop``: the service's parsing and HTTP cost without the policy."""
    return post_workload(target, "noop", "/v1/noop", bodies)


def recommend_workload(target: Target, bodies: Sequence[bytes], *,
                       feedback_ratio: float = 0.0, reward: float = 1.0) -> Workload:
    """``POST /v1/recommend``, with chained ``/v1/feedback`` for a share of answers."""
    return post_workload(target, "recommend", "/v1/recommend", bodies,
                         feedback_ratio=feedback_ratio, reward=reward)


def healthz_workload(target: Target) -> Workload:
    """``GET /healthz``: the floor when the service does not expose the no-op endpoint."""
    host = f"{target.host}:{target.port}"
    return Workload(endpoint="healthz", requests=(encode_get(host, "/healthz"),), host=host)
