"""Learn a batch, or find the transitions that make its loss non-finite.

One hostile transition (a finite reward whose square float32 cannot hold, say) must not
cost the honest ones beside it: the batch is split in halves until the offenders are
isolated; they are returned for quarantine and everything else is learned.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from policy.types import Transition

if TYPE_CHECKING:
    from policy.mixed import MixedPolicy


def invalid_reason(t: Transition, num_items: int) -> str | None:
    """Why ``t`` cannot be learned by a policy over ``num_items`` items (dead-lettered),
    or ``None``."""
    if not 0 <= t.action < num_items:
        return f"action {t.action} outside the catalogue of {num_items} items"
    if any(not 0 <= x < num_items for x in t.history):
        return f"history item outside the catalogue of {num_items} items"
    return None


def nonfinite_update(stats: dict[str, float],
                     composed: Callable[[], MixedPolicy]) -> tuple[str, str] | None:
    """``(reason, what)`` when an update produced NaN/inf losses, or weights of the policy
    as it would be published (``composed()``: β and the frozen θ it is mixed with)."""
    from trainer.transport.publication import nonfinite_parameters

    bad = sorted(k for k, v in stats.items() if not math.isfinite(float(v)))
    if bad:
        return "nonfinite_loss", ", ".join(f"{k}={stats[k]}" for k in bad)
    tensors = nonfinite_parameters(composed())
    if tensors:
        return "nonfinite_weights", ", ".join(tensors[:5])
    return None


async def fit_or_isolate(
    learner: Any, batch: list[Transition], max_len: int
) -> tuple[list[Transition], list[tuple[Transition, str]], dict[str, float], int]:
    """``(learned, [(quarantined, why)], last stats, learner steps)``.

    The learner raises :class:`NonFiniteLossError` before its weights or optimizer
    change; the only state it touches first is the reward range of its target bound,
    which is put back, so a refused attempt leaves no trace and the halves are tried
    on the same learner."""
    from trainer.batch import TransitionBatch
    from trainer.learners.base import NonFiniteLossError

    if not batch:
        return [], [], {}, 0

    def _learn(part: list[Transition]) -> dict[str, float]:
        tb = TransitionBatch.from_transitions(part, max_len)
        return dict(learner.update(tb))

    saved_range = getattr(learner, "reward_range", None)
    try:
        stats = await asyncio.to_thread(_learn, batch)
        return batch, [], stats, 1
    except NonFiniteLossError as exc:
        if hasattr(learner, "reward_range"):
            learner.reward_range = saved_range
        if len(batch) == 1:
            return [], [(batch[0], f"nonfinite_loss: {exc}")], {}, 0
    half = len(batch) // 2
    a = await fit_or_isolate(learner, batch[:half], max_len)
    b = await fit_or_isolate(learner, batch[half:], max_len)
    return a[0] + b[0], a[1] + b[1], b[2] or a[2], a[3] + b[3]
