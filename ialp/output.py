"""Printing helpers shared by subcommands: JSON and aligned tables."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any


def print_json(obj: Any) -> None:
    """Pretty JSON on stdout (sorted keys: stable, diffable output)."""
    print(json.dumps(obj, indent=2, sort_keys=True))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table with right-aligned numbers."""
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    head = "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                     enumerate(zip(columns, widths, strict=True)))
    lines = [head, "  ".join("-" * w for w in widths)]
    for row in cells:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in
                               enumerate(zip(row, widths, strict=True))))
    return "\n".join(lines)
