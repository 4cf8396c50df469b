"""`cimedge receiver web|user|token` and `receiver run --http`: parsers here; the web stack
(pip install 'cimedge[web]') is imported only by the handlers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cimedge.edge.errors import CimEdgeError

EXTRA = "the web view needs its extra: pip install 'cimedge[web]'"


class MissingExtra(CimEdgeError):
    """The optional web dependencies are not installed."""


def require_web() -> None:
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise MissingExtra(EXTRA) from None


def add_http_options(p: argparse.ArgumentParser, *, required: bool) -> None:
    """--http and what goes with it, for `receiver run` and `receiver web`."""
    g = p.add_argument_group("web view (pip install 'cimedge[web]')")
    g.add_argument("--http", required=required, metavar="HOST:PORT",
                   help="serve the fleet pages, /api/v1/ and /metrics here (loopback, e.g. "
                        "127.0.0.1:8080; port 0 picks a free one)" if required else
                        "also serve the web view and /metrics here (e.g. 127.0.0.1:8080)")
    g.add_argument("--web-db", metavar="FILE|URL",
                   help="accounts, sessions and alarm acknowledgements (default: web.sqlite "
                        "beside a SQLite --db; the --db database itself when PostgreSQL)")
    g.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve HTTPS with this "
                   "certificate (needed for anything but loopback)")
    g.add_argument("--tls-key", type=Path, metavar="FILE", help="its private key")
    g.add_argument("--plaintext-http", action="store_true",
                   help="allow plain HTTP on a non-loopback address (behind your own TLS proxy)")
    g.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host name the server answers besides loopback (repeatable)")
    g.add_argument("--silent-after", action="append", default=[], metavar="TYPE=SECONDS",
                   type=_silent_after, help="as for `receiver fleet`")


def _silent_after(text: str) -> tuple[str, float]:
    from cimedge.cloud_sync.receiver.cli import _silent_after as parse

    return parse(text)


def add_web_parsers(rsub: Any, cmd: Callable[..., argparse.ArgumentParser]) -> None:  # noqa: ANN401
    """`receiver web`, `receiver user ...` and `receiver token ...`."""
    wb = cmd(rsub, "web", "serve the fleet pages, the JSON API and /metrics (read-only on "
             "the store)",
             "cimedge receiver web --db receiver.sqlite --http 127.0.0.1:8080",
             "Serve the operator's web view on its own, beside a running receiver: fleet, "
             "gateway and alarm pages, the JSON API under /api/v1/ and Prometheus metrics "
             "under /metrics, all behind a login or an API token. Bound to loopback unless "
             "told otherwise. (`receiver run --http` serves the same inside the receiver, "
             "with its ingest counters in /metrics.)")
    wb.add_argument("--db", required=True, metavar="FILE|URL",
                    help="the receiver's SQLite file or postgresql:// URL (read-only)")
    wb.add_argument("--registry", metavar="FILE|URL",
                    help="the key registry (default: as for `receiver run`)")
    add_http_options(wb, required=True)
    wb.set_defaults(handler=web)

    us = rsub.add_parser("user", help="operator accounts of the web view",
                         description="Operator accounts of the web view. A new account or a "
                                     "reset prints a one-time password, which must be "
                                     "replaced at the first login.")
    usub = us.add_subparsers(dest="user_command", required=True, metavar="COMMAND")
    ua = cmd(usub, "add", "create an account and print its one-time password",
             "cimedge receiver user add alice --role operator --db receiver.sqlite")
    ua.add_argument("name")
    ua.add_argument("--role", required=True, choices=["read-only", "operator"],
                    help="read-only sees everything; operator may also acknowledge alarms")
    ur = cmd(usub, "reset", "print a new one-time password for an account (ends its sessions)",
             "cimedge receiver user reset alice --db receiver.sqlite")
    ur.add_argument("name")
    ux = cmd(usub, "remove", "remove an account or an API token (ends its sessions)",
             "cimedge receiver user remove alice --db receiver.sqlite")
    ux.add_argument("name")
    ul = cmd(usub, "list", "list accounts and API tokens with their roles",
             "cimedge receiver user list --db receiver.sqlite")
    tk = cmd(rsub, "token", "create an API token (for scripts and Prometheus), printed once",
             "cimedge receiver token prometheus --role read-only --db receiver.sqlite",
             "Create an API token and print it once (only its hash is kept). Send it as "
             "`Authorization: Bearer TOKEN`; Prometheus: `authorization: {credentials_file: "
             "FILE}`. Remove it with `receiver user remove NAME`.")
    tk.add_argument("name")
    tk.add_argument("--role", required=True, choices=["read-only", "operator"])
    for p, handler in ((ua, user_add), (ur, user_reset), (ux, user_remove), (ul, user_list),
                       (tk, token_add)):
        p.add_argument("--db", required=True, metavar="FILE|URL", help="the receiver's --db")
        p.add_argument("--web-db", metavar="FILE|URL", help="as for `receiver web`")
        p.set_defaults(handler=handler)


def web_target(args: argparse.Namespace) -> str:
    """--web-db, else web.sqlite beside a SQLite --db, else the PostgreSQL --db itself."""
    from cimedge.cloud_sync.receiver.store import is_postgres_url

    if args.web_db:
        return str(args.web_db)
    if is_postgres_url(args.db):
        return str(args.db)
    return str(Path(args.db).with_name("web.sqlite"))


def _state(args: argparse.Namespace) -> Any:  # noqa: ANN401
    from cimedge.cloud_sync.receiver.store import is_postgres_url, require_psycopg
    from cimedge.cloud_sync.receiver.web.webstate import WebState

    target = web_target(args)
    if is_postgres_url(target):
        require_psycopg()
    return WebState(target)


def user_add(args: argparse.Namespace) -> int:
    require_web()
    state = _state(args)
    try:
        otp = state.add_user(args.name, args.role)
    finally:
        state.close()
    print(f"user {args.name} ({args.role}) added; one-time password (valid for 24 h, to be "
          f"replaced at the first login):\n{otp}")
    return 0


def user_reset(args: argparse.Namespace) -> int:
    require_web()
    state = _state(args)
    try:
        otp = state.reset_user(args.name)
    finally:
        state.close()
    print(f"user {args.name}: new one-time password (valid for 24 h):\n{otp}")
    return 0


def user_remove(args: argparse.Namespace) -> int:
    require_web()
    state = _state(args)
    try:
        kind = state.remove(args.name)
    finally:
        state.close()
    print(f"{kind} {args.name} removed")
    return 0


def user_list(args: argparse.Namespace) -> int:
    require_web()
    state = _state(args)
    try:
        rows = state.accounts()
    finally:
        state.close()
    for name, kind, role, must_change in rows:
        print(f"{name}\t{kind}\t{role}" + ("\t(one-time password not used yet)"
                                          if must_change else ""))
    if not rows:
        print("(no accounts: `cimedge receiver user add NAME --role operator`)")
    return 0


def token_add(args: argparse.Namespace) -> int:
    require_web()
    state = _state(args)
    try:
        token = state.add_token(args.name, args.role)
    finally:
        state.close()
    print(f"token {args.name} ({args.role}); it is shown only now:\n{token}")
    return 0


def web_parts(args: argparse.Namespace, registry: str, receiver: Any = None) -> tuple[Any, ...]:  # noqa: ANN401
    """(web, app, socket, url, serve kwargs) for --http; a bad option is one sentence."""
    require_web()
    from cimedge.cloud_sync.receiver.web.app import Web
    from cimedge.cloud_sync.receiver.web.metrics import ReceiverMetrics
    from cimedge.cloud_sync.receiver.web.serve import WebError, bind, make_app, url_of

    tls = bool(args.tls_cert or args.tls_key)
    if tls and not (args.tls_cert and args.tls_key):
        raise WebError("--tls-cert and --tls-key go together")
    sock = bind(args.http, tls=tls, plaintext=args.plaintext_http)
    web = Web(str(args.db), registry, _state(args), silent_after=dict(args.silent_after),
              metrics=ReceiverMetrics(receiver), secure_cookies=tls)
    app = make_app(web, sock, args.allowed_host)
    return web, app, sock, url_of(sock, tls), {"certfile": args.tls_cert,
                                               "keyfile": args.tls_key}


def web(args: argparse.Namespace) -> int:
    from cimedge.cloud_sync.receiver.cli import _registry_target
    from cimedge.stop import run_until_signalled

    web_, app, sock, url, tls = web_parts(args, _registry_target(args))
    from cimedge.cloud_sync.receiver.web.serve import serve

    try:
        run_until_signalled(serve(app, sock, **tls, on_ready=lambda: print(
            f"web ready: {url} (store {args.db}, read-only)", flush=True)))
    finally:
        web_.close()
        sock.close()
        web_.state.close()
    print("web stopped", file=sys.stderr)
    return 0
