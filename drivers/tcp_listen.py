"""A TCP port the gateway listens on for stations that connect to it (HJ 212, SL 651 centre end).

Several devices may name the same host and port: they share one ``Listener``, and each
frame goes to the device it names (HJ 212: the MN; SL 651: the station address). The
protocol supplies a ``Framing``: ``split()`` cuts checked frames out of the received bytes
(and counts what it had to throw away), ``key()`` says which station a frame is from.

Untrusted bytes are handled with limits: at most ``max_connections`` at once (more are
closed at accept), a connection silent for ``idle_s`` is closed, a connection whose
unframed bytes pass ``max_buffer`` loses them (counted as one bad frame), and a peer
that does not read its replies (write buffer past ``max_buffer``) is dropped. A bad frame
is counted against the station last heard on that connection (or the listener when none
was), and the connection goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

import msgspec

log = logging.getLogger(__name__)


class Framing(Protocol):
    """How one protocol cuts frames out of a TCP byte stream."""

    def split(self, buf: bytearray) -> tuple[list[bytes], int]:
        """Remove every complete frame from ``buf``: (checked frames, bad frames dropped)."""

    def key(self, frame: bytes) -> str | None:
        """The station a checked frame is from, or None."""


class Station(Protocol):
    """A device that takes frames from a listener."""

    def on_frame(self, frame: bytes, conn: Conn) -> None: ...

    def on_bad(self, count: int) -> None: ...

    def on_close(self, conn: Conn) -> None: ...


class ListenStats(msgspec.Struct):
    """What the listener has seen, beyond what its stations count."""

    connections: int = 0
    refused: int = 0  # over max_connections
    unrouted: int = 0  # checked frames naming no configured station
    bad_frames: int = 0  # on connections that named no station yet
    idle_closed: int = 0


class Conn:
    """One accepted connection: what it is, and a way to answer on it."""

    def __init__(self, writer: asyncio.StreamWriter, max_buffer: int) -> None:
        self.writer, self.max_buffer = writer, max_buffer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.station: Station | None = None
        self.closed = False

    def send(self, data: bytes) -> bool:
        """Queue ``data``; False (and the connection closed) when the peer does not read."""
        if self.closed or self.writer.is_closing():
            return False
        if self.writer.transport.get_write_buffer_size() > self.max_buffer:
            self.close()
            return False
        self.writer.write(data)
        return True

    def close(self) -> None:
        """Close the connection (the reader loop then ends)."""
        if not self.closed:
            self.closed = True
            self.writer.close()


class Listener:
    """One listening socket and the stations routed through it."""

    def __init__(self, host: str, port: int, framing: Framing, *, max_connections: int = 16,
                 idle_s: float = 600.0, max_buffer: int = 16384) -> None:
        self.host, self.port, self.framing = host, port, framing
        self.max_connections, self.idle_s, self.max_buffer = max_connections, idle_s, max_buffer
        self.routes: dict[str, Station] = {}
        self.stats = ListenStats()
        self.conns: set[Conn] = set()
        self.error = ""
        self.users = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def bound_port(self) -> int:
        """The port actually bound (``port = 0`` picks a free one)."""
        if self._server is None or not self._server.sockets:
            return self.port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> bool:
        """Bind and listen; False (with ``error``) when the address cannot be bound."""
        if self._server is not None:
            return True
        try:
            self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                      reuse_address=True)
        except OSError as exc:
            self.error = f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            return False
        self.error = ""
        return True

    async def close(self) -> None:
        """Stop listening and close every connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self.conns):
            conn.close()
        tasks = list(self._tasks)
        if tasks:  # closed connections end their tasks; a stuck one is cancelled
            _, stuck = await asyncio.wait(tasks, timeout=1.0)
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.wait(stuck)
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = Conn(writer, self.max_buffer)
        try:
            if len(self.conns) >= self.max_connections:
                self.stats.refused += 1
                log.warning("%s:%s: refused %s (max_connections %d)", self.host, self.port,
                            conn.peer, self.max_connections)
                conn.close()
                return
            self.stats.connections += 1
            self.conns.add(conn)
            await self._serve(reader, conn)
        except asyncio.CancelledError:
            return  # close() ends a connection's task; asyncio's callback must not see it raise
        finally:
            self.conns.discard(conn)
            conn.close()
            if conn.station is not None:
                conn.station.on_close(conn)
            if task is not None:
                self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, conn: Conn) -> None:
        buf = bytearray()
        while not conn.closed:
            try:
                async with asyncio.timeout(self.idle_s):
                    data = await reader.read(4096)
            except TimeoutError:
                self.stats.idle_closed += 1
                return
            except OSError:
                return
            if not data:
                return
            buf += data
            frames, bad = self.framing.split(buf)
            if len(buf) > self.max_buffer:  # a frame that never ends, or a babbling peer
                buf.clear()
                bad += 1
            if bad:
                self._bad(conn, bad)
            for frame in frames:
                station = self.routes.get(self.framing.key(frame) or "")
                if station is None:
                    self.stats.unrouted += 1
                    continue
                conn.station = station
                station.on_frame(frame, conn)

    def _bad(self, conn: Conn, count: int) -> None:
        if conn.station is not None:
            conn.station.on_bad(count)
        else:
            self.stats.bad_frames += count


# One listener per (event loop, host, port): devices naming the same address share it.
_LISTENERS: dict[tuple[int, str, int], Listener] = {}


async def acquire(host: str, port: int, key: str, station: Station,
                  make: Callable[[], Listener]) -> Listener:
    """The listener on host:port (made and started by ``make`` for the first user)."""
    loop_key = (id(asyncio.get_running_loop()), host, port)
    listener = _LISTENERS.get(loop_key)
    if listener is None:
        listener = _LISTENERS[loop_key] = make()
    if key in listener.routes:
        msg = f"{host}:{port}: two devices are configured for station {key}"
        raise ValueError(msg)
    listener.routes[key] = station
    listener.users += 1
    await listener.start()
    return listener


async def release(listener: Listener, key: str) -> None:
    """Drop one station; the last one closes the listener."""
    listener.routes.pop(key, None)
    listener.users -= 1
    if listener.users > 0:
        return
    for k, known in list(_LISTENERS.items()):
        if known is listener:
            del _LISTENERS[k]
    await listener.close()
