"""Web view test kit: a store with a few gateways in it, the real server in a thread, and a
small HTTP client that keeps cookies."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import threading
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import cbor2
from rxkit import Device, new_device

from cimedge.cloud_sync.cose import sign1
from cimedge.cloud_sync.receiver.fleetdb import FleetDB
from cimedge.cloud_sync.receiver.registry import Registry
from cimedge.cloud_sync.receiver.status import decode_status
from cimedge.cloud_sync.receiver.store import open_store
from cimedge.cloud_sync.senml import batch_payload, encode_pack, event_payload
from cimedge.cloud_sync.verify import verify_message
from cimedge.edge.model import Event, Reading


def fill(db: Path, registry_path: Path) -> dict[str, Device]:
    """Three pump stations: ps-0001 online with an hour of level readings and an open alarm,
    ps-0002 offline, ps-0003 enrolled and never seen."""
    devices = {d: new_device(d) for d in ("ps-0001", "ps-0002", "ps-0003")}
    registry = Registry(registry_path)
    registry.add_enrollments((d.enrollment(), d.dev) for d in devices.values())
    store = open_store(db)
    now = time.time()
    a, b = devices["ps-0001"], devices["ps-0002"]
    readings = [Reading("well.level", int((now - 3600 + i) * 1e9), 1 + (i % 600) / 200)
                for i in range(3600)]
    msgs = [(a, "batch", sign1(batch_payload(a.dev, 1, now, encode_pack(
        a.dev, readings, {"well.level": "m"})), a.key)),
        (a, "event", sign1(event_payload(a.dev, 2, now, [
            Event(int((now - 60) * 1e9), "well.level", "raise", "high_level", "level high",
                  3.6)]), a.key)),
        (b, "batch", b.batch(1))]
    store.commit([verify_message(d.dev, k, m, registry.lookup, now=now) for d, k, m in msgs])
    fleet = FleetDB(store)
    fleet.record_status(decode_status(a.dev, cbor2.dumps({"online": True, "sw": "1.2.0",
                                                          "backlog": 12})), time.time_ns(),
                        live=True)
    fleet.record_status(decode_status(b.dev, cbor2.dumps({"online": False})), time.time_ns(),
                        live=True)
    store.close()
    registry.close()
    return devices


class ServerThread:
    """The real uvicorn server (serve()) on its own event loop in a thread."""

    def __init__(self, app: Any, sock: Any) -> None:  # noqa: ANN401
        from cimedge.cloud_sync.receiver.web.serve import serve

        self.port = sock.getsockname()[1]
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None

        def main() -> None:
            asyncio.set_event_loop(self._loop)
            self._task = self._loop.create_task(serve(app, sock, on_ready=self._ready.set))
            try:
                self._loop.run_until_complete(self._task)
            except asyncio.CancelledError:
                pass
        self._thread = threading.Thread(target=main, name="web-test", daemon=True)
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("the web server did not start within 20 s")

    def stop(self) -> None:
        assert self._task is not None
        self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(20)


class Client:
    """HTTP/1.1 to the test server, keeping its cookies like a browser would."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port, self.host = port, host
        self.cookies: dict[str, str] = {}
        self.csrf = ""

    def request(self, method: str, path: str, body: object = None,
                headers: dict[str, str] | None = None,
                raw: bytes | None = None) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        h = dict(headers or {})
        if self.cookies:
            h.setdefault("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=h)
        res = conn.getresponse()
        payload = res.read()
        for value in res.headers.get_all("set-cookie") or []:
            c = SimpleCookie(value)
            for k, morsel in c.items():
                if morsel["max-age"] == "0" or morsel.value == "":
                    self.cookies.pop(k, None)
                else:
                    self.cookies[k] = morsel.value
        conn.close()
        ctype = res.headers.get("content-type", "")
        out: Any = json.loads(payload) if ctype.startswith("application/json") else \
            payload.decode(errors="replace")
        return res.status, {k.lower(): v for k, v in res.headers.items()}, out

    def login(self, user: str, password: str, new_password: str | None = None) -> tuple[int, Any]:
        """Open the login page (its CSRF token and cookie), then post the login."""
        _, _, page = self.request("GET", "/login")
        token = re.search(r'name="csrf-token" content="([^"]+)"', page)
        assert token is not None, page
        body: dict[str, str] = {"user": user, "password": password}
        if new_password:
            body["new_password"] = new_password
        status, _, out = self.request("POST", "/api/v1/login", body,
                                      {"X-CSRF-Token": token.group(1)})
        if status == 200:  # noqa: PLR2004
            self.csrf = out["csrf"]
        return status, out
