"""The operator's web view: pages and the JSON API (/api/v1/) over the receiver's store.

Reads go through read-only connections (a small pool, each on its own thread), so the web
never writes the receiver's database; its own state (accounts, sessions, alarm
acknowledgements) is in WebState. Nothing here can sign anything: the web holds no key.
"""

from __future__ import annotations

import asyncio
import html
import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cimedge.cloud_sync.receiver.fleet import fleet_rows
from cimedge.cloud_sync.receiver.fleetdb import FleetDB
from cimedge.cloud_sync.receiver.registry import DEVICE_ID, open_registry
from cimedge.cloud_sync.receiver.store import Store, open_store
from cimedge.cloud_sync.receiver.web import access
from cimedge.cloud_sync.receiver.web.metrics import CONTENT_TYPE, ReceiverMetrics
from cimedge.cloud_sync.receiver.web.webstate import Principal, WebState, WebStateError

T = TypeVar("T")
_HERE = Path(str(resources.files("cimedge.cloud_sync.receiver.web")))
STATIC, TEMPLATES = _HERE / "static", _HERE / "templates"
MAX_BODY = 4096
MAX_WINDOW_S = 31 * 86400
MAX_BUCKETS = 4000


class Reader:
    """One read-only view of the store and the registry, on its own thread."""

    def __init__(self, db: str, registry: str) -> None:
        self.db, self.registry_target = db, registry
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="cim-web-read")
        self.store: Store | None = None
        self.registry: Any = None

    def fleet(self) -> FleetDB:
        if self.store is None:  # opened on first use, on this reader's thread
            self.store = open_store(self.db, readonly=True)
            self.registry = open_registry(self.registry_target, readonly=True)
        return FleetDB(self.store)

    def close(self) -> None:
        def shut() -> None:
            if self.store is not None:
                self.store.close()
                self.registry.close()
        self.pool.submit(shut).result()
        self.pool.shutdown()


@dataclass
class Web:
    """Everything a request needs: readers, the web state on its thread, settings."""

    db: str
    registry: str
    state: WebState
    readers: int = 2
    silent_after: dict[str, float] = field(default_factory=dict)
    metrics: ReceiverMetrics = field(default_factory=ReceiverMetrics)
    secure_cookies: bool = False
    throttle: access.Throttle = field(default_factory=access.Throttle)

    def __post_init__(self) -> None:
        self._free: asyncio.Queue[Reader] | None = None
        self._all: list[Reader] = []
        self._state_pool = ThreadPoolExecutor(1, thread_name_prefix="cim-web-state")

    async def read(self, fn: Callable[[Reader], T]) -> T:
        """Run fn on a free reader's thread."""
        if self._free is None:
            self._free = asyncio.Queue()
            self._all = [Reader(self.db, self.registry) for _ in range(self.readers)]
            for r in self._all:
                self._free.put_nowait(r)
        reader = await self._free.get()
        try:
            return await asyncio.get_running_loop().run_in_executor(reader.pool, fn, reader)
        finally:
            self._free.put_nowait(reader)

    async def web(self, fn: Callable[[WebState], T]) -> T:
        """Run fn on the web state's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._state_pool, fn,
                                                                self.state)

    def close(self) -> None:
        for r in self._all:
            r.close()
        self._state_pool.shutdown()

    async def principal(self, request: Request) -> Principal | None:
        auth = request.headers.get("authorization", "")
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None
            return await self.web(lambda s: s.token(token.strip()))
        session = request.cookies.get(access.SESSION_COOKIE)
        if not session or len(session) > 100:  # noqa: PLR2004
            return None
        return await self.web(lambda s: s.session(session))

    def fleet(self, r: Reader, now: float, dev: str | None = None) -> tuple[list[Any], list[Any]]:
        """The fleet's rows (or one gateway's) and the open alarms they count."""
        db = r.fleet()
        alarms = db.open_alarms(dev)
        keys = [k for k in r.registry.list() if dev is None or k.device_id == dev]
        return fleet_rows(keys, db, now, self.silent_after, alarms), alarms


class JSON(JSONResponse):
    """JSONResponse encoded by msgspec (a dependency already): the fleet is 1,000 rows."""

    def render(self, content: Any) -> bytes:  # noqa: ANN401
        return msgspec.json.encode(content)


def _page(name: str, who: Principal | None = None, csrf: str = "", **extra: str) -> HTMLResponse:
    text = (TEMPLATES / f"{name}.html").read_text(encoding="utf-8")
    values = {"csrf": csrf or (who.csrf if who else "") or "", "user": who.name if who else "",
              "role": who.role if who else "", **extra}
    for k, v in values.items():
        text = text.replace("{{" + k + "}}", html.escape(v, quote=True))
    return HTMLResponse(text)


async def _json_body(request: Request) -> dict[str, Any] | None:
    """The request's JSON object, at most MAX_BODY bytes; None when it is not one."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _float(request: Request, name: str, default: float) -> float:
    text = request.query_params.get(name)
    if text is None:
        return default
    value = float(text)  # ValueError: the caller answers 400
    if not math.isfinite(value):
        raise ValueError(name)
    return value


