"""``GET /v1/catalogue``: the item ids this replica accepts and returns, paged."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.deps import ServiceDep
from app.schemas import CatalogueInfo

# Tagged "policy", next to /v1/policy: the catalogue is the served policy's item space.
router = APIRouter(tags=["policy"])


@router.get("/v1/catalogue", response_model=CatalogueInfo,
            summary="The item ids this replica accepts and returns (paged)")
async def catalogue(
    svc: ServiceDep,
    offset: Annotated[int, Query(ge=0, description="first index of the page")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000, description="page size")] = 1000,
) -> CatalogueInfo:
    """Which id is which item index: ``item_ids[j]`` is index ``offset + j``."""
    ids = svc.item_ids
    stop = min(ids.num_items, offset + limit)
    cat = ids.catalogue
    return CatalogueInfo(
        mode="catalogue" if cat is not None else "index", size=ids.num_items,
        fingerprint=None if cat is None else cat.fingerprint, offset=offset,
        item_ids=ids.to_external(range(offset, stop)) if offset < stop else [])
