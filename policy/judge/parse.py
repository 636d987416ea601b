"""Parsing a judge's reply into a candidate index, None, or "unparseable".

The paper's answer form is "By analysing the user’s preference, the user will select c".
Replies from real models drift from it: a bare label ("c", "(c)", "C."), the label followed
by the item ("c. women's black jacket"), "Answer: c", the word None, the None label ("k"),
markdown emphasis, or the item text without its label. All of these are accepted. Anything
that names no candidate, names two, or names a label outside the list is *unparseable*: it is
counted and never turned into a guess.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from policy.judge.prompt import LABELS

AnswerKind = Literal["item", "none", "unparseable"]

# Phrases after which the label is expected; the last one in the reply wins, so an echoed
# prompt followed by the answer still parses.
_MARKERS = re.compile(
    r"(?:will\s+(?:most\s+likely\s+|mostly\s+|probably\s+)?(?:select|choose|pick|prefer|like)"
    r"|\banswer\s*(?:is|:)|\bresponse\s*:|\bchoice\s*(?:is|:)|\bselection\s*(?:is|:)"
    r"|\bselects?\b|\bchooses?\b)",
    re.IGNORECASE,
)
_NOISE = str.maketrans({c: " " for c in "*`_#\"'\u2018\u2019\u201c\u201d[]{}<>"})
# A label token at the start of the answer: optional "option"/"candidate" word, optional
# parenthesis, one letter, then an ending that shows the letter is a label, not a word.
_LEAD = re.compile(
    r"^\s*[:\-\u2013]?\s*(?:(?:option|candidate|item|label|letter)\s+)?\(?([a-zA-Z])\)?"
    r"(?=\s*$|\s*[.):,;!\-\u2013\n]|\s+(?:none\b|is\b|because\b|as\b|since\b))",
    re.IGNORECASE,
)
_NONE_WORD = re.compile(r"^\s*[:\-]?\s*(?:none\b|no\s+(?:candidate|item|one)\b|nothing\b)",
                        re.IGNORECASE)
_EXPLICIT = re.compile(
    r"\b(?:option|candidate|answer|choice|label)\s*(?:is|:)?\s*\(?([a-zA-Z])\)?(?![a-zA-Z'])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ParsedAnswer:
    """What a reply means for a list of ``n`` candidates."""

    kind: AnswerKind
    """"item" (index is set), "none" (the judge declined all) or "unparseable"."""
    index: int | None = None
    """0-based candidate index when ``kind == "item"``."""
    reason: str = ""
    """Why a reply was unparseable (for logs)."""


def _from_label(letter: str, n: int) -> ParsedAnswer:
    pos = LABELS.find(letter.lower())
    if 0 <= pos < n:
        return ParsedAnswer("item", pos)
    if pos == n:
        return ParsedAnswer("none")
    return ParsedAnswer("unparseable", reason=f"label {letter!r} outside a..{LABELS[n]}")


def _lead_answer(tail: str, n: int) -> ParsedAnswer | None:
    if _NONE_WORD.match(tail):
        return ParsedAnswer("none")
    m = _LEAD.match(tail)
    if m is None:
        return None
    rest = tail[m.end() :]
    # "c or d", "c and d": two labels is no answer.
    if re.match(r"\s*(?:or|and|/|,)\s*\(?[a-zA-Z]\)?(?![a-zA-Z'])", rest, re.IGNORECASE):
        return ParsedAnswer("unparseable", reason="more than one label")
    return _from_label(m.group(1), n)


def _text_match(reply: str, candidate_texts: Sequence[str]) -> ParsedAnswer | None:
    def norm(s: str) -> str:
        return " " + " ".join(s.translate(_NOISE).lower().split()) + " "

    low = norm(reply)
    hits = [i for i, t in enumerate(candidate_texts) if t.strip() and norm(t) in low]
    # One text may contain another ("black jacket" in "women's black jacket"): keep the
    # longest matches only, and accept only a unique one.
    if hits:
        longest = max(len(candidate_texts[i]) for i in hits)
        hits = [i for i in hits if len(candidate_texts[i]) == longest]
    if len(hits) == 1:
        return ParsedAnswer("item", hits[0])
    return None


def parse_answer(
    reply: str, n_candidates: int, candidate_texts: Sequence[str] | None = None
) -> ParsedAnswer:
    """Interpret ``reply`` for ``n_candidates`` candidates labelled a, b, ...

    The label after the last candidate (``k`` for 10) means None, as does the word None.
    ``candidate_texts`` (optional) lets a reply that names an item without its label parse.
    """
    if not 1 <= n_candidates < len(LABELS):
        raise ValueError(f"n_candidates must be in 1..{len(LABELS) - 1}, got {n_candidates}")
    text = (reply or "").translate(_NOISE)
    if not text.strip():
        return ParsedAnswer("unparseable", reason="empty reply")
    markers = list(_MARKERS.finditer(text))
    if markers:
        tail = text[markers[-1].end() :]
        found = _lead_answer(tail, n_candidates)
        if found is not None:
            return found
    else:
        found = _lead_answer(text, n_candidates)
        if found is not None:
            return found
    explicit = {m.group(1).lower() for m in _EXPLICIT.finditer(text)}
    if len(explicit) == 1:
        return _from_label(explicit.pop(), n_candidates)
    if len(explicit) > 1:
        return ParsedAnswer("unparseable", reason="more than one label")
    if candidate_texts is not None:
        found = _text_match(text[markers[-1].end() :] if markers else text, candidate_texts)
        if found is not None:
            return found
    if markers and _NONE_WORD.match(text[markers[-1].end() :].lstrip(" .:")):
        return ParsedAnswer("none")
    snippet = " ".join(reply.split())[:80]
    return ParsedAnswer("unparseable", reason=f"no label found in {snippet!r}")
