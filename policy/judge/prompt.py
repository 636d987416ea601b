"""The preference prompt of section 4.1.1 (Table 1) and the scenario descriptions that fill it.

The default template is Table 1 of the paper word for word (typography included); only the
placeholders are named so that a template file can move them around. The prompt ends right
after "the user will select" so that a causal language model completes it with a label, as
in the paper's tuning set-up (section 5.4).
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

LABELS = "abcdefghijklmnopqrstuvwxyz"
"""Candidate labels in order; with k candidates the label after the last one means None."""

DEFAULT_TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n"
    "Instruction: You are a user in a {scenario} platform now. The {item} is in the form of "
    "{attributes}. Given a user\u2019s {behavior} history of {item}, and candidate {item} "
    "labelled by lowercase letter to be decided to recommend to the user, identify which "
    "{item} the user will mostly prefer to at next timestamp. Please judge by the user\u2019s "
    "preference on {attributes}; if you think that none of the candidates will be selected "
    "by the user, please answer \u201dNone\u201d\n"
    "Input: History: {history}. Which one the user will mostly like at next timestamp in the "
    "following candidates?\n"
    "{candidates}\n"
    "Response: By analysing the user\u2019s preference, the user will select"
)
"""Table 1 of the paper. Placeholders: scenario, item, attributes, behavior, history,
candidates. The response prefix is part of the prompt; the model continues with a label."""

ANSWER_PREFIX = "By analysing the user\u2019s preference, the user will select"
"""The fixed opening of the paper's answer form (parsers look for it in replies)."""

TEMPLATE_FIELDS = frozenset({"scenario", "item", "attributes", "behavior", "history", "candidates"})


@dataclass(frozen=True)
class Scenario:
    """What fills the scenario slots of the template for one dataset."""

    scenario: str
    """Platform kind, as in "You are a user in a {scenario} platform now"."""
    item: str
    """Name of one item ("jacket", "artist", "product")."""
    attributes: tuple[str, ...]
    """Item text attributes in the order the item text lists them."""
    behavior: str
    """The kind of interaction history ("shopping", "listening", "purchase")."""

    def to_json(self) -> str:
        """JSON form (a scenario file holds exactly this)."""
        return json.dumps(asdict(self), indent=2)


