"""The GenEE pool: :class:`GenEEPool`, the state machine that serves one small pool of
items to every user, measures each item's CTR per iteration, drops the worst and asks a
proposer for new ones; and :func:`ctr_curve`, the (iteration, CTR) curve of its report."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from trainer.gee.config import GEEConfig
from trainer.gee.proposers import Proposer, _allowed


class GenEEPool:
    """The GenEE state machine: the served pool, this iteration's counts, and the log.

    Call :meth:`serve` to pick items, :meth:`record` with what was served and the rewards,
    and :meth:`end_iteration` once an iteration's impressions are in. :meth:`state_dict`
    and :meth:`load_state_dict` carry the whole state (pool, this iteration's counts, log,
    random generators, and the proposer's when it has those two methods) across a
    process restart, as JSON-safe data."""

    def __init__(self, config: GEEConfig, num_items: int, proposer: Proposer, *,
                 seed: int = 0) -> None:
        if num_items < 1:
            raise ValueError("the catalogue is empty")
        self.config = config
        self.num_items = num_items
        self.proposer = proposer
        root = np.random.SeedSequence([config.seed if config.seed is not None else seed, 89])
        init_seq, ctr_seq = root.spawn(2)
        self._ctr_rng = np.random.default_rng(ctr_seq)
        self.pool: list[int] = []
        self.ever: set[int] = set()
        """Every item that was ever in the pool (never proposed again)."""
        self.history_of_ctrs: list[tuple[int, float]] = []
        """(item, CTR used) of every finished iteration."""
        self.log: list[dict[str, Any]] = []
        self.iteration = 1
        """The iteration being measured (1-based); past ``config.iterations`` the pool is
        final."""
        self.invalid = 0
        """Proposals outside the catalogue or excluded (replaced by random items)."""
        self.impressions_after = 0
        """Impressions recorded after the last iteration (the final pool's serving)."""
        self._exploits = 0
        self._proposals = 0
        self._reset_counts()
        self.initial_how = config.init
        if config.init == "random" or num_items <= config.pool_size:
            rng = np.random.default_rng(init_seq)
            size = min(config.pool_size, num_items)
            self._extend([int(i) for i in rng.choice(num_items, size=size, replace=False)])
        else:
            for _ in range(config.pool_size):
                item = self.proposer.propose_explore(list(self.pool), self._exclude())
                self._extend([self._checked(item, self._exclude())])

    # -- state -------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """Whether every iteration has been measured (the pool is final)."""
        return self.iteration > self.config.iterations

    @property
    def impressions(self) -> int:
        """Impressions recorded for the pool in the iteration being measured."""
        return sum(self._impr.values())

    @property
    def running_ctr(self) -> float | None:
        """Mean reward per pool impression in the iteration being measured (None before
        its first impression)."""
        shown = self.impressions
        return sum(self._sums.values()) / shown if shown else None

    def _reset_counts(self) -> None:
        self._impr: dict[int, int] = {}
        self._sums: dict[int, float] = {}

    def _extend(self, items: Sequence[int]) -> None:
        for item in items:
            self.pool.append(int(item))
            self.ever.add(int(item))

    def _exclude(self, just_dropped: Iterable[int] = ()) -> set[int]:
        """Items a proposal may not be: the pool and every dropped item; once that covers
        the catalogue, the pool and the items dropped this iteration (older dropped items
        may return), and as a last resort the pool only."""
        ex = self.ever | set(self.pool)
        if len(ex) < self.num_items:
            return ex
        recent = set(self.pool) | {int(i) for i in just_dropped}
        return recent if len(recent) < self.num_items else set(self.pool)

    def _checked(self, item: Any, exclude: set[int]) -> int:
        """``item`` when it is an allowed catalogue id, else a random allowed item: the
        guarantee that the pool only ever holds catalogue ids."""
        try:
            value = int(item)
        except (TypeError, ValueError):
            value = -1
        if 0 <= value < self.num_items and value not in exclude:
            return value
        self.invalid += 1
        allowed = np.flatnonzero(_allowed(self.num_items, exclude))
        return int(self._ctr_rng.choice(allowed))

    # -- serving -----------------------------------------------------------------------
    def _fresh(self, histories: np.ndarray, items: np.ndarray) -> np.ndarray:
        """[B, K] mask of the pool items each row may be served: those not in its history,
        or the whole pool when it has seen them all."""
        hist = np.asarray(histories, dtype=np.int64).reshape(len(histories), -1)
        # Pool ids are >= 0, so PAD entries never match.
        fresh = ~(hist[:, :, None] == items[None, None, :]).any(axis=1)
        fresh[~fresh.any(axis=1)] = True
        return fresh

    def serve(self, histories: np.ndarray, rng: np.random.Generator,
              pool: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One pool item per row of ``histories`` ([B, W], PAD-padded): uniform among the
        pool items not in that row's history, else uniform over the pool. Returns
        (items, the probability each was served with). ``pool`` replaces the current pool
        (an evaluation snapshot)."""
        items = np.asarray(self.pool if pool is None else pool, dtype=np.int64)
        if not len(histories):
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        fresh = self._fresh(histories, items)
        # Uniform among the allowed columns: random keys, disallowed ones pushed below 0.
        keys = np.where(fresh, rng.random(fresh.shape), -1.0)
        return items[np.argmax(keys, axis=1)], 1.0 / fresh.sum(axis=1)

    def record(self, items: Sequence[int] | np.ndarray, rewards: Sequence[float] | np.ndarray
               ) -> None:
        """Count impressions and rewards of served ``items`` (non-pool items are ignored:
        they were not served by this pool)."""
        members = set(self.pool)
        for item, reward in zip(np.asarray(items).tolist(), np.asarray(rewards).tolist(),
                                strict=True):
            if self.done:
                self.impressions_after += 1
                continue
            if int(item) in members:
                self._impr[int(item)] = self._impr.get(int(item), 0) + 1
                self._sums[int(item)] = self._sums.get(int(item), 0.0) + float(reward)

    # -- one iteration -----------------------------------------------------------------
    def _use_exploit(self) -> bool:
        if not self.config.explore:
            return True
        # Deterministic credit rule: exploit while behind its share of the proposals.
        return self._exploits < self.config.exploit_share * (self._proposals + 1) - 1e-9

    def end_iteration(self) -> dict[str, Any]:
        """Measure this iteration's CTRs, log them and (but after the last iteration)
        drop the worst items and add proposals. Returns the log entry."""
        if self.done:
            raise RuntimeError("every iteration has been measured already")
        cfg = self.config
        pool = list(self.pool)
        ctr = [self._sums.get(i, 0.0) / self._impr[i] if self._impr.get(i) else math.nan
               for i in pool]
        impressions = sum(self._impr.get(i, 0) for i in pool)
        total = sum(self._sums.get(i, 0.0) for i in pool)
        # What drives dropping and the exploit prompt: the real CTRs, or random numbers.
        used = ([float(self._ctr_rng.random()) if not math.isnan(c) else math.nan for c in ctr]
                if cfg.random_ctr else list(ctr))
        entry: dict[str, Any] = {
            "iteration": self.iteration, "pool": pool,
            "ctr_items": {str(i): (None if math.isnan(c) else c) for i, c in zip(pool, ctr,
                                                                                 strict=True)},
            "impressions_items": {str(i): self._impr.get(i, 0) for i in pool},
            "impressions": impressions,
            "ctr": total / impressions if impressions else None,
            "dropped": [], "added": [], "how": [],
        }
        if cfg.random_ctr:
            entry["ctr_used"] = {str(i): (None if math.isnan(c) else c)
                                 for i, c in zip(pool, used, strict=True)}
        self.history_of_ctrs.extend((i, c) for i, c in zip(pool, used, strict=True)
                                    if not math.isnan(c))
        last = self.iteration == cfg.iterations
        if not last:
            self._update(pool, used, entry)
        self.log.append(entry)
        self.iteration += 1
        self._reset_counts()
        if last:
            self.proposer.close()  # the pool is final: no more proposals
        return entry

    def _update(self, pool: list[int], used: list[float], entry: dict[str, Any]) -> None:
        cfg = self.config
        dropped: list[int] = []
        if not cfg.no_drop:
            # Worst first; unshown items (NaN) are never dropped; ties: the lowest id.
            ranked = sorted((c, i) for i, c in zip(pool, used, strict=True) if not math.isnan(c))
            dropped = [i for _, i in ranked[: cfg.drop]]
            self.pool = [i for i in pool if i not in set(dropped)]
            entry["dropped"] = dropped
        kept = list(self.pool)
        kept_ctr = [used[pool.index(i)] for i in kept]
        for _ in range(cfg.drop):
            exclude = self._exclude(dropped)
            if len(exclude) >= self.num_items:
                entry.setdefault("note", "catalogue exhausted")
                break
            if self._use_exploit():
                item = self.proposer.propose_exploit(kept, kept_ctr, list(self.history_of_ctrs),
                                                     exclude)
                how = "exploit"
                self._exploits += 1
            else:
                item = self.proposer.propose_explore(list(self.pool), exclude)
                how = "explore"
            self._proposals += 1
            item = self._checked(item, exclude)
            self._extend([item])
            entry["added"].append(item)
            entry["how"].append(how)

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load_state_dict` needs to continue exactly where this pool
        is, as JSON-safe data (a deep copy: later calls do not change it). The config and
        the catalogue are the caller's; the proposer's state is included when the
        proposer has ``state_dict``."""
        state: dict[str, Any] = {
            "pool": list(self.pool), "ever": sorted(self.ever),
            "history_of_ctrs": [[i, c] for i, c in self.history_of_ctrs],
            "log": copy.deepcopy(self.log), "iteration": self.iteration,
            "invalid": self.invalid, "impressions_after": self.impressions_after,
            "exploits": self._exploits, "proposals": self._proposals,
            "impressions_items": {str(i): n for i, n in self._impr.items()},
            "reward_sums": {str(i): v for i, v in self._sums.items()},
            "initial_pool_from": self.initial_how,
            "ctr_rng": self._ctr_rng.bit_generator.state,
        }
        proposer_state = getattr(self.proposer, "state_dict", None)
        if callable(proposer_state):
            state["proposer"] = proposer_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`. Raises ValueError when the saved pool does
        not fit this catalogue (e.g. the items file changed)."""
        pool = [int(i) for i in state["pool"]]
        ever = {int(i) for i in state.get("ever", pool)}
        outside = sorted(i for i in ever | set(pool) if not 0 <= i < self.num_items)
        if not pool or outside:
            raise ValueError(f"saved GenEE pool {pool} does not fit a catalogue of "
                             f"{self.num_items} items (outside: {outside[:5]})")
        self.pool = pool
        self.ever = ever | set(pool)
        self.history_of_ctrs = [(int(i), float(c)) for i, c in state.get("history_of_ctrs", [])]
        self.log = copy.deepcopy(list(state.get("log", [])))
        self.iteration = int(state.get("iteration", 1))
        self.invalid = int(state.get("invalid", 0))
        self.impressions_after = int(state.get("impressions_after", 0))
        self._exploits = int(state.get("exploits", 0))
        self._proposals = int(state.get("proposals", 0))
        self._impr = {int(i): int(n) for i, n in state.get("impressions_items", {}).items()}
        self._sums = {int(i): float(v) for i, v in state.get("reward_sums", {}).items()}
        self.initial_how = str(state.get("initial_pool_from", self.initial_how))
        if "ctr_rng" in state:
            self._ctr_rng.bit_generator.state = state["ctr_rng"]
        load = getattr(self.proposer, "load_state_dict", None)
        if "proposer" in state and callable(load):
            load(state["proposer"])

    def report(self) -> dict[str, Any]:
        """The per-iteration log, the final pool and the proposer's report."""
        return {"iterations": self.log, "pool": list(self.pool),
                "initial_pool": self.log[0]["pool"] if self.log else list(self.pool),
                "initial_pool_from": self.initial_how, "invalid_proposals": self.invalid,
                "impressions_after": self.impressions_after,
                "proposer": self.proposer.report(), "config": asdict(self.config)}


def ctr_curve(report: dict[str, Any]) -> list[tuple[int, float]]:
    """(iteration, CTR) of every measured iteration of a GenEE report (the pool's
    :meth:`GenEEPool.report`, an agent's report, or a run's method result holding it
    under ``"report"``); iterations without impressions are left out."""
    if "iterations" not in report and isinstance(report.get("report"), dict):
        report = report["report"]
    return [(int(e["iteration"]), float(e["ctr"])) for e in report.get("iterations", [])
            if e.get("ctr") is not None]
