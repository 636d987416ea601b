"""A TCP proxy between a Redis client and a real redis-server that injects network faults.

It parses the client's RESP requests (arrays of bulk strings), counts commands by name
and, when an armed fault matches the n-th occurrence of a command, acts on that exact
command:

* ``drop_reply``: the command is forwarded and executed by Redis, then the connection is
  cut before any further reply reaches the client (a reply lost on the wire);
* ``kill``: the connection is cut before the command is forwarded (it never executes);
* ``delay_reply``: replies on that connection are held back ``delay_s`` seconds (longer
  than the client's socket timeout: the client gives up while Redis has executed).

The proxy runs its own event loop in a daemon thread, so it can sit between a child
process (the real trainer) and Redis while the test drives traffic.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

ACTIONS = ("drop_reply", "kill", "delay_reply")


@dataclass
class Fault:
    """One armed fault."""

    command: str
    """Command name, upper case (``EVALSHA``, ``XREADGROUP``, ``EXEC`` ...)."""
    nth: int
    """Fire on this occurrence of the command (counted from when it was armed, from 1)."""
    action: str
    """One of :data:`ACTIONS`."""
    match: Callable[[list[bytes]], bool] | None = None
    """Extra condition on the command's arguments (e.g. which script an EVALSHA runs)."""
    delay_s: float = 3.0
    """Hold-back time of ``delay_reply``."""
    label: str = ""
    """Name used in reports."""
    seen: int = 0
    fired: bool = False


def parse_command(buf: bytes | bytearray, start: int = 0) -> tuple[list[bytes], int] | None:
    """One RESP array of bulk strings from ``buf[start:]``: ``(args, end)`` or ``None``
    when incomplete. Inline commands (a plain line) are parsed by whitespace."""
    if start >= len(buf):
        return None
    if buf[start:start + 1] != b"*":
        end = buf.find(b"\r\n", start)
        return None if end < 0 else (bytes(buf[start:end]).split(), end + 2)
    end = buf.find(b"\r\n", start)
    if end < 0:
        return None
    n = int(buf[start + 1:end])
    pos = end + 2
    args: list[bytes] = []
    for _ in range(n):
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None
        if buf[pos:pos + 1] != b"$":
            raise ValueError(f"unexpected RESP request byte {buf[pos:pos + 1]!r}")
        size = int(buf[pos + 1:end])
        pos = end + 2
        if len(buf) < pos + size + 2:
            return None
        args.append(bytes(buf[pos:pos + size]))
        pos += size + 2
    return args, pos


@dataclass
class RedisFaultProxy:
    """Forward 127.0.0.1:<port> to a Redis server, with armed faults."""

    upstream_port: int
    port: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    fired: list[str] = field(default_factory=list)
    _faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.base_events.Server | None = None

    # -- control (any thread) ----------------------------------------------------------
    def start(self) -> RedisFaultProxy:
        """Listen on a free port (``self.port``) in a background thread."""
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def main() -> None:
                self._server = await asyncio.start_server(self._handle, "127.0.0.1",
                                                          self.port)
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()
                async with self._server:
                    await self._server.serve_forever()

            try:
                loop.run_until_complete(main())
            except asyncio.CancelledError:
                pass
            finally:
                loop.close()

        threading.Thread(target=run, daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def stop(self) -> None:
        """Stop listening (open connections are dropped)."""
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)

    @property
    def url(self) -> str:
        """``redis://`` URL of the proxy."""
        return f"redis://127.0.0.1:{self.port}/0"

    def arm(self, fault: Fault) -> None:
        """Fire ``fault`` on the ``nth`` matching command from now on."""
        with self._lock:
            self._faults.append(fault)

    def pending_faults(self) -> list[Fault]:
        """Armed faults that have not fired yet."""
        with self._lock:
            return [f for f in self._faults if not f.fired]

    def _check(self, args: list[bytes]) -> Fault | None:
        name = args[0].decode(errors="replace").upper() if args else ""
        with self._lock:
            self.counts[name] += 1
            for f in self._faults:
                if f.fired or f.command != name or (f.match and not f.match(args)):
                    continue
                f.seen += 1
                if f.seen == f.nth:
                    f.fired = True
                    self.fired.append(f.label or f"{f.action} {name}")
                    return f
        return None

    # -- data path ---------------------------------------------------------------------
    async def _handle(self, c_reader: asyncio.StreamReader,
                      c_writer: asyncio.StreamWriter) -> None:
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1",
                                                               self.upstream_port)
        except OSError:
            c_writer.close()
            return
        state = {"drop": False, "delay": 0.0}
        closed = asyncio.Event()

        def close_all() -> None:
            closed.set()
            for w in (c_writer, s_writer):
                w.close()

        async def upstream() -> None:
            buf = bytearray()
            while not closed.is_set():
                data = await c_reader.read(65536)
                if not data:
                    break
                buf += data
                pos = 0
                while True:
                    parsed = parse_command(buf, pos)
                    if parsed is None:
                        break
                    args, end = parsed
                    fault = self._check(args)
                    if fault is not None and fault.action == "kill":
                        s_writer.write(bytes(buf[:pos]))
                        await s_writer.drain()
                        close_all()
                        return
                    if fault is not None and fault.action == "drop_reply":
                        s_writer.write(bytes(buf[:end]))
                        await s_writer.drain()
                        state["drop"] = True
                        await asyncio.sleep(0.3)  # let Redis execute it
                        close_all()
                        return
                    if fault is not None and fault.action == "delay_reply":
                        state["delay"] = fault.delay_s
                    pos = end
                if pos:
                    s_writer.write(bytes(buf[:pos]))
                    await s_writer.drain()
                    del buf[:pos]
            close_all()

        async def downstream() -> None:
            while not closed.is_set():
                data = await s_reader.read(65536)
                if not data:
                    break
                if state["drop"]:
                    continue
                if state["delay"]:
                    await asyncio.sleep(state["delay"])
                if closed.is_set():
                    break
                c_writer.write(data)
                await c_writer.drain()
            close_all()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            close_all()
