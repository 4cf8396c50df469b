"""Web view benchmark: the fleet page and API over 1,000 simulated gateways, a 24-hour chart
of a 1-s point, and the start-up and memory of `receiver run` with and without --http.

1. A store (SQLite file, or --pg URL) with `--gateways` gateways of tools/fleet.py, each
   with `--batches` batches of 50 readings, a status for two in three, an alarm raised for
   one in ten; plus one gateway with 24 hours of one point at 1 s (86,400 readings).
2. The real server (uvicorn, as `receiver web` runs it) on loopback; each request is timed
   from send to the last byte of the answer, `--rounds` times, after one warm-up; medians
   and p90 are printed.
3. Start-up: `cimedge receiver run` against a private Mosquitto, time from exec to its
   ready line(s) and its RSS then, without and with `--http 127.0.0.1:0`.
4. What schema 3's indexes cost the store: the same commits with them and without.

    .venv/bin/python -m bench.web_bench                   # SQLite
    .venv/bin/python -m bench.web_bench --pg postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "receiver"))

DAY = 86_400


def populate(db: str, registry: Path, gateways: int, batches: int) -> tuple[str, float]:
    """Fill the store; return the device with a day of 1-s data and the day's end."""
    import cbor2

    from cimedge.cloud_sync.cose import sign1
    from cimedge.cloud_sync.receiver.fleetdb import FleetDB
    from cimedge.cloud_sync.receiver.registry import Registry
    from cimedge.cloud_sync.receiver.status import decode_status
    from cimedge.cloud_sync.receiver.store import open_store
    from cimedge.cloud_sync.senml import batch_payload, encode_pack, event_payload
    from cimedge.cloud_sync.verify import verify_message
    from cimedge.edge.model import Event, Reading
    from cimedge.tools.fleet import Fleet

    fleet = Fleet(gateways, seed="web-bench")
    fleet.enroll(registry)
    reg = Registry(registry, readonly=True)
    store = open_store(db)
    now = time.time()
    msgs = fleet.build(batches, 50, interval=60.0, t0=now - batches * 60)
    for i in range(0, len(msgs), 500):
        store.commit([verify_message(m.dev, "batch", m.payload, reg.lookup, now=now)
                      for m in msgs[i:i + 500]])
    fdb = FleetDB(store)
    events = []
    for i, g in enumerate(fleet.gateways):
        if i % 3:
            fdb.record_status(decode_status(g.dev, cbor2.dumps(
                {"online": i % 7 != 0, "sw": "1.4.0", "backlog": i, "oldest_unacked_s": 2.0})),
                time.time_ns(), live=True)
        if i % 10 == 0:
            g.seq += 1
            evt = [Event(int((now - 30) * 1e9), "well.level", "raise", "high", "high", 4.0)]
            events.append(verify_message(g.dev, "event", sign1(event_payload(
                g.dev, g.seq, now, evt), g.key), reg.lookup, now=now))
    store.commit(events)
    day = fleet.gateways[2]  # a pump station: one point at 1 s for 24 hours
    start = now - DAY
    for k in range(0, DAY, 3600):
        g_readings = [Reading("well.level", int((start + k + i) * 1e9),
                              2 + ((k + i) % 3000) / 1000) for i in range(3600)]
        day.seq += 1
        data = sign1(batch_payload(day.dev, day.seq, start + k + 3600, encode_pack(
            day.dev, g_readings, {"well.level": "m"})), day.key)
        store.commit([verify_message(day.dev, "batch", data, reg.lookup, now=now)])
    store.close()
    reg.close()
    return day.dev, now


def timed(client: object, path: str, rounds: int, headers: dict[str, str]) -> list[float]:
    out = []
    client.request("GET", path, headers=headers)  # type: ignore[attr-defined]  # warm-up
    for _ in range(rounds):
        t = time.perf_counter()
        status, _, _ = client.request("GET", path, headers=headers)  # type: ignore[attr-defined]
        out.append(time.perf_counter() - t)
        assert status == 200, (path, status)  # noqa: S101
    return out


