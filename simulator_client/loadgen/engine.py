"""One process's share of a load phase: keep-alive connections on raw asyncio protocols.

Each connection is an :class:`asyncio.Protocol` with one request in flight; the answer's
callback records it and starts whatever the connection sends next, so a request costs a
write, one ``data_received`` call and a few byte searches (uvloop's event loop when
installed). Closed loop: a connection sends its next request as soon as the previous
answer arrives. Open loop: arrivals follow a fixed schedule and go to an idle connection
(a new one is opened while fewer than ``max_connections`` exist, else the arrival is
dropped); their latency counts from the scheduled time, so waiting for a connection or
for the server's queue is never hidden (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast

from simulator_client.loadgen.config import LoadShape, Target, Workload
from simulator_client.loadgen.results import PhaseResult, Recorder
from simulator_client.loadgen.wire import (
    ProtocolError,
    Response,
    encode_post,
    json_body,
    parse_response,
)

_RECONNECT_DELAY_S = 0.05
"""Closed loop: pause before reconnecting after a failure, so a refusing server is not
hammered in a tight loop."""


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed (less CPU per callback), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


TICK_S = 0.001
"""Shortest sleep of the open-loop schedule (the event loop's timer resolution)."""


def run_share(target: Target, workload: Workload, shape: LoadShape, *, index: int = 0,
              on_ready: Callable[[], object] | None = None) -> PhaseResult:
    """Run process ``index``'s share of the phase on a fresh event loop in this thread.

    ``on_ready`` is called once the initial connections are open, just before the start
    (worker processes wait there for each other)."""
    loop = new_event_loop()
    try:
        return loop.run_until_complete(_Phase(target, workload, shape, index).run(on_ready))
    finally:
        loop.close()


class _Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    __slots__ = ("buf", "chained", "label", "phase", "start", "transport")

    def __init__(self, phase: _Phase) -> None:
        self.phase = phase
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.label: Recorder | None = None  # recorder of the request in flight
        self.start = 0.0  # when its latency starts (send or scheduled time)
        self.chained = False  # whether the request in flight is chained feedback

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but behave like one.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, request: bytes, rec: Recorder, start: float, chained: bool = False) -> None:
        self.label, self.start, self.chained = rec, start, chained
        self.transport.write(request)  # type: ignore[union-attr]  # open while sending

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        try:
            got = parse_response(buf)
        except (ProtocolError, ValueError) as exc:
            self.buf = b""
            self.phase.failed(self, type(exc).__name__)
            return
        if got is None:
            self.buf = buf
            return
        resp, used = got
        if used != len(buf):
            # One request in flight: bytes beyond its answer cannot belong to anything.
            self.buf = b""
            self.phase.failed(self, "UnexpectedBytes")
            return
        self.buf = b""
        self.phase.answered(self, resp)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.phase.lost(self, type(exc).__name__ if exc else "ConnectionClosed")


