"""What a trainer resumes from: its counters on disk and the start-point resolution."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.online.settings import TrainerSettings
from trainer.transport.publication import PublishedPolicies, start_policy

if TYPE_CHECKING:
    from policy.mixed import MixedPolicy

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
"""Counters saved beside each checkpoint in the state directory."""
POLICY_DIR = "policy"
"""Checkpoint of the last saved version inside the state directory."""


@dataclass
class TrainerState:
    """Counters saved beside each checkpoint."""

    version: int = 0
    """Last published version."""
    updates: int = 0
    """Learner updates so far (the α schedule's step)."""
    events_learned: int = 0
    """Transitions consumed by updates."""
    alpha_step: int | None = None
    """Step of the α schedule (``None``: equal to ``updates``); the reward guardrail
    pulls it back, so it can lag ``updates``."""
    consumed_ids: list[str] = field(default_factory=list)
    """Event ids inside this state (learned, or consumed by a refused update) that may
    still sit in Redis' durable buffer: a restart removes exactly these, by id."""
    genee: dict[str, Any] | None = None
    """GenEE service mode: the pool's state (``GenEEMode.state_dict``) as of this version,
    saved in the same atomic write so it always counts exactly this state's events."""

    def __post_init__(self) -> None:
        if self.alpha_step == self.updates:
            self.alpha_step = None  # one representation of "the schedule follows updates"

    @property
    def anneal_step(self) -> int:
        """The α schedule's step."""
        return self.updates if self.alpha_step is None else self.alpha_step

    def save(self, directory: Path) -> None:
        """Atomic write of ``trainer_state.json``."""
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, directory / STATE_FILE)

    @classmethod
    def load(cls, directory: Path) -> TrainerState | None:
        """The saved state, or ``None``."""
        path = directory / STATE_FILE
        if not path.is_file():
            return None
        d = json.loads(path.read_text())
        step = d.get("alpha_step")
        return cls(int(d["version"]), int(d["updates"]), int(d["events_learned"]),
                   None if step is None else int(step),
                   [str(x) for x in d.get("consumed_ids", [])],
                   d.get("genee"))


async def initial_policy(
s: TrainerSettings, policies: PublishedPolicies
) -> tuple[MixedPolicy, TrainerState | None]:
    """Where the trainer starts: its own saved state (resume), else Redis' current
    version, else the configured checkpoint, else an untrained policy."""
    saved = TrainerState.load(s.state_dir)
    if saved is not None and (s.state_dir / POLICY_DIR).is_dir():
        from policy.checkpoint import load_checkpoint

        policy = await asyncio.to_thread(load_checkpoint, s.state_dir / POLICY_DIR)
        logger.info("resuming from %s: version %d, %d updates, α=%.3f", s.state_dir,
                    saved.version, saved.updates, policy.alpha)
        return policy, saved
    policy = await start_policy(policies, checkpoint=s.checkpoint, num_items=s.num_items,
                                max_len=s.max_len, seed=s.seed)
    return policy, None
