"""Errors raised by dataset loaders."""

from __future__ import annotations

from pathlib import Path


class DatasetError(Exception):
    """A dataset file is missing or malformed.

    The message names the file, the line when known, the expected format and where the
    dataset comes from, so a user can fix it without reading code.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Path | None = None,
        line: int | None = None,
        expected: str | None = None,
        source: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        parts = []
        if path is not None:
            parts.append(f"{path}" + (f":{line}" if line is not None else ""))
        parts.append(message)
        text = ": ".join(parts)
        if expected:
            text += f"\n  expected format: {expected}"
        if source:
            text += f"\n  dataset source: {source}"
        super().__init__(text)
