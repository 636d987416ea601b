"""Core value types shared by every package: observations and slates.

Item ids are 0-based catalogue indices everywhere outside the neural models; models that
need a padding index shift ids by one internally.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

PAD = -1
"""Padding value for item-id arrays holding variable-length histories."""


@dataclass(frozen=True)
class Observation:
    """What a policy sees about one user at one step."""

    user_id: int
    """Catalogue user index (or a hashed external id in the service)."""
    history: tuple[int, ...]
    """Item ids the user interacted with, oldest first."""


@dataclass(frozen=True)
class Slate:
    """A policy's answer: k items with their propensities under the acting policy."""

    items: tuple[int, ...]
    """Recommended item ids, best first, no repeats."""
    propensities: tuple[float, ...]
    """Probability of each item under the acting (mixed) policy at the time of choice."""
    sources: tuple[str, ...] = field(default_factory=tuple)
    """Which component produced each item (for a mixed policy: "theta" or "beta")."""


def pad_histories(histories: Sequence[Sequence[int]], max_len: int) -> np.ndarray:
    """Right-align histories into an int64 array ``[B, max_len]`` padded with ``PAD``.

    Longer histories keep their most recent ``max_len`` items.
    """
    out = np.full((len(histories), max_len), PAD, dtype=np.int64)
    for row, hist in enumerate(histories):
        tail = list(hist)[-max_len:] if max_len > 0 else []
        if tail:
            out[row, max_len - len(tail) :] = tail
    return out


CONTROL_SOURCES = ("random", "popular")
"""Sources of A/B control-arm decisions: logged, counted and exported, never learned."""


@dataclass(frozen=True)
class Transition:
    """One learned-from step: the decision the service made joined with its feedback.

    This is the unit that travels from the API to the trainer (through the feedback bus)
    and from environments to learners in the in-process runner.
    """

    event_id: str
    """Unique id of the decision; the trainer learns each event id at most once."""
    user_id: int
    """User the decision was made for."""
    history: tuple[int, ...]
    """State x_1:t: item ids seen before the decision, oldest first."""
    action: int
    """The item the user was shown and gave feedback on."""
    reward: float
    """Feedback reward r(s_t, a_t)."""
    done: bool
    """Whether the episode (session) ended with this step."""
    propensity: float = 1.0
    """Probability of ``action`` under the acting policy when it was chosen."""
    policy_version: int = 0
    """Version of the policy that made the decision."""
    source: str = ""
    """Which component of a mixed policy chose the action ("theta" / "beta" / ""), or
    the A/B control arm that did (one of :data:`CONTROL_SOURCES`)."""

    @property
    def next_history(self) -> tuple[int, ...]:
        """State x_1:t+1: the history with the action appended."""
        return (*self.history, self.action)
