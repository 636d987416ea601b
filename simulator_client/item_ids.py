"""The simulator's item indices ↔ the ids a service speaks.

A simulated environment numbers its items 0..I-1 and knows each item's external id (the
dataset's ``item_id``; the decimal index where the dataset has none). A service either has
a catalogue (it speaks string ids) or none (it speaks 0-based indices). :func:`negotiate`
asks the service which (``GET /v1/catalogue``) and returns the translation the simulator
and the load harness use: they only ever send what a real caller would.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from simulator_client.http_client import ServiceClient


class CatalogueMismatchError(ValueError):
    """The service's catalogue does not hold the environment's items."""


@dataclass(frozen=True)
class ItemIdMap:
    """Environment item index ↔ the id sent to and returned by the service."""

    outgoing: tuple[int | str, ...]
    """The id to send for environment index i."""
    mode: str
    """``catalogue`` (string ids) or ``index`` (integers)."""
    _back: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_back", {str(x): i for i, x in enumerate(self.outgoing)})

    def send(self, indices: Iterable[int]) -> list[int | str]:
        """The service's ids of environment indices."""
        return [self.outgoing[int(i)] for i in indices]

    def receive(self, ids: Sequence[int | str]) -> list[int]:
        """Environment indices of ids the service returned."""
        try:
            return [self._back[str(x)] for x in ids]
        except KeyError as exc:
            raise CatalogueMismatchError(
                f"the service returned item {exc.args[0]!r}, which the environment does "
                "not have") from None


async def negotiate(client: ServiceClient, item_ids: Sequence[str]) -> ItemIdMap:
    """The translation for an environment whose item i has external id ``item_ids[i]``."""
    page = await client.catalogue(limit=1)
    size = int(page["size"])
    if size != len(item_ids):
        raise CatalogueMismatchError(
            f"the service's catalogue has {size} items but the environment has "
            f"{len(item_ids)}: serve a policy for this catalogue")
    if page["mode"] == "index":
        return ItemIdMap(tuple(range(size)), "index")
    ids = tuple(str(x) for x in item_ids)
    from policy.catalogue import Catalogue

    if page.get("fingerprint") != Catalogue.of(ids).fingerprint:
        # Same ids in another order still work (ids are translated by the service); ids
        # the service does not know would be 422s for every request: say so up front.
        theirs: set[str] = set()
        offset = 0
        while offset < size:
            chunk = await client.catalogue(offset=offset, limit=10_000)
            theirs.update(str(x) for x in chunk["item_ids"])
            offset += max(1, len(chunk["item_ids"]))
        missing = [x for x in ids if x not in theirs]
        if missing:
            raise CatalogueMismatchError(
                f"{len(missing)} of the environment's items are not in the service's "
                f"catalogue (e.g. {missing[:5]})")
    return ItemIdMap(ids, "catalogue")


def user_ref(user: int) -> str:
    """The user id a simulated user is sent as: its index as a decimal string (the
    service maps it to the same training-user row an integer would)."""
    return str(int(user))
