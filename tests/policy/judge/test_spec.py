"""One construction path for judges: option strings and CLI namespaces give the same spec,
and bad options are clear errors (never a SystemExit from inside the library)."""

from __future__ import annotations

import argparse

import pytest

from policy.judge.spec import JudgeSpec, JudgeSpecError, judge_arguments


def test_option_string_and_cli_namespace_give_the_same_spec() -> None:
    opts = "--judge hf --model-path /m --adapter /a --llm-batch-size 4"
    parser = argparse.ArgumentParser()
    judge_arguments(parser)
    from_cli = JudgeSpec.from_namespace(parser.parse_args(opts.split()))
    assert JudgeSpec.parse(opts) == from_cli
    assert from_cli.judge == "hf" and from_cli.llm_batch_size == 4
    assert from_cli.label() == "hf (/m + /a, labels)"
    assert JudgeSpec.parse("") == JudgeSpec()


@pytest.mark.parametrize(("options", "env", "message"), [
    ("--judge hf", "coat", "needs --model-path"),
    ("--judge openai --model m", "coat", "needs --base-url and --model"),
    ("", "my-shop", "no built-in scenario"),
])
def test_specs_that_cannot_build_say_why(options: str, env: str, message: str) -> None:
    with pytest.raises(JudgeSpecError, match=message):
        JudgeSpec.parse(options).build(env, ("an item",))


def test_unknown_options_are_an_error_not_an_exit() -> None:
    with pytest.raises(JudgeSpecError, match="invalid judge options"):
        JudgeSpec.parse("--judge nonsense")
    with pytest.raises(JudgeSpecError, match="unknown"):
        JudgeSpec.parse("--no-such-flag 3")
