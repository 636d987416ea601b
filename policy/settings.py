"""Typed settings from a loose mapping (``--hyper`` JSON, options strings)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def settings_from(cls: type[T], values: Mapping[str, Any], what: str) -> T:
    """``cls(**values)`` for a dataclass ``cls``; a key that is not one of its fields is
    a ValueError naming it and every known field (``what`` names the settings, e.g. the
    method), so a typo never silently falls back to a default."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} setting(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(known))}")
    return cls(**values)
