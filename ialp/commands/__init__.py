"""Subcommand modules. Each exposes ``register(subparsers)`` and imports heavy code lazily."""
