"""Environment names → builders. Every ``ialp env ...`` command resolves names here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simulator_client.envs.base import RecBatchEnv

EnvBuilder = Callable[..., RecBatchEnv]
StatsBuilder = Callable[[], dict[str, Any]]

_BUILDERS: dict[str, EnvBuilder] = {}
_STATS: dict[str, StatsBuilder] = {}


def register(name: str, builder: EnvBuilder, stats: StatsBuilder) -> None:
    """Make ``name`` available to :func:`make_env` and :func:`env_stats`."""
    _BUILDERS[name] = builder
    _STATS[name] = stats


def _ensure_builtin() -> None:
    if "coat" in _BUILDERS:
        return
    from simulator_client.envs.coat import make_coat_env

    def coat_stats() -> dict[str, Any]:
        from simulator_client.datasets.coat import load_coat

        data = load_coat()
        hist = {str(r): int((data.train == r).sum()) for r in range(1, 6)}
        hist_test = {str(r): int((data.test == r).sum()) for r in range(1, 6)}
        return {
            "name": "coat",
            "users": data.num_users,
            "items": data.num_items,
            "interactions": int((data.train > 0).sum() + (data.test > 0).sum()),
            "train_interactions": int((data.train > 0).sum()),
            "test_interactions": int((data.test > 0).sum()),
            "rating_histogram": {"train": hist, "test": hist_test},
            "pseudo_gt_histogram": {
                str(r): int((data.pseudo_gt == r).sum()) for r in range(1, 6)
            },
        }

    register("coat", make_coat_env, coat_stats)
    for name in ("lfm", "industry"):
        _register_sequential(name)


def _register_sequential(name: str) -> None:
    """Register a sequential environment (built-in or built with ``ialp env build``)."""
    from functools import partial

    from simulator_client.envs.storage import make_sequential_env, sequential_stats

    register(name, partial(make_sequential_env, name), partial(sequential_stats, name))


def _resolve(name: str) -> None:
    """Make ``name`` known if it is a built custom environment under the cache folder."""
    _ensure_builtin()
    if name in _BUILDERS:
        return
    from simulator_client.envs.storage import built_names

    if name in built_names():
        _register_sequential(name)


def available() -> list[str]:
    """Names of every known environment (built-in and built with ``ialp env build``)."""
    _ensure_builtin()
    from simulator_client.envs.storage import built_names

    return sorted(set(_BUILDERS) | set(built_names()))


def make_env(name: str, split: str = "test", **kwargs: Any) -> RecBatchEnv:
    """Build environment ``name`` for ``split`` (``"train"`` or ``"test"``)."""
    _resolve(name)
    if name not in _BUILDERS:
        raise KeyError(f"unknown environment {name!r}; known: {', '.join(available())}")
    return _BUILDERS[name](split, **kwargs)


def env_stats(name: str) -> dict[str, Any]:
    """Dataset statistics of environment ``name``."""
    _resolve(name)
    if name not in _STATS:
        raise KeyError(f"unknown environment {name!r}; known: {', '.join(available())}")
    return _STATS[name]()
