"""A small async client for the service's v1 REST API.

The simulator and the load-test harness talk to the service only through this client, so
they can replay users against any deployment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx


class ServiceError(Exception):
    """The service answered with an error status."""

    def __init__(self, status: int, detail: Any, path: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"{path}: HTTP {status}: {detail}")


@dataclass(frozen=True)
class Decision:
    """What /v1/recommend returned."""

    event_id: str
    items: list[int | str]
    """The service's item ids: strings with a catalogue, integers without."""
    propensities: list[float]
    policy_version: int
    alpha: float


class ServiceClient:
    """Async client with bounded retries on 503 (honouring ``Retry-After``)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        max_connections: int = 64,
        retries: int = 3,
    ) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s, limits=limits
        )
        self.retries = retries

    async def __aenter__(self) -> ServiceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _request(self, method: str, path: str, json: Any = None) -> httpx.Response:
        # Retrying is safe for every call: a repeated recommend only makes a new decision,
        # and a repeated feedback is answered "duplicate" (the service learns it once).
        for attempt in range(self.retries + 1):
            try:
                resp = await self._http.request(method, path, json=json)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            if resp.status_code != 503 or attempt == self.retries:
                return resp
            wait = float(resp.headers.get("Retry-After", "1"))
            await asyncio.sleep(min(wait, 5.0))
        raise AssertionError("unreachable")

    @staticmethod
    def _check(resp: httpx.Response, path: str) -> Any:
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise ServiceError(resp.status_code, detail, path)
        return resp.json()

    async def recommend(
        self,
        user_id: int | str,
        history: Sequence[int | str],
        *,
        k: int = 1,
        exclude: Sequence[int | str] = (),
        explore: bool = True,
    ) -> Decision:
        """POST /v1/recommend (ids as the service speaks them: see ``GET /v1/catalogue``)."""
        body = {
            "user_id": user_id,
            "history": list(history),
            "k": k,
            "exclude": list(exclude),
            "explore": explore,
        }
        data = self._check(await self._request("POST", "/v1/recommend", body), "/v1/recommend")
        return Decision(
            event_id=data["event_id"],
            items=list(data["items"]),
            propensities=[float(p) for p in data["propensities"]],
            policy_version=int(data["policy_version"]),
            alpha=float(data["alpha"]),
        )

    async def feedback(
        self, event_id: str, item_id: int | str, reward: float, *, done: bool = False
    ) -> str:
        """POST /v1/feedback; returns ``"accepted"`` or ``"duplicate"``."""
        body = {"event_id": event_id, "item_id": item_id, "reward": float(reward),
                "done": bool(done)}
        data = self._check(await self._request("POST", "/v1/feedback", body), "/v1/feedback")
        return str(data["status"])

    async def policy(self) -> dict[str, Any]:
        """GET /v1/policy."""
        return dict(self._check(await self._request("GET", "/v1/policy"), "/v1/policy"))

    async def wait_ready(self, timeout_s: float) -> None:
        """Poll ``GET /readyz`` until it answers 200 (a service still starting is normal
        right after ``ialp serve &``); ``TimeoutError`` after ``timeout_s``."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        last = "no answer"
        while True:
            try:
                resp = await self._http.get("/readyz")
                if resp.status_code == 200:
                    return
                last = f"HTTP {resp.status_code}"
            except httpx.TransportError as exc:
                last = type(exc).__name__
            if asyncio.get_running_loop().time() >= deadline:
                raise TimeoutError(f"{self._http.base_url} was not ready after {timeout_s:.0f}"
                                   f" s ({last})")
            await asyncio.sleep(0.25)

    async def catalogue(self, *, offset: int = 0, limit: int = 1000) -> dict[str, Any]:
        """GET /v1/catalogue: the id mode, the size and one page of item ids."""
        path = f"/v1/catalogue?offset={offset}&limit={limit}"
        return dict(self._check(await self._request("GET", path), "/v1/catalogue"))

    async def raw(self, method: str, path: str, json: Any = None) -> httpx.Response:
        """An unchecked request (the load tester counts statuses itself)."""
        return await self._http.request(method, path, json=json)
