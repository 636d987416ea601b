"""The service's HTTP routes, one :class:`fastapi.APIRouter` per resource.

:data:`ROUTERS` lists them in the order ``create_app`` includes them, which is the
order of the OpenAPI document. The benchmark route lives apart, in
:data:`app.routes.operations.noop_router`, because it is included only on request.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.routes import ab, catalogue, feedback, operations, policy, recommend

ROUTERS: tuple[APIRouter, ...] = (recommend.router, feedback.router, policy.router,
                                  ab.router, catalogue.router, operations.router)
