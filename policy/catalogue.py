"""The catalogue: the caller's item ids ↔ the policy's 0-based item indices.

Callers name items by their own string ids (SKUs, track ids, ...); the policy scores
item *indices*. A :class:`Catalogue` is that mapping, in the order of the policy's output
layer: row i of the catalogue file is index i.

Files it reads (:meth:`Catalogue.from_file`):

* an items file of the bring-your-own dataset format (``.tsv``, or ``.csv`` for commas)
  whose header has an ``item_id`` column — the same file ``ialp env build --items`` takes;
* a plain text file (any other suffix) with one item id per line.

Ids are non-empty strings without surrounding whitespace, unique. :meth:`to_file` writes
the plain one-id-per-line form, which ``ialp pretrain`` stores beside every checkpoint.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CATALOGUE_FILE = "catalogue.txt"
"""Name of the catalogue file stored in a checkpoint folder."""


class CatalogueError(ValueError):
    """A catalogue file or id list that cannot be used (the message names the problem)."""


@dataclass(frozen=True)
class Catalogue:
    """External item id per item index, with the reverse lookup."""

    item_ids: tuple[str, ...]
    """The caller's id of item index i, for every i."""
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, int] = {}
        for i, item in enumerate(self.item_ids):
            if not isinstance(item, str) or not item or item != item.strip():
                raise CatalogueError(f"item {i}: id {item!r} must be a non-empty string "
                                     "without surrounding whitespace")
            if item in index:
                raise CatalogueError(f"item id {item!r} appears twice (indices "
                                     f"{index[item]} and {i})")
            index[item] = i
        object.__setattr__(self, "_index", index)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def of(cls, item_ids: Iterable[str]) -> Catalogue:
        """A catalogue over ``item_ids`` in that order."""
        return cls(tuple(item_ids))

    @classmethod
    def from_file(cls, path: str | Path) -> Catalogue:
        """Read an items file (``item_id`` column) or a one-id-per-line text file."""
        path = Path(path)
        if not path.is_file():
            raise CatalogueError(f"catalogue file {path} does not exist")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".tsv", ".csv"):
            delimiter = "," if path.suffix.lower() == ".csv" else "\t"
            rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
            if not rows or "item_id" not in rows[0]:
                raise CatalogueError(f"{path}: the header must have an 'item_id' column")
            col = rows[0].index("item_id")
            ids = []
            for line, row in enumerate(rows[1:], start=2):
                if not row:
                    continue
                if col >= len(row):
                    raise CatalogueError(f"{path}:{line}: no item_id field")
                ids.append(row[col])
        else:
            ids = [line for line in text.splitlines() if line.strip()]
        if not ids:
            raise CatalogueError(f"{path}: no item ids")
        try:
            return cls.of(ids)
        except CatalogueError as exc:
            raise CatalogueError(f"{path}: {exc}") from None

    def to_file(self, path: str | Path) -> Path:
        """Write one id per line (atomically: a reader never sees half a file)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(f"{x}\n" for x in self.item_ids), encoding="utf-8")
        tmp.replace(path)
        return path

    def extended(self, new_ids: Sequence[str]) -> Catalogue:
        """This catalogue with ``new_ids`` appended (existing indices keep their item)."""
        return Catalogue(self.item_ids + tuple(new_ids))

    # -- lookup ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item: object) -> bool:
        return item in self._index

    @property
    def fingerprint(self) -> str:
        """Short SHA-256 of the ids in order: two replicas agree iff this agrees."""
        digest = hashlib.sha256("\n".join(self.item_ids).encode("utf-8")).hexdigest()
        return digest[:16]

    def index_of(self, item_id: str) -> int:
        """Index of ``item_id`` (``KeyError`` when unknown)."""
        return self._index[item_id]

    def indices(self, item_ids: Sequence[str]) -> tuple[list[int], list[str]]:
        """``(indices of the known ids, the unknown ids)``, order kept."""
        known: list[int] = []
        unknown: list[str] = []
        for item in item_ids:
            i = self._index.get(item)
            if i is None:
                unknown.append(item)
            else:
                known.append(i)
        return known, unknown

    def ids(self, indices: Iterable[int]) -> list[str]:
        """The external ids of ``indices``."""
        return [self.item_ids[int(i)] for i in indices]
