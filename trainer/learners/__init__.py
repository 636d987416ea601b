"""Learner factory: ``make_learner(method, config, seed=..., init=..., **hyper)``.

Methods register here by name, so the service trainer and the experiment runner never
import a learner class directly. Hyperparameters are the fields of each method's config
dataclass; an unknown name is an error listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from policy.config import PolicyConfig
from policy.mixed import MixedPolicy
from trainer.learners.a2c import ONLINE_A2C, PAPER_A2C, A2CConfig, A2CLearner
from trainer.learners.adaptive import ONLINE_AP, APConfig, APLearner, FTConfig, FTLearner
from trainer.learners.base import BaseLearner, Learner, NonFiniteLossError
from trainer.learners.dqn import DQNConfig, DQNLearner
from trainer.learners.pg import PGConfig, PGLearner

__all__ = [
    "ONLINE_A2C",
    "ONLINE_AP",
    "PAPER_A2C",
    "A2CConfig",
    "A2CLearner",
    "APConfig",
    "APLearner",
    "BaseLearner",
    "DQNConfig",
    "DQNLearner",
    "FTConfig",
    "FTLearner",
    "Learner",
    "NonFiniteLossError",
    "PGConfig",
    "PGLearner",
    "available_learners",
    "learner_class",
    "make_learner",
    "register_learner",
]

LearnerFactory = Callable[..., Learner]
"""``factory(config, *, seed, init, **hyper) -> Learner``."""

_REGISTRY: dict[str, LearnerFactory] = {}
_CLASSES: dict[str, type] = {}


def register_learner(name: str, factory: LearnerFactory, cls: type | None = None) -> None:
    """Make ``name`` available to :func:`make_learner` (later schemes plug in here);
    ``cls``: the class the factory builds, when known (:func:`learner_class`)."""
    _REGISTRY[name] = factory
    if cls is not None:
        _CLASSES[name] = cls


def learner_class(name: str) -> type:
    """The class :func:`make_learner` builds for ``name`` (so every driver can be checked
    to run the same implementation)."""
    if name not in _CLASSES:
        raise KeyError(f"no learner class recorded for {name!r}; known: "
                       f"{', '.join(sorted(_CLASSES))}")
    return _CLASSES[name]


def available_learners() -> list[str]:
    """Registered method names."""
    return sorted(_REGISTRY)


def _simple(cls: type[BaseLearner], hyper_cls: type) -> LearnerFactory:
    def factory(
        config: PolicyConfig, *, seed: int, init: MixedPolicy | None = None, **hyper: Any
    ) -> Learner:
        known = {f.name for f in fields(hyper_cls)}
        unknown = sorted(set(hyper) - known)
        if unknown:
            raise TypeError(
                f"{cls.method}: unknown hyperparameters {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(known))}"
            )
        return cls(config, hyper_cls(**hyper), seed=seed, init=init)

    return factory


register_learner("a2c", _simple(A2CLearner, A2CConfig), A2CLearner)
register_learner("dqn", _simple(DQNLearner, DQNConfig), DQNLearner)
register_learner("pg", _simple(PGLearner, PGConfig), PGLearner)
# A-iALP (Algorithm 2): both need init=<pre-trained πθ>.
register_learner("ft", _simple(FTLearner, FTConfig), FTLearner)
register_learner("ap", _simple(APLearner, APConfig), APLearner)


def make_learner(
    method: str,
    config: PolicyConfig,
    *,
    seed: int,
    init: MixedPolicy | None = None,
    **hyper: Any,
) -> Learner:
    """Build the learner of ``method`` (``a2c``, ``dqn``, ``pg``, ``ft``, ``ap``, and any
    registered later)."""
    if method not in _REGISTRY:
        raise KeyError(f"unknown learner {method!r}; known: {', '.join(available_learners())}")
    return _REGISTRY[method](config, seed=seed, init=init, **hyper)
