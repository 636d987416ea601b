"""How good is a judge? Hit rate on the user's real next item among k candidates.

Each case hides the user's real next item among ``k - 1`` items drawn uniformly from the
rest of the catalogue, in a random position. A judge that knows nothing picks it with
probability 1/k (10 % for k = 10); the report compares against that, gives a Wilson 95 %
interval, the None and unparseable rates, and how often each label was chosen (language
models are known to favour the first option).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from policy.judge.base import BaseJudge
from policy.judge.prompt import LABELS


@dataclass(frozen=True)
class JudgeCase:
    """One evaluation decision with a known right answer."""

    user: int
    """Dataset user index (for reference only; the judge never sees it)."""
    history: tuple[int, ...]
    """The user's history, oldest first."""
    candidates: tuple[int, ...]
    """k candidate items, the real next item among them."""
    target_index: int
    """Position of the real next item in ``candidates``."""

    @property
    def target(self) -> int:
        """The real next item."""
        return self.candidates[self.target_index]


def make_case(
    user: int, history: Sequence[int], target: int, num_items: int, k: int,
    rng: np.random.Generator,
) -> JudgeCase:
    """Hide ``target`` among ``k - 1`` uniform negatives (not in the history, not the target)."""
    banned = {int(i) for i in history} | {int(target)}
    if num_items - len(banned) < k - 1:
        raise ValueError(f"catalogue of {num_items} items is too small for {k} candidates")
    negatives: list[int] = []
    seen = set(banned)
    while len(negatives) < k - 1:
        for item in rng.integers(0, num_items, size=2 * k).tolist():
            if item not in seen:
                seen.add(item)
                negatives.append(item)
                if len(negatives) == k - 1:
                    break
    pos = int(rng.integers(0, k))
    cands = [*negatives[:pos], int(target), *negatives[pos:]]
    return JudgeCase(user=int(user), history=tuple(int(i) for i in history),
                     candidates=tuple(cands), target_index=pos)


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % by default)."""
    if n == 0:
        return (0.0, 1.0)
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def evaluate_judge(
    judge: BaseJudge, cases: Sequence[JudgeCase], *, batch_size: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Ask ``judge`` about every case; hit rate against chance, None and unparseable rates."""
    from tqdm import tqdm

    if not cases:
        raise ValueError("no cases to evaluate")
    k = len(cases[0].candidates)
    hits = nones = bad = 0
    chosen = np.zeros(k, dtype=np.int64)
    started = time.perf_counter()
    bar = tqdm(total=len(cases), desc=f"judge {judge.name}", unit="case", disable=not progress)
    for start in range(0, len(cases), batch_size):
        chunk = cases[start : start + batch_size]
        answers = judge.judge_batch([c.history for c in chunk], [c.candidates for c in chunk])
        for case, ans in zip(chunk, answers, strict=True):
            if ans.kind == "item" and ans.index is not None:
                chosen[ans.index] += 1
                hits += int(ans.index == case.target_index)
            elif ans.kind == "none":
                nones += 1
            else:
                bad += 1
        bar.update(len(chunk))
    bar.close()
    n = len(cases)
    answered = n - nones - bad
    lo, hi = wilson_interval(hits, n)
    return {
        "cases": n,
        "k": k,
        "chance": 1.0 / k,
        "hits": hits,
        "hit_rate": hits / n,
        "hit_rate_ci95": [lo, hi],
        "hit_rate_when_answered": hits / answered if answered else 0.0,
        "none_rate": nones / n,
        "unparseable_rate": bad / n,
        "lift_over_chance": (hits / n) * k,
        "chosen_label_counts": {LABELS[i]: int(c) for i, c in enumerate(chosen)},
        "seconds": time.perf_counter() - started,
        "judge_stats": judge.stats.as_dict(),
    }
