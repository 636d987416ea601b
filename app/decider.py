"""The k = 1 forward pass in a child process: the decider.

Why a process and not the forward-pass thread: the frozen graph itself runs without the
interpreter lock, but every hand-over between the event loop and a worker thread needs
the lock back, and a busy event loop yields it only every switch interval (5 ms). With
one batch in flight the event loop then idles while the batch is decided (nothing else
to parse: every closed-loop client waits for its answer); with two in flight the worker
waits for the lock instead (measured: a 1.3 ms decision took 36.6 ms beside a busy loop).
A child process has its own interpreter: the event loop hands it a batch through a pipe,
keeps parsing the next batch's requests, and reads the answer when the pipe is readable,
so two batches overlap without either side waiting for a lock.

The child does the whole k = 1 decision of a batch: the plan, the draws (its own
seeded generator), the frozen sampler and the decisions' Lua write to Redis (a blocking
client of its own); the event loop sends the calls' inputs and builds the answers from
the items and propensities that come back. Protocol (``multiprocessing`` connection,
pickled tuples):

- ``("setup", seq, settings, url, seed)``: the decision store of ``settings`` on
  ``url`` and the draws' seed; answers ``("ok", seq, None)``.
- ``("load", seq, key, path)``: load the policy serialised at ``path``
  (:func:`policy.checkpoint.policy_to_bytes`) under ``key`` and freeze it; answers
  ``("ok", seq, None)``. The two newest keys are kept.
- ``("decide", seq, key, calls, record)``: ``calls`` are (event id, user id, history,
  k, exclude, explore) tuples; answers ``("ok", seq, None)`` when the call needs the
  general path, else ``("ok", seq, (items, propensities, write))`` where ``write`` is
  ``("saved", evicted)``, ``("failed", message)`` or ``("skipped", 0)`` (``record``
  false).
- any failure answers ``("error", seq, message)``; ``None`` stops the child.

The child exits when the parent's end of the pipe closes (EOF), so a killed service
leaves no orphan behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import subprocess
import sys
import tempfile
from collections import OrderedDict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from policy.mixed import MixedPolicy

logger = logging.getLogger(__name__)

_ROOT = str(Path(__file__).resolve().parents[1])
"""The project root (the child imports ``app.decider`` from it)."""

PYTHON = sys.executable
"""The interpreter that runs the child."""

_KEEP = 2
"""Policies the child keeps loaded (the served version and the one before it, whose
batches may still be in flight during a swap)."""


class DeciderError(RuntimeError):
    """The decider process failed a request or is gone (the caller then decides on its
    own forward-pass thread)."""


class DeciderTimeoutError(DeciderError):
    """The child did not answer in time; it has been killed. The batch's decisions may
    still reach Redis from it, so the caller refuses the batch (503) instead of deciding
    it again under the same event ids."""


def _child_main(conn: Connection, threads: int, nice: int) -> None:  # pragma: no cover
    """The decider process: answer requests until EOF or ``None``."""
    import torch

    if nice:
        os.nice(nice)

    torch.set_num_threads(max(1, threads))
    state = _ChildState()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        try:
            conn.send(("ok", msg[1], state.handle(msg)))
        except Exception as exc:  # answer, never die on one bad request
            conn.send(("error", msg[1], f"{type(exc).__name__}: {exc}"))


class _ChildState:  # pragma: no cover (runs in the child; tests drive it through a Decider)
    """What the child holds: policies by key, the decision store, the generator."""

    def __init__(self) -> None:
        self.policies: OrderedDict[int, MixedPolicy] = OrderedDict()
        self.store: Any = None
        self.precision = "float32"
        self.rng = np.random.default_rng(0)

    def handle(self, msg: tuple[Any, ...]) -> Any:
        kind = msg[0]
        if kind == "setup":
            from app.decision_shards import build_decision_store

            _, _, settings, url, seed = msg
            self.store = build_decision_store(settings, url, None)
            self.precision = settings.score_precision
            self.rng = np.random.default_rng(seed)
            return None
        if kind == "load":
            from policy.checkpoint import policy_from_bytes

            policy = policy_from_bytes(Path(msg[3]).read_bytes())
            policy.freeze_for_serving(self.precision)  # the parent's graphs' precision
            if not policy.has_sampler:
                raise ValueError("the policy has no frozen sampler (β is set)")
            self.policies[msg[2]] = policy
            while len(self.policies) > _KEEP:
                self.policies.popitem(last=False)
            return None
        if kind == "decide":
            return self.decide(self.policies[msg[2]], msg[3], bool(msg[4]))
        raise ValueError(f"unknown request {kind!r}")

    def decide(self, policy: MixedPolicy, calls: list[tuple[Any, ...]], record: bool,
               ) -> tuple[np.ndarray, np.ndarray, tuple[str, Any]] | None:
        import time

        from app.decisions import Decision

        plan = policy.plan([c[2] for c in calls], k=[c[3] for c in calls],
                           explore=[c[5] for c in calls], exclude=[c[4] for c in calls],
                           user_ids=[c[1] for c in calls])
        fast = policy.fast_inputs(plan, self.rng)
        if fast is None:
            return None
        items, props, ok = policy.sample_frozen(plan, fast)
        if not ok:
            return None
        if not record or self.store is None:
            return items, props, ("skipped", 0)
        now = time.time()
        version = int(policy.version)
        decisions = [Decision(c[0], c[1], tuple(c[2]), tuple(sl.items), tuple(sl.propensities),
                              tuple(sl.sources), version, now)
                     for c, sl in zip(calls, policy.fast_slates(items, props), strict=True)]
        try:
            return items, props, ("saved", self.store.save_many_blocking(decisions))
        except Exception as exc:  # Redis down: the parent still serves, and says so
            return items, props, ("failed", f"{type(exc).__name__}: {exc}")


class Decider:
    """Parent side of the decider process; use from the event loop only.

    A policy is registered once (:meth:`register`: its sampler saved to a temporary file
    and loaded by the child); :meth:`decide` then costs the event loop two small pickles
    and one pipe read per batch."""

    def __init__(self, *, threads: int = 1, timeout_s: float = 5.0,
                 load_timeout_s: float = 300.0, nice: int = 0) -> None:
        """``threads``: torch threads of the child; ``timeout_s``: longest wait for a
        batch's answer (then the child is killed and the thread takes over);
        ``load_timeout_s``: the same for loading a version; ``nice``: the child's
        scheduling niceness, added to the parent's (with the cores contended, the event
        loop, which every request needs, runs first)."""
        self.threads = threads
        self.nice = nice
        self.timeout_s = timeout_s
        self.load_timeout_s = load_timeout_s
        self.seed: int | None = None
        """The seed of the child's draws (set by :meth:`setup`)."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._seq = itertools.count()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._keys: OrderedDict[int, int] = OrderedDict()  # id(policy) → key, when loaded
        self._loading: dict[int, asyncio.Task[None]] = {}
        self._policies: dict[int, MixedPolicy] = {}  # keep ids valid while registered
        self._dir = tempfile.TemporaryDirectory(prefix="ialp-decider-")
        self._broken: str | None = None

    @property
    def alive(self) -> bool:
        """Whether the child runs and has not failed."""
        # No system call here (this runs once per batch): a child that exits closes its
        # end of the pipe, which the reader sees as EOF and records in _broken.
        return self._broken is None and self._conn is not None

    async def setup(self, settings: Any, url: str, seed: int) -> None:
        """Give the child the decision store (``settings``' layout on ``url``) and the
        draws' seed; waits for it."""
        await self._call(("setup", None, settings, url, seed), self.load_timeout_s)
        self.seed = seed

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` before :meth:`start`)."""
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the child: ``python -m app.decider`` with its end of a socket pair (a
        fresh interpreter that imports only torch, whatever the parent's main module)."""
        parent, child = multiprocessing.Pipe(duplex=True)
        # Idle OpenMP threads sleep at once instead of spinning: between two batches the
        # child's cores belong to the event loop.
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        self._proc = subprocess.Popen(
            [PYTHON, "-m", "app.decider", str(child.fileno()), str(self.threads),
             str(self.nice)],
            pass_fds=(child.fileno(),), cwd=_ROOT, env=env)
        child.close()
        self._conn = parent
        asyncio.get_running_loop().add_reader(parent.fileno(), self._on_readable)

    async def stop(self) -> None:
        """Stop the child and fail what waits for it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(conn.fileno())
            with contextlib.suppress(Exception):
                conn.send(None)
            conn.close()
        for task in self._loading.values():
            task.cancel()
        self._fail_all("decider stopped")
        if self._proc is not None:
            try:
                await asyncio.to_thread(self._proc.wait, 5.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                await asyncio.to_thread(self._proc.wait)
            self._proc = None
        self._dir.cleanup()

    def key_of(self, policy: MixedPolicy) -> int | None:
        """The child's key for ``policy`` once loaded; otherwise starts loading it (in
        the background) and returns ``None``: the caller decides this batch itself."""
        key = self._keys.get(id(policy))
        if key is not None or not self.alive or not policy.has_sampler:
            return key
        if id(policy) not in self._loading:
            self._loading[id(policy)] = asyncio.create_task(self._register(policy))
        return None

    async def register(self, policy: MixedPolicy) -> None:
        """Load ``policy``'s sampler into the child (waits until it is loaded)."""
        if id(policy) in self._keys:
            return
        task = self._loading.get(id(policy))
        if task is None:
            task = self._loading[id(policy)] = asyncio.create_task(self._register(policy))
        await asyncio.shield(task)

    async def _register(self, policy: MixedPolicy) -> None:
        try:
            key = next(self._seq)
            path = Path(self._dir.name) / f"policy-{key}.bin"
            await asyncio.to_thread(_write_policy, policy, path)
            await self._call(("load", None, key, str(path)), self.load_timeout_s)
            with contextlib.suppress(OSError):
                path.unlink()  # the child holds it in memory now
            self._keys[id(policy)] = key
            self._policies[id(policy)] = policy
            while len(self._keys) > _KEEP:
                old, _ = self._keys.popitem(last=False)
                self._policies.pop(old, None)
        except Exception as exc:  # unexpected: stop using the child rather than retry
            self._broke(f"loading policy version {policy.version} failed: {exc}")
        finally:
            self._loading.pop(id(policy), None)

    async def decide(self, key: int, calls: list[tuple[Any, ...]], record: bool,
                     ) -> tuple[np.ndarray, np.ndarray, tuple[str, Any]] | None:
        """The k = 1 decisions of ``calls`` ((event id, user id, history, k, exclude,
        explore) each) by policy ``key``, and their Redis write when ``record``:
        (items, propensities, write status), or ``None`` when the batch needs the
        general path."""
        out: tuple[np.ndarray, np.ndarray, tuple[str, Any]] | None = await self._call(
            ("decide", None, key, calls, record), self.timeout_s)
        return out

    async def _call(self, msg: tuple[Any, ...], timeout_s: float) -> Any:
        if not self.alive or self._conn is None:
            raise DeciderError(self._broken or "decider not running")
        seq = next(self._seq)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[seq] = future
        try:
            self._conn.send((msg[0], seq, *msg[2:]))
        except OSError as exc:
            self._waiting.pop(seq, None)
            self._broke(f"decider pipe: {exc}")
            raise DeciderError(str(exc)) from exc
        # A timer per call (cheaper than wait_for on the hot path), cancelled on answer.
        timer = asyncio.get_running_loop().call_later(timeout_s, self._expire, timeout_s)
        try:
            return await future
        finally:
            timer.cancel()

    def _expire(self, timeout_s: float) -> None:
        """A call went unanswered: kill the child (a stuck child must not write decisions
        later) and fail every waiting call with :class:`DeciderTimeoutError`."""
        if self._proc is not None:
            self._proc.kill()
        self._broke(f"no answer within {timeout_s:g} s", DeciderTimeoutError)

    def _on_readable(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            while conn.poll():
                status, seq, value = conn.recv()
                future = self._waiting.pop(seq, None)
                if future is None or future.done():
                    continue
                if status == "ok":
                    future.set_result(value)
                else:
                    future.set_exception(DeciderError(str(value)))
        except (EOFError, OSError) as exc:
            self._broke(f"decider process exited ({exc or 'EOF'})")

    def _broke(self, why: str, error: type[DeciderError] = DeciderError) -> None:
        if self._broken is None:
            logger.error("%s: deciding on the forward-pass thread from now on", why)
        self._broken = why
        if self._conn is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._conn.fileno())
        self._fail_all(why, error)

    def _fail_all(self, why: str, error: type[DeciderError] = DeciderError) -> None:
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(error(why))


def _write_policy(policy: MixedPolicy, path: Path) -> None:
    from policy.checkpoint import policy_to_bytes

    path.write_bytes(policy_to_bytes(policy))


if __name__ == "__main__":  # pragma: no cover (python -m app.decider FD THREADS NICE)
    _child_main(Connection(int(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3]))
