"""`cimedge receiver ...` and `cimedge registry ...`: parsers here, heavy imports in handlers."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cimedge.edge.errors import CimEdgeError

RAW = argparse.RawDescriptionHelpFormatter


class OptionError(CimEdgeError):
    """A command-line value that cannot be used: names the option and the reason."""

    def __init__(self, option: str, reason: str) -> None:
        self.option, self.reason = option, reason
        super().__init__(f"{option}: {reason}")


def _to_stdout(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace],
                                                                        int]:
    """Stop quietly, as Unix tools do, when the reader (head, less) closes the pipe."""
    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error
            return 0
    return wrapped


def _time(text: str) -> float:
    from cimedge.cloud_sync.receiver.views import parse_time

    try:
        return parse_time(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


if TYPE_CHECKING:  # not subscriptable at run time
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _cmd(sub: Subparsers, name: str, help_: str, example: str,
         description: str | None = None) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_, description=description or help_,
                          epilog=f"example: {example}", formatter_class=RAW)


def add_parsers(sub: Subparsers) -> None:
    """Add the receiver and registry command groups to the top-level parser."""
    rc = sub.add_parser("receiver", help="the backend's reference receiver",
                        description="The backend's reference receiver: run it, and look at "
                                    "what it stored.")
    rsub = rc.add_subparsers(dest="receiver_command", required=True, metavar="COMMAND")
    _add_run(rsub)
    st = _cmd(rsub, "stats", "per device: last seq, last seen, gaps in seq, rejects by reason",
              "cimedge receiver stats --db receiver.sqlite --json")
    st.add_argument("--db", required=True, metavar="FILE|URL",
                    help="the receiver's SQLite file or postgresql:// URL (opened read-only)")
    st.add_argument("--json", action="store_true", help="print the stats as JSON")
    st.add_argument("--gaps", type=int, default=5, metavar="N",
                    help="gap ranges to list per device in the table (default 5)")
    st.set_defaults(handler=stats)
    ex = _cmd(rsub, "export", "one device's stored readings as CSV, in time order",
              "cimedge receiver export --db receiver.sqlite --dev ps-0042 "
              "--since 2025-03-01T00:00:00Z --out ps-0042.csv",
              "Write one device's stored readings as CSV (dev, seq, name, time, value, unit, "
              "quality; time in RFC 3339 UTC), in time order, streaming.")
    ex.add_argument("--db", required=True, metavar="FILE|URL",
                    help="the receiver's SQLite file or postgresql:// URL (opened read-only)")
    ex.add_argument("--dev", required=True, metavar="DEVICE_ID")
    ex.add_argument("--since", type=_time, metavar="TIME",
                    help="from this reading time on: RFC 3339, a date (UTC) or epoch seconds")
    ex.add_argument("--until", type=_time, metavar="TIME", help="before this reading time")
    ex.add_argument("--format", choices=["csv"], default="csv",
                    help="csv (the only format: Parquet would add pyarrow, see README)")
    ex.add_argument("--out", type=Path, metavar="FILE", help="write here instead of stdout")
    ex.set_defaults(handler=export)
    fl = _cmd(rsub, "fleet", "every enrolled gateway: state, last seen, backlog, versions, "
              "open alarms; silent ones first",
              "cimedge receiver fleet --db receiver.sqlite --silent-after lamp_pole=1800",
              "List every gateway the registry knows with its online/offline state, when it "
              "was last heard from, its backlog and versions (from its status), and its open "
              "alarms. Gateways enrolled but never seen, or not seen for longer than their "
              "site type allows, are flagged silent (`!`) and listed first.")
    fl.add_argument("--db", required=True, metavar="FILE|URL",
                    help="the receiver's SQLite file or postgresql:// URL (opened read-only)")
    fl.add_argument("--registry", metavar="FILE|URL",
                    help="the key registry (default: as for `receiver run`)")
    fl.add_argument("--silent-after", type=_silent_after, action="append", default=[],
                    metavar="TYPE=SECONDS",
                    help="how long a site type may go unheard (repeatable; defaults: "
                         "pump_station and utility_tunnel 180, lamp_pole and roadside_unit "
                         "900, others 900)")
    fl.add_argument("--json", action="store_true", help="print the fleet as JSON")
    fl.set_defaults(handler=fleet)
    from cimedge.cloud_sync.receiver.webcli import add_web_parsers

    add_web_parsers(rsub, _cmd)
    _add_registry(sub)


def _silent_after(text: str) -> tuple[str, float]:
    site_type, sep, seconds = text.partition("=")
    try:
        value = float(seconds)
    except ValueError:
        value = -1.0
    if not sep or not site_type or not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not TYPE=SECONDS (a site type and a "
                                         "positive number of seconds)")
    return site_type, value


def _add_run(rsub: Subparsers) -> None:
    rr = _cmd(rsub, "run", "receive, verify, store and acknowledge batches",
              "cimedge receiver run --broker mqtt://127.0.0.1:1883 --db receiver.sqlite "
              "--enroll /var/lib/cimedge/enrollment.json",
              "Receive batches and events from every gateway on the broker through the "
              "shared subscription, verify them against the registry, store each "
              "(dev, seq) once and acknowledge after the commit. Prints one line when "
              "subscribed and a summary when stopped (SIGTERM or Ctrl-C).")
    rr.add_argument("--broker", default="mqtt://127.0.0.1:1883", metavar="mqtt://HOST:PORT")
    rr.add_argument("--db", required=True, metavar="FILE|URL",
                    help="SQLite file (one receiver per file) or postgresql://... URL "
                         "(any number of receivers)")
    rr.add_argument("--registry", metavar="FILE|URL",
                    help="the key registry, opened read-only (default: registry.sqlite "
                         "beside a SQLite --db; the --db database itself when PostgreSQL)")
    rr.add_argument("--enroll", type=Path, action="append", default=[], metavar="FILE",
                    help="add this enrollment record to the registry first (repeatable)")
    rr.add_argument("--group", default="cim-ingest", help="shared-subscription group")
    rr.add_argument("--client-id", help="stable MQTT client id, so a restart resumes the session")
    rr.add_argument("--inflight", type=int, default=None, metavar="N",
                    help="messages the broker may have unacknowledged with us (default 256)")
    rr.add_argument("--max-group", type=int, default=None, metavar="N",
                    help="most messages per transaction (default 128)")
    rr.add_argument("--metrics-every", type=float, metavar="SECONDS",
                    help="print the counters as one JSON line this often (default: never)")
    rr.add_argument("--ingest-key", type=Path, action="append", default=[], metavar="FILE",
                    help="the backend ingest key (0600) that signs acks to v2 gateways "
                         "(cimedge backend keygen --role ingest); repeatable: it signs with "
                         "the first still valid")
    rr.add_argument("--backend", type=Path, metavar="FILE",
                    help="the backend.json gateways hold: each --ingest-key must be listed "
                         "there, and its not_after says until when it signs")
    rr.add_argument("--max-packet-size", type=int, metavar="BYTES",
                    help="MQTT 5 Maximum Packet Size asked of the broker (default: 1 MiB "
                         "message + 4 KiB)")
    tls = rr.add_argument_group("broker TLS and credentials (mqtts:// turns TLS on)")
    tls.add_argument("--ca-file", type=Path, metavar="FILE",
                     help="CA certificate(s) the broker's certificate must chain to")
    tls.add_argument("--cert-file", type=Path, metavar="FILE",
                     help="the receiver's client certificate, for mutual TLS")
    tls.add_argument("--key-file", type=Path, metavar="FILE",
                     help="its private key (keep it 0600)")
    tls.add_argument("--username", default="", help="MQTT user name, where the broker wants one")
    tls.add_argument("--password-file", type=Path, metavar="FILE",
                     help="a file holding the MQTT password (never on the command line)")
    from cimedge.cloud_sync.receiver.webcli import add_http_options

    add_http_options(rr, required=False)
    rr.set_defaults(handler=run)


def _add_registry(sub: Subparsers) -> None:
    rg = sub.add_parser("registry", help="the receiver's device key registry",
                        description="The receiver's device key registry (DESIGN.md section 5).")
    gsub = rg.add_subparsers(dest="registry_command", required=True, metavar="COMMAND")

    def where(p: argparse.ArgumentParser) -> None:
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--registry", metavar="FILE|URL",
                       help="the registry: a SQLite file or a postgresql:// URL")
        g.add_argument("--db", metavar="FILE|URL",
                       help="the receiver's --db: registry.sqlite beside a SQLite file, or the "
                            "same PostgreSQL database")

    ga = _cmd(gsub, "add", "add devices' enrollment records to the registry",
              "cimedge registry add enrollment.json --registry registry.sqlite",
              "Add devices' enrollment records (enrollment.json, written by `cimedge "
              "keygen`). Adding a record again changes nothing; a revoked key stays revoked.")
    ga.add_argument("enrollment", type=Path, nargs="+", metavar="ENROLLMENT.json")
    where(ga)
    ga.set_defaults(handler=registry_add)
    gl = _cmd(gsub, "list", "list every key: device, kid, state, validity",
              "cimedge registry list --registry registry.sqlite --json")
    gl.add_argument("--json", action="store_true", help="print the keys as JSON")
    where(gl)
    gl.set_defaults(handler=registry_list)
    gr = _cmd(gsub, "revoke", "revoke one key (by kid) or every key of a device, from now",
              "cimedge registry revoke ps-0042 --registry registry.sqlite",
              "Revoke one key (16 hex digits) or every key of a device. Running receivers "
              "refuse messages signed with it from this instant (revoked_kid).")
    gr.add_argument("target", metavar="DEV|KID")
    where(gr)
    gr.set_defaults(handler=registry_revoke)
    go = _cmd(gsub, "rotate", "enroll a device's new key and retire its old one after a seq",
              "cimedge registry rotate new-enrollment.json --after-seq 81234 "
              "--registry registry.sqlite",
              "Enroll a device's new key and retire its active key(s): the old key stays "
              "valid for the backlog it signed (seq <= --after-seq), the new key for every "
              "seq. --after-seq is the last seq the gateway signed with its old key.")
    go.add_argument("enrollment", type=Path, metavar="NEW_ENROLLMENT.json")
    go.add_argument("--after-seq", type=int, required=True, metavar="SEQ")
    where(go)
    go.set_defaults(handler=registry_rotate)


def _registry_target(args: argparse.Namespace) -> str:
    """--registry, else the --db database itself (PostgreSQL) or registry.sqlite beside it."""
    from cimedge.cloud_sync.receiver.store import is_postgres_url

    if args.registry:
        return str(args.registry)
    if is_postgres_url(args.db):
        return str(args.db)
    return str(Path(args.db).with_name("registry.sqlite"))


def run(args: argparse.Namespace) -> int:
    from cimedge.cloud_sync.receiver.registry import open_registry
    from cimedge.cloud_sync.receiver.service import Receiver
    from cimedge.cloud_sync.transport import make_tls_context, parse_broker, read_password
    from cimedge.stop import run_until_signalled

    # Broker settings first: a wrong file path is one sentence before anything is opened.
    host, port, tls = parse_broker(args.broker)
    tls_context = make_tls_context(tls, args.ca_file, args.cert_file, args.key_file)
    password = read_password(args.password_file)
    ingest = None
    if args.ingest_key:
        from cimedge.cloud_sync.receiver.ingest import IngestKeys

        ingest = IngestKeys.load(args.ingest_key, args.backend)
    elif args.backend:
        raise OptionError("--backend", "names the file --ingest-key keys are checked against; "
                                       "give --ingest-key too")
    if args.max_packet_size is not None and not (
            4096 <= args.max_packet_size <= 268435460):  # noqa: PLR2004 - MQTT's own bounds
        raise OptionError("--max-packet-size", "must be 4096 to 268435460 bytes")
    path = _registry_target(args)
    if args.enroll:
        writer = open_registry(path)
        try:
            for enrollment in args.enroll:
                writer.load_enrollment_file(enrollment)
        finally:
            writer.close()
    registry = open_registry(path, readonly=True)
    options: dict[str, Any] = {k: v for k, v in (("inflight", args.inflight),
                                                 ("max_group", args.max_group),
                                                 ("max_packet_size", args.max_packet_size)) if v}
    receiver = Receiver(host, port, args.db, registry, group=args.group,
                        client_id=args.client_id, tls_context=tls_context,
                        username=args.username, password=password, ingest=ingest, **options)
    receiver.on_ready = lambda: _announce(receiver, args.db)
    main: Any = _with_metrics(receiver, args.metrics_every)
    web = None
    if args.http:
        from cimedge.cloud_sync.receiver.store import open_store
        from cimedge.cloud_sync.receiver.webcli import web_parts

        open_store(args.db).close()  # made and migrated before the web reads it
        web, app, sock, url, tls = web_parts(args, path, receiver)
        from cimedge.cloud_sync.receiver.web.serve import serve, together

        main = together(main, serve(app, sock, **tls, on_ready=lambda: print(
            f"web ready: {url}", flush=True)))
    try:
        run_until_signalled(main)
    finally:
        registry.close()
        if web is not None:
            web.close()
            web.state.close()
        m = receiver.metrics
        print(f"receiver {receiver.client_id} stopped: received {m['received']}, "
              f"stored {m['stored']}, duplicates {m['duplicates']}, "
              f"rejects {sum(receiver.rejects.values())}, errors {m['errors']}", flush=True)
    return 0


def _announce(receiver: Any, db: str) -> None:
    """Print that the receiver is subscribed (operators and tests wait for this line)."""
    from cimedge.cloud_sync.receiver.store import is_postgres_url

    where = db
    if is_postgres_url(db):
        from cimedge.cloud_sync.receiver.pgstore import describe

        where = describe(db)
    acks = (f"v2 acks signed by ingest key {receiver.ingest.current().kid.hex()}"
            if receiver.ingest else "v2 acks UNSIGNED (no --ingest-key): v2 gateways ignore them")
    print(f"receiver {receiver.client_id} ready: $share/{receiver.group}/cim/v1/+/batch|event "
          f"on {receiver.host}:{receiver.port}, store {where}; {acks}", flush=True)


async def _with_metrics(receiver: Any, every: float | None) -> None:
    """Run the receiver, printing its counters as a JSON line every `every` seconds."""
    import asyncio
    import contextlib

    def line() -> None:
        print(json.dumps({"t": round(time.time(), 3), **{
            k: dict(v) if isinstance(v, dict) else v for k, v in receiver.metrics.items()}}),
            flush=True)

    async def report() -> None:
        while True:
            await asyncio.sleep(every or 0)
            line()

    task = asyncio.create_task(report(), name="metrics") if every else None
    try:
        await receiver.run()
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            line()  # the final counters, however short the run was


@_to_stdout
def stats(args: argparse.Namespace) -> int:
    from cimedge.cloud_sync.receiver.store import open_store
    from cimedge.cloud_sync.receiver.views import stats_json, stats_lines

    store = open_store(args.db, readonly=True)
    try:
        per_dev = store.stats()
        unknown: dict[str, int] = {}
        for (reason, dev), n in store.rejects().items():
            if not dev:
                unknown[reason] = unknown.get(reason, 0) + n
        if args.json:
            print(json.dumps(stats_json(per_dev, unknown, store.schema_version), indent=2))
        else:
            print("\n".join(stats_lines(per_dev, unknown, max(0, args.gaps))))
    finally:
        store.close()
    return 0


@_to_stdout
def export(args: argparse.Namespace) -> int:
    from cimedge.cloud_sync.receiver.store import open_store
    from cimedge.cloud_sync.receiver.views import write_csv

    store = open_store(args.db, readonly=True)
    try:
        rows = store.iter_readings(args.dev, args.since, args.until)
        if args.out is None:
            write_csv(rows, sys.stdout)
            return 0
        try:
            with open(args.out, "w", encoding="utf-8", newline="") as out:
                n = write_csv(rows, out)
        except OSError as e:
            raise OptionError("--out", f"cannot write {args.out}: {e.strerror}") from None
        print(f"wrote {n} readings of {args.dev} to {args.out}", file=sys.stderr)
    finally:
        store.close()
    return 0


@_to_stdout
def fleet(args: argparse.Namespace) -> int:
    from cimedge.cloud_sync.receiver.fleet import fleet_lines, fleet_rows
    from cimedge.cloud_sync.receiver.fleetdb import FleetDB
    from cimedge.cloud_sync.receiver.registry import open_registry
    from cimedge.cloud_sync.receiver.store import open_store

    registry = open_registry(_registry_target(args), readonly=True)
    try:
        keys = registry.list()
    finally:
        registry.close()
    store = open_store(args.db, readonly=True)
    try:
        now = time.time()
        rows = fleet_rows(keys, FleetDB(store), now, dict(args.silent_after))
    finally:
        store.close()
    if args.json:
        print(json.dumps({"generated": now, "gateways": [r.as_json() for r in rows]}, indent=2))
    else:
        print("\n".join(fleet_lines(rows, now)))
    return 0


def registry_add(args: argparse.Namespace) -> int:
    from cimedge.cloud_sync.receiver.registry import open_registry, read_enrollment_file

    records = [(read_enrollment_file(path), str(path)) for path in args.enrollment]
    registry = open_registry(_registry_target(args))
    try:
        added = registry.add_enrollments(records)  # all or none
    finally:
        registry.close()
    for e in added:
        print(f"added {e.device_id} (kid {e.kid.hex()})")
    return 0


@_to_stdout
def registry_list(args: argparse.Namespace) -> int:
    from cimedge.cloud_sync.receiver.registry import open_registry
    from cimedge.cloud_sync.receiver.views import key_json, key_lines

    registry = open_registry(_registry_target(args), readonly=True)
    try:
        keys, now = registry.list(), time.time()
    finally:
        registry.close()
    if args.json:
        print(json.dumps([key_json(k, now) for k in keys], indent=2))
    elif keys:
        print("\n".join(key_lines(keys, now)))
    else:
        print("(no keys enrolled)")
    return 0


def registry_revoke(args: argparse.Namespace) -> int:
    from cimedge.cloud_sync.receiver.registry import open_registry

    registry = open_registry(_registry_target(args))
    try:
        n = registry.revoke(args.target)
    finally:
        registry.close()
    print(f"revoked {n} key{'s' if n != 1 else ''} of {args.target}" if n else
          f"{args.target}: already revoked")
    return 0


def registry_rotate(args: argparse.Namespace) -> int:
    from cimedge.cloud_sync.receiver.registry import open_registry, read_enrollment_file

    record = read_enrollment_file(args.enrollment)
    registry = open_registry(_registry_target(args))
    try:
        retired = registry.rotate(record, args.after_seq, source=str(args.enrollment))
    finally:
        registry.close()
    print(f"{record['device_id']}: new key {record['kid']} active; "
          + (f"retired {', '.join(retired)} after seq {args.after_seq}" if retired
             else "no active key to retire"))
    return 0
