"""What an LLM proposer is asked and how its replies are read: the exploit and explore
prompt templates, the length caps of prompt texts and of the proposal log, and
:func:`parse_reply`, which takes the proposed name out of a free-text reply."""

from __future__ import annotations

import re

EXPLOIT_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n"
    "Instruction: You choose the {item}s that a {scenario} platform shows to all of its "
    "users. Each {item} below has been shown to many users; its CTR is the mean engagement "
    "per impression (higher is better). Propose ONE new {item} that is not listed below and "
    "is similar to the {item}s with the highest CTR, so that it will get a high CTR too. "
    "Answer with its name only, on one line.\n"
    "Input: Current {item}s and their CTR:\n{pool}\n"
    "Best {item}s so far:\n{best}\n"
    "Response: The new {item} is:"
)
"""Exploit prompt. Placeholders: ``item`` (the scenario's item noun), ``scenario``,
``pool`` (one "- text (CTR 0.123)" line per pool item), ``best`` (the best items of all
finished iterations, same layout). Ends in an answer prefix so a completion model
continues with the name; chat models answer it as a question."""

EXPLORE_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n"
    "Instruction: You choose the {item}s that a {scenario} platform shows to all of its "
    "users. To discover what else users may like, propose ONE new {item} of a different "
    "kind, style or topic than all of the {item}s listed below. Answer with its name only, "
    "on one line.\n"
    "Input: Current {item}s:\n{pool}\n"
    "Response: The new {item} is:"
)
"""Explore prompt: the pool without CTRs. Placeholders: ``item``, ``scenario``, ``pool``
(one "- text" line per pool item)."""

MAX_ITEM_CHARS = 120
"""Item texts are cut to this length in prompts (Industry titles can be long)."""

MAX_LOG_CHARS = 300
"""Replies are cut to this length in the proposal log (prompts to 4× this)."""


_CTR_NOTE = re.compile(r"\s*\((?:CTR\b[^)]*|not shown yet)\)\s*$", re.IGNORECASE)
_MARKUP = re.compile(r"^\s*(?:[-*•>#]+|\d+[.)]|[a-z][.)])\s+", re.IGNORECASE)


def parse_reply(reply: str, item_noun: str = "item") -> str:
    """The proposed name in a reply: its first non-empty line, without bullets, numbering,
    surrounding quotes or emphasis, the prompt's answer prefix or a copied "(CTR …)" note.
    Empty when nothing usable (no letter or digit) remains."""
    for raw in str(reply).splitlines():
        line = raw.strip()
        if not line:
            continue
        line = re.sub(rf"^(?:the\s+)?new\s+{re.escape(item_noun)}\s+is\s*:?\s*", "", line,
                      flags=re.IGNORECASE)
        line = _MARKUP.sub("", line)
        # A copied prompt line carries its CTR note; the name is what precedes it.
        line = _CTR_NOTE.sub("", line)
        # Emphasis, quotes and a closing full stop, in any nesting order.
        line = line.strip(" \t*_`\"'“”‘’.")
        return line if re.search(r"\w", line) else ""
    return ""
