"""Serve the web view with uvicorn on a socket we bind (loopback unless told otherwise),
alone or beside a receiver in the same event loop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse

from cimedge.cloud_sync.receiver.web.app import Web, build_app, with_hosts
from cimedge.edge.errors import CimEdgeError


class WebError(CimEdgeError):
    """The web view cannot start as asked: one sentence."""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: run_until_signalled owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def parse_addr(text: str) -> tuple[str, int]:
    """HOST:PORT or [V6]:PORT; port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:  # noqa: PLR2004
        raise WebError(f"--http {text!r} is not HOST:PORT (127.0.0.1:8080)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(addr: str, *, tls: bool, plaintext: bool) -> socket.socket:
    """A listening socket; anything but loopback needs TLS or --plaintext-http in so many words."""
    host, port = parse_addr(addr)
    if not is_loopback(host) and not tls and not plaintext:
        raise WebError(f"--http {addr} is not a loopback address: give --tls-cert and "
                       "--tls-key, or --plaintext-http to serve it unencrypted on purpose")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise WebError(f"cannot listen on {addr}: {e.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket, tls: bool) -> str:  # noqa: FBT001
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{host}:{port}/"


async def _one_line(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": "unavailable", "detail": str(exc)}, status_code=503)


def make_app(web: Web, sock: socket.socket,
             extra_hosts: list[str] | None = None) -> Any:  # noqa: ANN401 - an ASGI app
    """The app behind a Host check: loopback names, the bound address, and --allowed-host."""
    app = build_app(web)
    app.add_exception_handler(CimEdgeError, _one_line)  # a store outage: one sentence, 503
    host = sock.getsockname()[0]
    return with_hosts(app, ["127.0.0.1", "localhost", "::1", host, *(extra_hosts or [])])


async def serve(app: Any, sock: socket.socket, *, certfile: Path | None = None,  # noqa: ANN401
                keyfile: Path | None = None, on_ready: Any = None) -> None:  # noqa: ANN401
    """Serve until cancelled; then stop accepting, finish open requests, return."""
    config = uvicorn.Config(app, http="h11", ws="none", lifespan="off", log_level="warning",
                            access_log=False, server_header=False, proxy_headers=False,
                            ssl_certfile=str(certfile) if certfile else None,
                            ssl_keyfile=str(keyfile) if keyfile else None,
                            ssl_version=ssl.PROTOCOL_TLS_SERVER,
                            timeout_graceful_shutdown=2)  # within the 5 s stop deadline
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="web")
    try:
        while not server.started:
            if task.done():
                task.result()  # it failed to start: show why
            await asyncio.sleep(0.01)
        if on_ready is not None:
            on_ready()
        await asyncio.shield(task)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def together(*coros: Awaitable[None]) -> None:
    """Run the receiver and the web view; when one ends (or fails), stop the other."""
    async with asyncio.TaskGroup() as tg:
        for c in coros:
            tg.create_task(c)  # type: ignore[arg-type]
