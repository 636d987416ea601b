"""The Table 1 prompt, filled for a known history and candidate list."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy.judge.prompt import (
    DEFAULT_TEMPLATE,
    SCENARIOS,
    PromptBuilder,
    PromptConfig,
    load_scenario,
    load_template,
)

ITEMS = [f"item {i}" for i in range(20)]
ITEMS[3] = "women's black bomber jacket"
ITEMS[7] = "men's blue\ndenim   jacket"  # whitespace in item text is normalised

EXPECTED = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n"
    "Instruction: You are a user in a clothing shopping platform now. The jacket is in the "
    "form of jacket colour; type. Given a user’s shopping history of jacket, and candidate "
    "jacket labelled by lowercase letter to be decided to recommend to the user, identify "
    "which jacket the user will mostly prefer to at next timestamp. Please judge by the "
    "user’s preference on jacket colour; type; if you think that none of the candidates will "
    "be selected by the user, please answer ”None”\n"
    "Input: History: women's black bomber jacket | men's blue denim jacket. Which one the "
    "user will mostly like at next timestamp in the following candidates?\n"
    "a. item 10\nb. item 11\nc. item 12\nd. item 13\ne. item 14\n"
    "f. item 15\ng. item 16\nh. item 17\ni. item 18\nj. item 19\nk. None\n"
    "Response: By analysing the user’s preference, the user will select"
)


def _builder(**kw: object) -> PromptBuilder:
    return PromptBuilder(item_text=ITEMS, scenario=SCENARIOS["coat"], **kw)  # type: ignore[arg-type]


def test_table1_prompt_is_exact() -> None:
    prompt = _builder().build([3, 7], list(range(10, 20)))
    assert prompt == EXPECTED


def test_history_is_truncated_to_most_recent_and_empty_history_is_named() -> None:
    b = _builder(config=PromptConfig(max_history=2))
    assert b.history_text([1, 2, 3]) == "item 2 | women's black bomber jacket"
    assert "History: none." in b.build([], [1, 2])
    # With 2 candidates the None option takes label c.
    assert b.candidates_text([1, 2]) == "a. item 1\nb. item 2\nc. None"


def test_bad_inputs_fail_clearly() -> None:
    b = _builder()
    with pytest.raises(IndexError, match="outside"):
        b.build([99], [1])
    with pytest.raises(ValueError, match="candidates"):
        b.build([1], [])


def test_template_and_scenario_files_override_defaults(tmp_path: Path) -> None:
    tpl = tmp_path / "t.txt"
    tpl.write_text("{scenario}/{item}: {history} ? {candidates} ->\n", encoding="utf-8")
    b = _builder(template=load_template(tpl))
    assert b.build([3], [4]) == "clothing shopping/jacket: women's black bomber jacket ? " \
        "a. item 4\nb. None ->"
    bad = tmp_path / "bad.txt"
    bad.write_text("{history} {candidates} {rating}", encoding="utf-8")
    with pytest.raises(ValueError, match="rating"):
        load_template(bad)
    scen = tmp_path / "s.json"
    scen.write_text('{"scenario": "book", "item": "book", "attributes": "title; author", '
                    '"behavior": "reading"}', encoding="utf-8")
    s = load_scenario(str(scen))
    assert s.attributes == ("title", "author")
    assert load_template(None) == DEFAULT_TEMPLATE
    with pytest.raises(KeyError, match="unknown scenario"):
        load_scenario("nope")