def web_figures(db: str, registry: Path, tmp: Path, rounds: int, dev: str,
                end: float) -> list[tuple[str, list[float]]]:
    from webkit import Client, ServerThread

    from cimedge.cloud_sync.receiver.web.app import Web
    from cimedge.cloud_sync.receiver.web.serve import bind, make_app
    from cimedge.cloud_sync.receiver.web.webstate import WebState

    state = WebState(tmp / "web.sqlite") if not db.startswith("postgres") else WebState(db)
    token = state.add_token(f"bench-{uuid.uuid4().hex[:6]}", "read-only")
    web = Web(db, str(registry), state)
    sock = bind("127.0.0.1:0", tls=False, plaintext=False)
    server = ServerThread(make_app(web, sock), sock)
    client = Client(server.port)
    auth = {"Authorization": f"Bearer {token}"}
    try:
        return [
            ("GET /api/v1/fleet (1,000 gateways)", timed(client, "/api/v1/fleet", rounds, auth)),
            ("GET /api/v1/fleet?state=silent", timed(client, "/api/v1/fleet?state=silent",
                                                     rounds, auth)),
            ("GET /api/v1/alarms", timed(client, "/api/v1/alarms", rounds, auth)),
            ("GET /metrics (1,000 gateways)", timed(client, "/metrics", rounds, auth)),
            (f"GET /api/v1/gateways/{dev}", timed(client, f"/api/v1/gateways/{dev}", rounds,
                                                 auth)),
            ("24 h chart of a 1-s point (86,400 readings, 1,400 columns)", timed(
                client, f"/api/v1/gateways/{dev}/series?point=well.level&since={end - DAY}"
                        f"&until={end}&width=1400", rounds, auth)),
            ("1 h chart of the same point (3,600 readings)", timed(
                client, f"/api/v1/gateways/{dev}/series?point=well.level&since={end - 3600}"
                        f"&until={end}&width=1400", rounds, auth)),
        ]
    finally:
        server.stop()
        web.close()
        state.close()


def startup(tmp: Path) -> list[tuple[str, float, float]]:
    """(what, seconds to ready, RSS MiB at ready) of `receiver run` without and with --http."""
    from cimedge.tools.broker import Mosquitto

    out = []
    broker = Mosquitto(workdir=tmp / "mosquitto")
    (tmp / "mosquitto").mkdir()
    broker.start()
    try:
        for extra, lines in (([], ["ready:"]), (["--http", "127.0.0.1:0"],
                                                ["ready:", "web ready:"])):
            db = tmp / f"start-{uuid.uuid4().hex[:6]}.sqlite"
            from cimedge.cloud_sync.receiver.registry import Registry
            Registry(db.with_name("registry.sqlite")).close()
            t = time.perf_counter()
            p = subprocess.Popen([sys.executable, "-m", "cimedge.provisioning.cli", "receiver",
                                  "run", "--broker", broker.url, "--db", str(db), *extra],
                                 stdout=subprocess.PIPE, text=True, cwd=ROOT)
            seen: list[str] = []
            assert p.stdout is not None  # noqa: S101
            while not all(any(w in s for s in seen) for w in lines):
                seen.append(p.stdout.readline())
            took = time.perf_counter() - t
            rss = next(int(x.split()[1]) for x in Path(f"/proc/{p.pid}/status").read_text()
                       .splitlines() if x.startswith("VmRSS:")) / 1024
            p.terminate()
            p.wait(20)
            out.append(("receiver run" + (" --http" if extra else ""), took, rss))
    finally:
        broker.close()
    return out


_NEW_INDEXES = ("readings_by_point_time", "messages_by_dev_received", "events_by_alarm")


