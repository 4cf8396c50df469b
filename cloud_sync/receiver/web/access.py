"""Who may do what: session cookies and API tokens, roles, CSRF, login throttling, and the
security headers every response carries."""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cimedge.cloud_sync.receiver.web.webstate import Principal

SESSION_COOKIE = "cim_session"
PRELOGIN_COOKIE = "cim_prelogin"
CSRF_HEADER = "x-csrf-token"
# No inline script or style anywhere: every script is a file under /static.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), usb=(), serial=()"),
]


class SecurityHeaders:
    """Adds the security headers to every response; no-store on everything but /static."""

    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", [])
                           if h[0].lower() != b"cache-control"]
                headers += _HEADERS
                # Data never lands in a cache; scripts are revalidated (ETag) on each load.
                headers.append((b"cache-control", b"no-cache" if static else b"no-store"))
                if self.hsts:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Throttle:
    """Slows password guessing: after `limit` failures for a name within `window` seconds,
    that name is refused for `lockout` seconds (in memory: per web process)."""

    def __init__(self, limit: int = 5, window: float = 900.0, lockout: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.lockout, self.clock = limit, window, lockout, clock
        self._fails: dict[str, list[float]] = {}

    def locked(self, name: str) -> float:
        """Seconds left of a lockout for this name (0: may try)."""
        now = self.clock()
        fails = [t for t in self._fails.get(name, []) if now - t < self.window]
        self._fails[name] = fails
        if len(fails) >= self.limit:
            return max(0.0, fails[-1] + self.lockout - now)
        return 0.0

    def failed(self, name: str) -> None:
        if len(self._fails) > 10_000:  # noqa: PLR2004 - guessed names must not grow memory
            self._fails.clear()
        self._fails.setdefault(name, []).append(self.clock())

    def succeeded(self, name: str) -> None:
        self._fails.pop(name, None)


def new_token() -> str:
    """A random CSRF token (256 bits)."""
    return secrets.token_urlsafe(32)


def error(status: int, code: str, detail: str) -> JSONResponse:
    """A refusal as JSON: {"error": code, "detail": one sentence}."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another origin."""
    origin = request.headers.get("origin")
    if origin is None:  # same-origin GETs and non-browser clients send none
        return True
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


def csrf_ok(request: Request, expected: str | None) -> bool:
    """The X-CSRF-Token header matches the token bound to this session (and the origin, when
    the browser names one, is ours)."""
    got = request.headers.get(CSRF_HEADER, "")
    return bool(expected) and bool(got) and same_origin(request) and \
        hmac.compare_digest(got.encode(), (expected or "").encode())


Resolver = Callable[[Request], Awaitable[Principal | None]]
Handler = Callable[[Request, Principal], Awaitable[Any]]


def guarded(resolve: Resolver, *, change: bool = False,
            operator: bool = False) -> Callable[[Handler], Callable[[Request], Awaitable[Any]]]:
    """Wrap an API handler: authenticated, with the operator role if asked, and for a
    change, the session's CSRF token (API tokens carry no ambient credential: none needed)."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Any]]:
        async def endpoint(request: Request) -> Any:  # noqa: ANN401
            who = await resolve(request)
            if who is None:
                return error(401, "unauthenticated", "log in or send an API token")
            if change and who.via == "session" and not csrf_ok(request, who.csrf):
                return error(403, "csrf", "the X-CSRF-Token header is missing or wrong")
            if operator and not who.operator:
                return error(403, "forbidden", f"{who.name} has the {who.role} role; this "
                             "needs operator")
            return await handler(request, who)
        endpoint.__name__ = handler.__name__
        return endpoint
    return wrap