class _Phase:
    """State of one process's phase (see the module docstring)."""

    def __init__(self, target: Target, workload: Workload, shape: LoadShape, index: int
                 ) -> None:
        self.target, self.workload, self.shape, self.index = target, workload, shape, index
        self.recorders: dict[str, Recorder] = {workload.endpoint: Recorder()}
        self.main = self.recorders[workload.endpoint]
        self.requests = workload.requests
        # Processes start in different places of the request cycle.
        self.next_request = index * 7919
        self.feedback_credit = 0.0
        self.t0 = 0.0
        self.deadline = 0.0
        self.in_flight = 0
        self.idle: list[_Conn] = []
        self.conns: set[_Conn] = set()  # open or opening
        self.tasks: set[asyncio.Task[None]] = set()
        self.rate = 0.0  # open loop: this process's arrivals per second
        self.arrival = 0  # open loop: index of the next scheduled arrival
        self.open = 0  # connections open or opening
        self.opened = 0
        self.dropped = 0
        self.stopping = False
        self.done: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    # --- life cycle -------------------------------------------------------------------
    async def run(self, on_ready: Callable[[], object] | None) -> PhaseResult:
        self.loop = asyncio.get_running_loop()
        self.done = self.loop.create_future()
        conns = await asyncio.gather(*(self._connect() for _ in range(self.shape.connections)),
                                     return_exceptions=True)
        ready = [c for c in conns if isinstance(c, _Conn)]
        for c in conns:
            if not isinstance(c, _Conn):
                self.main.error(type(c).__name__)
        if on_ready is not None:
            on_ready()
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + self.shape.duration_s
        if self.shape.rate is None:
            for c in ready:
                self._send_next(c, self.t0)
            for _ in range(self.shape.connections - len(ready)):
                self._reconnect_later()
        else:
            self.idle.extend(ready)
            self.rate = self.shape.rate / self.shape.processes
            self._tick()
        self.loop.call_later(self.shape.duration_s, self._check_done)
        with contextlib.suppress(TimeoutError):  # the drain wait ran out
            await asyncio.wait_for(asyncio.shield(self.done),
                                   self.shape.duration_s + self.shape.drain_s)
        wall = time.perf_counter() - self.t0
        self.stopping = True
        in_flight = self.in_flight
        for c in list(self.conns):
            if c.transport is not None:
                c.transport.abort()
        for t in list(self.tasks):  # connections still being opened
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let connection_lost callbacks run
        result = PhaseResult(
            endpoints={k: r.result(self.shape.series_cap) for k, r in self.recorders.items()},
            wall_s=min(wall, self.shape.duration_s + self.shape.drain_s), dropped=self.dropped,
            in_flight_at_end=in_flight, connections_opened=self.opened, processes=1)
        return result

    async def _connect(self) -> _Conn:
        assert self.loop is not None
        self.open += 1
        self.opened += 1
        conn = _Conn(self)
        self.conns.add(conn)
        try:
            await self.loop.create_connection(lambda: conn, self.target.host, self.target.port)
        except OSError:
            self.open -= 1
            self.conns.discard(conn)
            raise
        return conn

    def _check_done(self) -> None:
        assert self.done is not None and self.loop is not None
        if self.done.done():
            return
        if self.shape.rate is not None and time.perf_counter() >= self.deadline:
            # Arrivals scheduled before the deadline whose tick has not fired yet (ticks
            # are at least TICK_S apart) are sent now, late and counted so, never lost.
            self._tick()
        if self.in_flight:
            return
        left = self.deadline - time.perf_counter()
        if left > 0:
            # The loop's timer clock may fire a little early against perf_counter.
            self.loop.call_later(left + 0.001, self._check_done)
        else:
            self.done.set_result(None)

    # --- sending ----------------------------------------------------------------------
    def _send_next(self, conn: _Conn, start: float) -> None:
        i = self.next_request
        self.next_request = i + 1
        self.in_flight += 1
        conn.send(self.requests[i % len(self.requests)], self.main, start)

    def _tick(self) -> None:
        """Open loop: dispatch every arrival that is due, then sleep until the next."""
        assert self.loop is not None
        now = time.perf_counter()
        step = 1.0 / self.rate
        # Processes interleave their schedules instead of arriving together.
        offset = self.index / self.shape.rate if self.shape.rate else 0.0
        while True:
            at = self.t0 + offset + self.arrival * step
            if at >= self.deadline:
                return
            if at > now:
                # Never sleep less than TICK_S: the loop's timers count whole milliseconds,
                # so a shorter sleep fires at once and the schedule spun a whole core
                # waiting for its next arrival (measured: 1.00 core at 2,000 arrivals/s).
                # Arrivals due within a tick are sent together; latency still counts from
                # each one's scheduled time, so the wait is measured, not hidden.
                self.loop.call_later(max(at - now, TICK_S), self._tick)
                return
            self.arrival += 1
            if self.idle:
                self._send_next(self.idle.pop(), at)
            elif self.open < self.shape.max_connections:
                self.in_flight += 1  # counted from now: its latency runs from `at`
                self._start_task(self._open_and_send(at))
            else:
                self.dropped += 1

    async def _open_and_send(self, at: float) -> None:
        try:
            conn = await self._connect()
        except OSError as exc:
            self.in_flight -= 1
            self.main.error(type(exc).__name__)
            self._check_done()
            return
        self.in_flight -= 1
        self._send_next(conn, at)

    def _start_task(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self.loop is not None
        task = self.loop.create_task(coro)
        self.tasks.add(task)  # the loop keeps only weak references
        task.add_done_callback(self.tasks.discard)

    def _reconnect_later(self) -> None:
        assert self.loop is not None
        self.loop.call_later(_RECONNECT_DELAY_S, self._begin_reconnect)

    def _begin_reconnect(self) -> None:
        if not self.stopping:
            self._start_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Closed loop: replace a failed connection while the phase runs."""
        if self.stopping or time.perf_counter() >= self.deadline:
            self._check_done()
            return
        try:
            conn = await self._connect()
        except OSError as exc:
            self.main.error(type(exc).__name__)
            self._reconnect_later()
            return
        self._send_next(conn, time.perf_counter())

    # --- answers ----------------------------------------------------------------------
    def answered(self, conn: _Conn, resp: Response) -> None:
        now = time.perf_counter()
        rec = conn.label
        assert rec is not None
        conn.label = None
        self.in_flight -= 1
        rec.latencies.append(now - conn.start)
        rec.starts.append(conn.start - self.t0)
        st = resp.status
        rec.ok.append(200 <= st < 300)
        rec.statuses[st] = rec.statuses.get(st, 0) + 1
        if resp.retry_after:
            rec.retry_after[st] = rec.retry_after.get(st, 0) + 1
        if resp.close:
            assert conn.transport is not None
            conn.transport.close()  # connection_lost replaces it (closed loop)
            return
        if not conn.chained and st == 200 and self.workload.feedback_ratio > 0:
            request = self._feedback_for(resp.body)
            # Also past the deadline: the feedback share stays exact (it is part of the drain).
            if request is not None:
                self.in_flight += 1
                conn.send(request, self._recorder("feedback"), now, chained=True)
                return
        self._after_answer(conn, now)

    def _after_answer(self, conn: _Conn, now: float) -> None:
        if now >= self.deadline:
            self._check_done()
        elif self.shape.rate is None:
            self._send_next(conn, now)
        else:
            self.idle.append(conn)

    def _feedback_for(self, body: bytes) -> bytes | None:
        """The chained feedback for this answer, for ``feedback_ratio`` of them."""
        self.feedback_credit += self.workload.feedback_ratio
        if self.feedback_credit < 1.0:
            return None
        try:
            answer: Any = json.loads(body)
            event_id, item = answer["event_id"], answer["items"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            return None
        if not event_id:
            return None
        self.feedback_credit -= 1.0
        w = self.workload
        return encode_post(w.host, w.feedback_path, json_body(
            {"event_id": event_id, "item_id": item, "reward": w.reward, "done": False}),
            w.api_key)

    def _recorder(self, name: str) -> Recorder:
        rec = self.recorders.get(name)
        if rec is None:
            rec = self.recorders[name] = Recorder()
        return rec

    # --- failures ---------------------------------------------------------------------
    def failed(self, conn: _Conn, cause: str) -> None:
        """Unreadable answer: count it and drop the connection."""
        rec = conn.label
        if rec is not None:
            conn.label = None
            self.in_flight -= 1
            rec.error(cause)
        if conn.transport is not None:
            conn.transport.abort()

    def lost(self, conn: _Conn, cause: str) -> None:
        if conn in self.conns:
            self.conns.discard(conn)
            self.open -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        if self.stopping:
            return
        rec = conn.label
        if rec is not None:
            conn.label = None
            self.in_flight -= 1
            rec.error(cause)
        if self.shape.rate is None:
            self._reconnect_later()
        self._check_done()
