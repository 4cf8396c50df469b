"""A counting TCP relay between a gateway and the broker: the gateway's uplink bytes, both ways.

    python -m bench.compare.relay --upstream 127.0.0.1:1883

prints ``listening 127.0.0.1:PORT``; then each line ``snap`` on stdin is answered with one JSON
line ``{"up": bytes gateway->broker, "down": bytes broker->gateway, "conns": n}``. Bytes are
TCP payload bytes (whole MQTT packets: headers, topics, packet ids, properties, payloads,
PUBACKs, PINGs), not counting TCP/IP headers. When the broker is down a connection is
accepted and closed at once, as a dead upstream looks to the gateway behind a NAT or proxy.

It runs as a process of its own so that the harness's decoding never delays the gateway's
traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

_CHUNK = 65536


class Counts:
    """Bytes relayed in each direction and connections accepted."""

    def __init__(self) -> None:
        self.up = self.down = self.conns = 0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: Counts,
                direction: str) -> None:
    try:
        while data := await reader.read(_CHUNK):
            setattr(counts, direction, getattr(counts, direction) + len(data))
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _serve(host: str, port: int, counts: Counts, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    counts.conns += 1
    try:
        up_reader, up_writer = await asyncio.open_connection(host, port)
    except OSError:
        writer.close()
        return
    await asyncio.gather(_pipe(reader, up_writer, counts, "up"),
                         _pipe(up_reader, writer, counts, "down"))


async def _commands(counts: Counts) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while (await reader.readline()).strip():
        sys.stdout.write(json.dumps(vars(counts)) + "\n")
        sys.stdout.flush()


async def _main(upstream: str) -> None:
    host, port = upstream.rsplit(":", 1)
    counts = Counts()
    server = await asyncio.start_server(
        lambda r, w: _serve(host, int(port), counts, r, w), "127.0.0.1", 0)
    sys.stdout.write(f"listening 127.0.0.1:{server.sockets[0].getsockname()[1]}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    commands = asyncio.create_task(_commands(counts))
    commands.add_done_callback(lambda _: stop.set())
    await stop.wait()
    commands.cancel()
    server.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), 1)


def main(argv: list[str] | None = None) -> None:
    """Relay until stdin closes or a signal."""
    p = argparse.ArgumentParser(prog="python -m bench.compare.relay",
                                description=__doc__.split("\n")[0])
    p.add_argument("--upstream", required=True, metavar="HOST:PORT")
    asyncio.run(_main(p.parse_args(argv).upstream))


if __name__ == "__main__":
    main()
