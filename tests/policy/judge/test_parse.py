"""Reply parsing: the paper's answer form, common variants, and garbage."""

from __future__ import annotations

import pytest

from policy.judge.parse import parse_answer

TEXTS = [f"colour{i} jacket" for i in range(10)]
TEXTS[4] = "women's black bomber jacket"

CASES: list[tuple[str, str, int | None]] = [
    # The paper's form, with and without a trailing period or item echo.
    ("By analysing the user’s preference, the user will select c", "item", 2),
    ("By analysing the user's preference, the user will select c.", "item", 2),
    (" c", "item", 2),
    ("j", "item", 9),
    ("C", "item", 2),
    ("(d)", "item", 3),
    ("d)", "item", 3),
    ("e. women's black bomber jacket", "item", 4),
    ("**b**", "item", 1),
    ("Answer: f", "item", 5),
    ("The answer is (g).", "item", 6),
    ("the user will most likely select option h because it matches", "item", 7),
    ("the user will select candidate A.", "item", 0),
    ("a", "item", 0),
    ("will select 'i'", "item", 8),
    ("I think the user will choose women's black bomber jacket", "item", 4),
    # Echoed prompt followed by the answer: the last marker wins.
    ("…will mostly like at next timestamp…\nResponse: By analysing the user’s preference, "
     "the user will select b", "item", 1),
    # None in its forms: the word, the None label k (10 candidates), "k. None".
    ("None", "none", None),
    ("the user will select None", "none", None),
    ("By analysing the user’s preference, the user will select k", "none", None),
    ("k. None", "none", None),
    ("none of the candidates", "none", None),
    # Garbage and ambiguity: counted, never guessed.
    ("", "unparseable", None),
    ("   ", "unparseable", None),
    ("hello world", "unparseable", None),
    ("the user will select a jacket", "unparseable", None),
    ("c or d", "unparseable", None),
    ("the user will select l", "unparseable", None),
    ("z", "unparseable", None),
    ("I cannot decide.", "unparseable", None),
    ("a, b or c", "unparseable", None),
    ("Answer: x", "unparseable", None),
    # A self-correction: the last answer marker wins.
    ("Answer: c. Actually answer: d", "item", 3),
]


@pytest.mark.parametrize(("reply", "kind", "index"), CASES)
def test_parse_table(reply: str, kind: str, index: int | None) -> None:
    got = parse_answer(reply, 10, TEXTS)
    assert (got.kind, got.index) == (kind, index), got.reason


def test_none_label_follows_the_last_candidate() -> None:
    assert parse_answer("c", 2).kind == "none"
    assert parse_answer("b", 2).index == 1
    assert parse_answer("d", 2).kind == "unparseable"
    with pytest.raises(ValueError):
        parse_answer("a", 0)