def index_cost(tmp: Path, pg: str | None, rounds: int = 3) -> list[tuple[str, str, float]]:
    """Store commits of 2,000 batches of 100 readings (64 a transaction), with schema 3's
    indexes and with them dropped, A B A B: (store, which, readings/s median)."""
    from cimedge.cloud_sync.receiver.registry import Registry
    from cimedge.cloud_sync.receiver.store import open_store
    from cimedge.cloud_sync.verify import verify_message
    from cimedge.tools.fleet import Fleet

    fleet = Fleet(200, seed="index-cost")
    fleet.enroll(tmp / "idx-registry.sqlite")
    reg = Registry(tmp / "idx-registry.sqlite", readonly=True)
    now = time.time()
    vs = [verify_message(m.dev, "batch", m.payload, reg.lookup, now=now)
          for m in fleet.build(10, 100)]
    reg.close()

    def once(target: str, drop: bool) -> float:  # noqa: FBT001
        store = open_store(target)
        conn = getattr(store, "_db", None) or store._live()  # type: ignore[attr-defined]  # noqa: SLF001
        for name in _NEW_INDEXES if drop else ():
            conn.execute(f"DROP INDEX {name}")
        t = time.perf_counter()
        for i in range(0, len(vs), 64):
            store.commit(vs[i:i + 64])
        took = time.perf_counter() - t
        store.close()
        return len(vs) * 100 / took

    out: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for drop in (True, False):
            which = "schema 2 indexes" if drop else "schema 3 indexes"
            out.setdefault(("SQLite", which), []).append(
                once(str(tmp / f"idx-{uuid.uuid4().hex[:6]}.sqlite"), drop))
            if pg:
                import psycopg

                name = f"cim_idx_{uuid.uuid4().hex[:8]}"
                with psycopg.connect(pg, autocommit=True) as admin:
                    admin.execute(f'CREATE DATABASE "{name}"')
                try:
                    out.setdefault(("PostgreSQL", which), []).append(
                        once(pg.rsplit("/", 1)[0] + f"/{name}", drop))
                finally:
                    with psycopg.connect(pg, autocommit=True) as admin:
                        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return [(store, which, statistics.median(xs)) for (store, which), xs in sorted(out.items())]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gateways", type=int, default=1000)
    p.add_argument("--batches", type=int, default=5)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--pg", metavar="ADMIN_URL", help="also run on PostgreSQL (a database is "
                                                     "created there and dropped)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="web-bench-") as d:
        tmp = Path(d)
        targets = [("SQLite", str(tmp / "rx.sqlite"), tmp / "registry.sqlite")]
        pg_name = f"cim_webbench_{uuid.uuid4().hex[:8]}"
        if args.pg:
            import psycopg

            with psycopg.connect(args.pg, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{pg_name}"')
            url = args.pg.rsplit("/", 1)[0] + f"/{pg_name}"
            targets.append(("PostgreSQL", url, tmp / "pg-registry.sqlite"))
        try:
            for name, db, registry in targets:
                t = time.perf_counter()
                dev, end = populate(db, registry, args.gateways, args.batches)
                print(f"\n{name}: filled in {time.perf_counter() - t:.1f} s "
                      f"({args.gateways} gateways x {args.batches} batches x 50 readings, "
                      f"and {dev} with a day at 1 s)")
                print(f"{'request':62} {'median':>9} {'p90':>9}")
                for what, xs in web_figures(db, registry, tmp, args.rounds, dev, end):
                    xs.sort()
                    print(f"{what:62} {statistics.median(xs) * 1e3:7.1f} ms "
                          f"{xs[int(0.9 * len(xs))] * 1e3:7.1f} ms")
        finally:
            if args.pg:
                import psycopg

                with psycopg.connect(args.pg, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        print(f"\n{'start-up':30} {'to ready':>9} {'RSS':>9}")
        for what, took, rss in startup(tmp):
            print(f"{what:30} {took:7.2f} s {rss:6.1f} MiB")
        print("\nstore commits (2,000 batches of 100 readings, 64 per transaction, median of 3)")
        for store, which, rate in index_cost(tmp, args.pg):
            print(f"{store:12} {which:18} {rate:9,.0f} readings/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
