"""The caller's ids at the REST edge ↔ the policy's indices.

The rule (docs/service.md, "Item and user ids"):

* **With a catalogue** (``IALP_CATALOGUE``, or ``catalogue.txt`` in the checkpoint folder),
  every item id in a request is an id *of the catalogue*: a JSON string, or a number read as
  its decimal text (``12`` and ``"12"`` name the same item). Responses return the
  catalogue's ids, as strings. An id not in the catalogue is a 422 that names it.
* **Without a catalogue**, item ids are the policy's 0-based indices: JSON integers, or
  strings holding a decimal integer. Responses return integers.
* **User ids** are strings or non-negative integers. An integer (or a decimal string) is
  the user's index in the training data, so users the policy was trained on keep their
  embedding; any other string maps, by a stable hash, to a number ≥ 2**62, which every
  policy treats as an unknown user (the shared "unknown" row).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import cast

from policy.catalogue import Catalogue

UNKNOWN_USER_BASE = 2**62
"""String user ids hash into [2**62, 2**63): never a training user's index."""

_MAX_INDEX = 2**63 - 1


def _as_index(value: int | str) -> int | None:
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.isascii() and text.isdigit():
        number = int(text)
        return number if number <= _MAX_INDEX else None
    return None


def user_index(user_id: int | str) -> int:
    """The policy's user number for a caller's user id (see the module docstring)."""
    number = _as_index(user_id)
    if number is not None:
        return number
    digest = hashlib.blake2b(str(user_id).encode("utf-8"), digest_size=8).digest()
    return UNKNOWN_USER_BASE + int.from_bytes(digest, "big") % UNKNOWN_USER_BASE


class ItemIds:
    """Translates one deployment's item ids (with or without a catalogue)."""

    def __init__(self, num_items: int, catalogue: Catalogue | None = None) -> None:
        if catalogue is not None and len(catalogue) != num_items:
            raise ValueError(f"the catalogue has {len(catalogue)} items but the policy "
                             f"scores {num_items}")
        self.num_items = num_items
        self.catalogue = catalogue

    @property
    def mode(self) -> str:
        """``catalogue`` (string ids) or ``index`` (0-based integers)."""
        return "index" if self.catalogue is None else "catalogue"

    def to_indices(
        self, values: Sequence[int | str]
    ) -> tuple[list[int], list[tuple[int, int | str, str]]]:
        """``(indices of the valid ids, [(position, id, why)] of the others)``."""
        if self.catalogue is None and values and all(type(v) is int for v in values):
            ints = cast(list[int], list(values))
            if min(ints) >= 0 and max(ints) < self.num_items:
                return ints, []  # the common case, without a call per item
        out: list[int] = []
        bad: list[tuple[int, int | str, str]] = []
        for pos, value in enumerate(values):
            index, msg = self.to_index(value)
            if index is None:
                bad.append((pos, value, msg))
            else:
                out.append(index)
        return out, bad

    def to_index(self, value: int | str) -> tuple[int | None, str]:
        """``(index, "")`` or ``(None, why)`` for one id."""
        if self.catalogue is not None:
            key = str(value)
            if key in self.catalogue:
                return self.catalogue.index_of(key), ""
            return None, (f"unknown item id {key!r}: not in the catalogue of "
                          f"{len(self.catalogue)} items")
        number = _as_index(value)
        if number is None:
            return None, (f"item id {value!r} is not an item index: this service has no "
                          f"catalogue, so items are the integers 0..{self.num_items - 1}")
        if not 0 <= number < self.num_items:
            return None, (f"unknown item id {number}: the catalogue has ids "
                          f"0..{self.num_items - 1}")
        return number, ""

    def to_external(self, indices: Sequence[int]) -> list[int | str]:
        """The caller's ids of ``indices`` (strings with a catalogue, else integers)."""
        if self.catalogue is None:
            return [int(i) for i in indices]
        return list(self.catalogue.ids(indices))
