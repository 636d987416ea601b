"""Entry point of the ``ialp`` command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Subcommand modules, in help order. Each has ``register(subparsers)``.
COMMAND_MODULES = [
    "ialp.commands.env",
    "ialp.commands.demo",
    "ialp.commands.serve",
    "ialp.commands.trainer",
    "ialp.commands.simulate",
    "ialp.commands.experiment",
    "ialp.commands.llm",
    "ialp.commands.pretrain",
    "ialp.commands.ope",
    "ialp.commands.policy",
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (subcommands import their heavy code only when run)."""
    parser = argparse.ArgumentParser(
        prog="ialp",
        description="LLM-distilled policy pre-training (iALP) and online adaptation (A-iALP) "
        "for recommender systems.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Per-request access lines from the HTTP client drown real progress output.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from simulator_client.datasets.errors import DatasetError

    try:
        return int(args.func(args) or 0)
    except DatasetError as exc:
        print(f"ialp: dataset error: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:
        print(f"ialp: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ialp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
