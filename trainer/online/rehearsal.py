"""Rehearsal: extra learner updates on minibatches of recently learned transitions.

The stream delivers each event once, and the trainer commits it into one update. A
learner that only ever sees each transition once learns far slower than the in-process
experiments, whose learners sample minibatches from a replay memory (one update per 16
interactions on 64 sampled transitions). Rehearsal gives the online trainer the same
sample efficiency: after each update on new events, ``replay_updates`` more updates on
minibatches drawn from the transitions this process has already learned.

Exactly-once is untouched: an event enters the learned state once (committed, learned,
trimmed by id, recorded in the audit); rehearsal only revisits it inside the learner, and
the memory is in-process (lost on restart, which loses nothing but speed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np

from policy.types import Transition
from trainer.replay import ReplayBuffer


class Rehearsal:
    """A bounded memory of learned transitions and the extra updates drawn from it."""

    def __init__(self, *, updates: int, capacity: int, batch_size: int, max_len: int,
                 seed: int) -> None:
        self.updates = updates
        self.batch_size = batch_size
        self.memory = ReplayBuffer(capacity, max_len)
        self._rng = np.random.default_rng(seed)

    async def run(self, learner: Any, learned: Sequence[Transition]) -> int:
        """Remember ``learned`` and make the extra updates; returns how many were made.

        A rehearsal update whose loss is not finite stops the rehearsal for this round
        (the learner raised before changing its weights; its reward range is put back)."""
        from trainer.learners.base import NonFiniteLossError

        if not learned:
            return 0
        self.memory.add_transitions(list(learned))
        done = 0
        for _ in range(self.updates):
            batch = self.memory.sample(self.batch_size, self._rng)
            saved_range = getattr(learner, "reward_range", None)
            try:
                await asyncio.to_thread(learner.update, batch)
            except NonFiniteLossError:
                if hasattr(learner, "reward_range"):
                    learner.reward_range = saved_range
                break
            done += 1
        return done