SCENARIOS: dict[str, Scenario] = {
    # Coat: item text is "women's black bomber jacket" (gender, colour, type).
    "coat": Scenario(
        scenario="clothing shopping", item="jacket",
        attributes=("jacket colour", "type"), behavior="shopping",
    ),
    # LFM substitute: artist level, the only text is the artist's name.
    "lfm": Scenario(
        scenario="music streaming", item="artist", attributes=("artist",), behavior="listening",
    ),
    # Industry: UniSRec "Scientific" text "title; category; brand".
    "industry": Scenario(
        scenario="industrial and scientific e-commerce", item="product",
        attributes=("title", "category", "brand"), behavior="purchase",
    ),
}
"""Built-in scenario of each dataset (section 5.1, Table 2 item attributes)."""


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by dataset name, or one read from a JSON file."""
    if name_or_path in SCENARIOS:
        return SCENARIOS[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise KeyError(
            f"unknown scenario {name_or_path!r}: use one of {', '.join(sorted(SCENARIOS))} "
            "or a JSON file with scenario, item, attributes, behavior"
        )
    raw = json.loads(path.read_text(encoding="utf-8"))
    missing = {"scenario", "item", "attributes", "behavior"} - set(raw)
    if missing:
        raise ValueError(f"scenario file {path} lacks {', '.join(sorted(missing))}")
    attrs = raw["attributes"]
    if isinstance(attrs, str):
        attrs = [a.strip() for a in attrs.split(";") if a.strip()]
    return Scenario(
        scenario=str(raw["scenario"]), item=str(raw["item"]),
        attributes=tuple(str(a) for a in attrs), behavior=str(raw["behavior"]),
    )


def validate_template(template: str) -> str:
    """Check that ``template`` uses only known placeholders and has the required ones."""
    used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    unknown = used - TEMPLATE_FIELDS
    if unknown:
        raise ValueError(
            f"template uses unknown placeholders {sorted(unknown)}; "
            f"allowed: {sorted(TEMPLATE_FIELDS)}"
        )
    for needed in ("history", "candidates"):
        if needed not in used:
            raise ValueError(f"template lacks the {{{needed}}} placeholder")
    return template


def load_template(path: str | Path | None) -> str:
    """The template in file ``path`` (UTF-8, placeholders in braces), or the default."""
    if path is None:
        return DEFAULT_TEMPLATE
    text = Path(path).read_text(encoding="utf-8")
    # Editors add a final newline; the prompt must end where the model should continue.
    return validate_template(text.rstrip("\n"))


@dataclass(frozen=True)
class PromptConfig:
    """How histories and candidates are written into the template."""

    max_history: int = 20
    """Most recent history items written into the prompt (older ones are dropped)."""
    history_separator: str = " | "
    """Between history items (item texts may themselves contain ';' and ',')."""
    empty_history: str = "none"
    """What the history slot says for a user with no interactions yet."""
    candidate_separator: str = "\n"
    """Between the labelled candidates, including the final None option."""


@dataclass
class PromptBuilder:
    """Renders p(s, a^k): the template filled with a user's history and k candidates."""

    item_text: Sequence[str]
    """Text of every catalogue item, indexed by 0-based item id."""
    scenario: Scenario
    """Dataset scenario slots."""
    template: str = DEFAULT_TEMPLATE
    """Template text with named placeholders (see :data:`DEFAULT_TEMPLATE`)."""
    config: PromptConfig = field(default_factory=PromptConfig)
    """Rendering options."""

    def __post_init__(self) -> None:
        validate_template(self.template)
        self._fixed: Mapping[str, str] = {
            "scenario": self.scenario.scenario,
            "item": self.scenario.item,
            "attributes": "; ".join(self.scenario.attributes),
            "behavior": self.scenario.behavior,
        }

    def text(self, item: int) -> str:
        """Text of one item, with a clear error for ids outside the catalogue."""
        if not 0 <= item < len(self.item_text):
            raise IndexError(f"item id {item} outside [0, {len(self.item_text)})")
        # Newlines inside an item would break the one-option-per-line layout.
        return " ".join(str(self.item_text[item]).split())

    def history_text(self, history: Sequence[int]) -> str:
        """The history slot: the most recent ``max_history`` item texts, oldest first."""
        tail = list(history)[-self.config.max_history :] if self.config.max_history > 0 else []
        if not tail:
            return self.config.empty_history
        return self.config.history_separator.join(self.text(int(i)) for i in tail)

    def candidates_text(self, candidates: Sequence[int]) -> str:
        """The candidate block: "a. text" ... then the None option under the next label."""
        if not 1 <= len(candidates) < len(LABELS):
            raise ValueError(f"need 1..{len(LABELS) - 1} candidates, got {len(candidates)}")
        lines = [f"{LABELS[i]}. {self.text(int(c))}" for i, c in enumerate(candidates)]
        lines.append(f"{LABELS[len(candidates)]}. None")
        return self.config.candidate_separator.join(lines)

    def build(self, history: Sequence[int], candidates: Sequence[int]) -> str:
        """The full prompt for one decision."""
        return self.template.format_map(
            {
                **self._fixed,
                "history": self.history_text(history),
                "candidates": self.candidates_text(candidates),
            }
        )

    def content_free(self, k: int, filler: str = "N/A") -> str:
        """The prompt with ``filler`` for the history and for every one of ``k``
        candidates: what a model answers to it is its preference among the labels
        themselves (contextual calibration, Zhao et al. 2021)."""
        lines = [f"{LABELS[i]}. {filler}" for i in range(k)] + [f"{LABELS[k]}. None"]
        return self.template.format_map({**self._fixed, "history": filler,
                                         "candidates": self.config.candidate_separator
                                         .join(lines)})

    def fingerprint(self) -> str:
        """Identity of everything that shapes prompts except the item texts themselves."""
        return json.dumps(
            {"template": self.template, "scenario": asdict(self.scenario),
             "config": asdict(self.config)},
            sort_keys=True,
        )