def _alarm_json(a: Any, acks: dict[Any, Any]) -> dict[str, Any]:  # noqa: ANN401
    ack = acks.get((a.dev, a.seq, a.point, a.rule))
    return {**asdict(a), "ack": asdict(ack) if ack else None}


def build_app(web: Web) -> Starlette:  # noqa: C901, PLR0915 - the route table, in one place
    """The Starlette application: pages, /api/v1/, /metrics and /static."""
    guard = access.guarded
    who_is = web.principal

    async def login_page(request: Request) -> Response:
        if await who_is(request) is not None:
            return RedirectResponse("/", status_code=303)
        token = access.new_token()
        response = _page("login", csrf=token)
        response.set_cookie(access.PRELOGIN_COOKIE, token, max_age=3600, httponly=True,
                            samesite="strict", secure=web.secure_cookies, path="/api/v1/login")
        return response

    def page(name: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            who = await who_is(request)
            if who is None or who.via != "session":
                return RedirectResponse("/login", status_code=303)
            dev = request.path_params.get("dev", "")
            if dev and not DEVICE_ID.fullmatch(dev):
                return _page("notfound", who)
            return _page(name, who, dev=dev)
        return endpoint

    async def login(request: Request) -> Response:
        if not access.csrf_ok(request, request.cookies.get(access.PRELOGIN_COOKIE)):
            return access.error(403, "csrf", "reload the login page and try again")
        body = await _json_body(request)
        if body is None or not isinstance(body.get("user"), str) or \
                not isinstance(body.get("password"), str) or \
                not isinstance(body.get("new_password", ""), str | None):
            return access.error(400, "bad_request", "send JSON {user, password[, new_password]}")
        name, password = body["user"][:64], body["password"][:256]
        new = (body.get("new_password") or "")[:256] or None
        wait = web.throttle.locked(name)
        if wait:
            return access.error(429, "locked", f"too many failed logins; wait {wait:.0f} s")
        try:
            session, who = await web.web(lambda s: s.login(name, password, new))
        except WebStateError as e:
            code = str(e)
            if code == "bad_credentials":
                web.throttle.failed(name)
                return access.error(401, code, "wrong user name or password")
            if code == "password_change_required":
                return access.error(403, code, "this one-time password must be replaced: "
                                    "choose a new password")
            return access.error(400, code, "the new password needs at least 12 characters "
                                "and must differ from the one-time password")
        web.throttle.succeeded(name)
        response = JSONResponse({"user": who.name, "role": who.role, "csrf": who.csrf})
        response.set_cookie(access.SESSION_COOKIE, session, max_age=8 * 3600, httponly=True,
                            samesite="strict", secure=web.secure_cookies, path="/")
        response.delete_cookie(access.PRELOGIN_COOKIE, path="/api/v1/login")
        return response

    @guard(who_is, change=True)
    async def logout(request: Request, who: Principal) -> Response:
        session = request.cookies.get(access.SESSION_COOKIE, "")
        if who.via == "session":
            await web.web(lambda s: s.logout(session))
        response = JSONResponse({"ok": True})
        response.delete_cookie(access.SESSION_COOKIE, path="/")
        return response

    @guard(who_is)
    async def session_info(request: Request, who: Principal) -> Response:
        return JSONResponse({"user": who.name, "role": who.role, "via": who.via})

    @guard(who_is)
    async def fleet(request: Request, who: Principal) -> Response:
        now = time.time()
        rows, alarms = await web.read(lambda r: web.fleet(r, now))
        acks = await web.web(lambda s: s.acks())
        unacked: dict[str, int] = {}
        for a in alarms:
            if (a.dev, a.seq, a.point, a.rule) not in acks:
                unacked[a.dev] = unacked.get(a.dev, 0) + 1
        site_type, state = request.query_params.get("site_type"), request.query_params.get("state")
        out = [{**r.as_json(), "unacked_alarms": unacked.get(r.dev, 0)} for r in rows
               if (not site_type or r.site_type == site_type)
               and (not state or r.state == state or (state == "silent" and r.silent))]
        return JSON({"generated": now, "total": len(rows), "gateways": out,
                             "site_types": sorted({r.site_type for r in rows})})

    def _gateway(r: Reader, dev: str, now: float) -> dict[str, Any] | None:
        rows, _ = web.fleet(r, now, dev)
        row = next((x for x in rows if x.dev == dev), None)
        if row is None:
            return None
        db = r.fleet()
        status = db.statuses().get(dev)
        n, last = db.messages(dev)
        return {"gateway": row.as_json(), "status": asdict(status) if status else None,
                "points": [asdict(p) for p in db.points(dev)],
                "events": [dict(zip(("seq", "t", "point", "kind", "rule", "value", "msg"), e,
                                    strict=True)) for e in db.events(dev)],
                "open_alarms": db.open_alarms(dev), "gaps": db.gaps(dev),
                "rejects": db.rejects(dev), "messages": n, "last_seq": last}

    @guard(who_is)
    async def gateway(request: Request, who: Principal) -> Response:
        dev = request.path_params["dev"]
        if not DEVICE_ID.fullmatch(dev):
            return access.error(404, "not_found", "no such gateway")
        now = time.time()
        out = await web.read(lambda r: _gateway(r, dev, now))
        if out is None:
            return access.error(404, "not_found", f"{dev} is not enrolled")
        acks = await web.web(lambda s: s.acks(dev))
        out["open_alarms"] = [_alarm_json(a, acks) for a in out["open_alarms"]]
        return JSON(out)

    @guard(who_is)
    async def series(request: Request, who: Principal) -> Response:
        dev, point = request.path_params["dev"], request.query_params.get("point", "")
        if not DEVICE_ID.fullmatch(dev):
            return access.error(404, "not_found", "no such gateway")
        try:
            until = _float(request, "until", time.time())
            since = _float(request, "since", until - 86400)
            width = int(_float(request, "width", 1000))
        except ValueError:
            return access.error(400, "bad_request", "since, until and width must be numbers")
        if not point or len(point) > 200 or not 0 < until - since <= MAX_WINDOW_S \
                or not 1 <= width <= MAX_BUCKETS:
            return access.error(400, "bad_request", "give point, since < until (at most 31 "
                                f"days apart) and width from 1 to {MAX_BUCKETS}")
        s = await web.read(lambda r: r.fleet().series(dev, point, since, until, width))
        return JSON({"dev": dev, "point": point, "since": since, "until": until,
                             "bucket_s": s.bucket_s, "readings": s.readings, "t": s.t,
                             "min": s.lo, "max": s.hi, "n": s.n})

    @guard(who_is)
    async def alarms(request: Request, who: Principal) -> Response:
        def both(r: Reader) -> tuple[Any, Any]:
            db = r.fleet()
            return db.open_alarms(), db.recent_alarm_events()
        open_, recent = await web.read(both)
        acks = await web.web(lambda s: s.acks())
        keys = ("dev", "seq", "t", "point", "kind", "rule", "value", "msg")
        history = []
        for e in recent:
            row = dict(zip(keys, e, strict=True))
            ack = acks.get((row["dev"], row["seq"], row["point"], row["rule"]))
            history.append({**row, "ack": asdict(ack) if ack and row["kind"] == "raise"
                            else None})
        return JSON({"open": [_alarm_json(a, acks) for a in open_], "recent": history})

    @guard(who_is, change=True, operator=True)
    async def ack_alarm(request: Request, who: Principal) -> Response:
        body = await _json_body(request)
        key = None if body is None else (body.get("dev"), body.get("seq"), body.get("point"),
                                         body.get("rule"))
        if key is None or not (isinstance(key[0], str) and type(key[1]) is int
                               and isinstance(key[2], str) and isinstance(key[3], str)):
            return access.error(400, "bad_request", "send JSON {dev, seq, point, rule}")
        k: tuple[str, int, str, str] = key  # type: ignore[assignment]
        if not await web.read(lambda r: r.fleet().raised(*k)):
            return access.error(404, "not_found", "no such alarm raise was stored")
        ack = await web.web(lambda s: s.ack_alarm(k, who.name))
        return JSONResponse({"ack": asdict(ack)})

    @guard(who_is)
    async def metrics(request: Request, who: Principal) -> Response:
        now = time.time()
        rows, _ = await web.read(lambda r: web.fleet(r, now))
        return Response(web.metrics.exposition(rows, now), media_type=CONTENT_TYPE)

    @guard(who_is)
    async def api_index(request: Request, who: Principal) -> Response:
        return JSONResponse({"version": 1, "endpoints": ENDPOINTS})

    routes = [
        Route("/", page("fleet")),
        Route("/gateway/{dev}", page("gateway")),
        Route("/alarms", page("alarms")),
        Route("/login", login_page),
        Route("/api/v1", api_index),
        Route("/api/v1/login", login, methods=["POST"]),
        Route("/api/v1/logout", logout, methods=["POST"]),
        Route("/api/v1/session", session_info),
        Route("/api/v1/fleet", fleet),
        Route("/api/v1/gateways/{dev}", gateway),
        Route("/api/v1/gateways/{dev}/series", series),
        Route("/api/v1/alarms", alarms),
        Route("/api/v1/alarms/ack", ack_alarm, methods=["POST"]),
        Route("/metrics", metrics),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, middleware=[
        Middleware(access.SecurityHeaders, hsts=web.secure_cookies)])  # HSTS only with TLS


def with_hosts(app: Any, hosts: list[str]) -> Any:  # noqa: ANN401
    """Refuse requests for other Host names (DNS rebinding onto a loopback server)."""
    return TrustedHostMiddleware(app, allowed_hosts=hosts)


ENDPOINTS = [
    {"method": "POST", "path": "/api/v1/login", "auth": "CSRF token of the login page",
     "body": "{user, password, new_password?}", "does": "log in; sets the session cookie"},
    {"method": "POST", "path": "/api/v1/logout", "auth": "session + CSRF", "does": "log out"},
    {"method": "GET", "path": "/api/v1/session", "auth": "any", "does": "who you are"},
    {"method": "GET", "path": "/api/v1/fleet?site_type=&state=", "auth": "any",
     "does": "every enrolled gateway; state = online|offline|unknown|silent"},
    {"method": "GET", "path": "/api/v1/gateways/{dev}", "auth": "any",
     "does": "one gateway: status, points with last value, events, open alarms, seq gaps, "
             "rejects"},
    {"method": "GET", "path": "/api/v1/gateways/{dev}/series?point=&since=&until=&width=",
     "auth": "any", "does": "one point over [since, until): min/max per bucket, width buckets"},
    {"method": "GET", "path": "/api/v1/alarms", "auth": "any",
     "does": "open alarms with their acknowledgement, and recent raise/clear events"},
    {"method": "POST", "path": "/api/v1/alarms/ack", "auth": "operator (+ CSRF for a session)",
     "body": "{dev, seq, point, rule}", "does": "acknowledge an alarm: who and when"},
    {"method": "GET", "path": "/metrics", "auth": "any", "does": "Prometheus text format"},
]
