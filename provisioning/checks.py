"""The installation checks behind `cimedge doctor`: each returns results with a fix, never raises.

A check reads files and asks devices and the broker; it never writes into the state dir. While
the daemon runs, the devices and serial lines are its own (two masters on one RS-485 line
garble each other's frames), so their checks read its status.json instead of polling.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import ssl
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cimedge.cloud_sync.cose import kid_for
from cimedge.edge import config as site_config
from cimedge.edge.errors import CimEdgeError, ConfigError
from cimedge.edge.wallclock import FLOOR_NS
from cimedge.provisioning import bufferdb, certs, identity

MIN_FREE = 32 << 20  # bytes free on the buffer's file system below which doctor fails
FUTURE_SLACK_S = 300  # a state file dated this far ahead means the clock went back


@dataclass
class Result:
    check: str
    status: str  # "pass" | "fail" | "warn" | "skip"
    detail: str
    fix: str = ""


@dataclass
class Context:
    config: Path
    state: Path
    timeout: float
    site: site_config.Site | None = None
    daemon: dict[str, Any] | None = None  # status.json of a running daemon
    answered: dict[str, bool] = field(default_factory=dict)  # device -> answered


def ok(check: str, detail: str) -> Result:
    return Result(check, "pass", detail)


def fail(check: str, detail: str, fix: str) -> Result:
    return Result(check, "fail", detail, fix)


def warn(check: str, detail: str, fix: str = "") -> Result:
    return Result(check, "warn", detail, fix)


# -- config and identity --------------------------------------------------------------------
def config(ctx: Context) -> list[Result]:
    try:
        ctx.site = site_config.load(ctx.config)
    except ConfigError as e:
        missing = not ctx.config.exists()
        return [fail("config", str(e), f"run: cimedge provision --site-type TYPE --device-id ID "
                                       f"--state-dir {ctx.state}" if missing else
                     "correct that line (cimedge provision writes a valid one from the "
                     "site template)")]
    s = ctx.site
    n = sum(len(d.config.points) for d in s.devices.values())
    ctx.daemon = _running_daemon(s.path(s.store.path).parent)
    return [ok("config", f"{ctx.config} is valid: {s.gateway.device_id} ({s.gateway.site_type}), "
                         f"{len(s.devices)} devices, {n} points, {len(s.rules)} rules")]


def _running_daemon(state: Path) -> dict[str, Any] | None:
    from cimedge.provisioning import status

    try:
        report = status.read(state)
    except CimEdgeError:
        return None
    return report.get("daemon") if report.get("running") else None


def key(ctx: Context) -> list[Result]:
    path = ctx.site.path(ctx.site.gateway.key_file) if ctx.site else ctx.state / "device.key"
    if not path.exists():
        return [fail("key", f"no device key at {path}",
                     f"run: cimedge provision ... --state-dir {path.parent} (a new gateway), "
                     "or restore device.key from its backup")]
    try:
        k = identity.load_key(path)
    except CimEdgeError as e:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            return [fail("key", str(e).split("; run:")[0], f"run: chmod 600 {path}")]
        return [fail("key", str(e), "restore device.key from its backup, or make a new "
                                    "identity (cimedge provision --force) and enroll it again")]
    kid = kid_for(k.public_key().public_bytes_raw()).hex()
    out = [ok("key", f"{path}: Ed25519, mode 600, kid {kid}")]
    enroll = path.parent / "enrollment.json"
    try:
        record = json.loads(enroll.read_text())
    except (OSError, ValueError):
        out.append(warn("key", f"no readable enrollment record at {enroll}",
                        f"ask operations whether the registry lists kid {kid} "
                        "(cimedge registry list)"))
        return out
    if record.get("kid") != kid:
        pending = (path.parent / "enrollment.next.json").exists()
        out[0] = fail("key", f"{path.name} (kid {kid}) does not match {enroll.name} (kid "
                             f"{record.get('kid')}): the registry would refuse its batches",
                      "finish the pending rotation: cimedge rotate-key --confirm" if pending
                      else "restore the matching key, or enroll this one: cimedge provision "
                           "--force, then cimedge registry add enrollment.json")
    if (path.parent / "device.key.next").exists():
        out.append(warn("key", "a key rotation is pending (device.key.next)",
                        "once the registry lists the new kid: cimedge rotate-key --confirm"))
    return out


def tls(ctx: Context) -> list[Result]:
    s = ctx.site
    assert s is not None
    sync = s.sync
    if not sync.broker.startswith("mqtts://") and not sync.cert_file:
        return [warn("tls", f"the uplink {sync.broker} is not encrypted",
                     "use mqtts:// with a client certificate (cimedge provision --broker "
                     "mqtts://HOST:8883)")]
    out: list[Result] = []
    if sync.password_file:
        out += _secret_file("tls", s.path(sync.password_file), "[sync] password_file")
    if not sync.cert_file:
        return [*out, warn("tls", "no client certificate: the broker must know this gateway "
                                  "by a password", "mutual TLS: set [sync] cert_file and "
                                                   "key_file (cimedge provision writes them)")]
    return out + (_tls_files(s) or _tls_certificate(s))


def _tls_files(s: site_config.Site) -> list[Result]:
    """Failures for missing TLS files or a key others can read; [] when all are there."""
    sync = s.sync
    cert_path = s.path(sync.cert_file)
    wanted = [("[sync] cert_file", cert_path)]
    if sync.ca_file:
        wanted.insert(0, ("[sync] ca_file", s.path(sync.ca_file)))
    for what, p in wanted:
        if not p.exists():
            fix = ("have tls.csr signed by the city CA and save it here (test CA: cimedge ca "
                   f"sign {p.with_name('tls.csr')} --ca-dir DIR)") if p == cert_path else \
                "copy the broker's CA certificate here"
            return [fail("tls", f"{what} {p} does not exist", fix)]
    return _secret_file("tls", s.path(sync.key_file), "[sync] key_file") if sync.key_file \
        else []


def _tls_certificate(s: site_config.Site) -> list[Result]:
    """The client certificate: its key, its name, its validity and its issuer."""
    sync = s.sync
    cert_path = s.path(sync.cert_file)
    key_path = s.path(sync.key_file) if sync.key_file else cert_path
    try:
        cert = certs.load_cert(cert_path)
        tkey = certs.load_key(key_path)
        ca_cert = certs.load_cert(s.path(sync.ca_file)) if sync.ca_file else None
    except CimEdgeError as e:
        return [fail("tls", str(e), "replace the file with the one provisioning made")]
    now, cn, dev = time.time(), certs.common_name(cert.subject), s.gateway.device_id
    after, before = cert.not_valid_after_utc, cert.not_valid_before_utc
    if not certs.same_key(cert, tkey):
        return [fail("tls", f"{cert_path.name} is not the certificate of {key_path.name}",
                     f"have this gateway's tls.csr signed and save the result as {cert_path}")]
    if cn != dev:
        return [fail("tls", f"{cert_path.name} is for {cn!r}, not {dev!r}: the broker's ACL "
                            f"would refuse cim/v1/{dev}/", "have this gateway's own tls.csr "
                                                            "signed")]
    if now > after.timestamp():
        return [fail("tls", f"{cert_path.name} expired on {after:%Y-%m-%d}",
                     "renew it: have tls.csr signed again (and check the clock)")]
    if now < before.timestamp():
        return [fail("tls", f"{cert_path.name} is valid only from {before:%Y-%m-%d %H:%M} UTC",
                     "check the clock (cimedge doctor's clock line)")]
    out = [ok("tls", f"client certificate CN={cn}, valid until {after:%Y-%m-%d}, key EC "
                     "P-256 mode 600")]
    days = (after.timestamp() - now) / 86400
    if days < 30:  # noqa: PLR2004
        out.append(warn("tls", f"{cert_path.name} expires in {days:.0f} days",
                        "renew it: have tls.csr signed again"))
    if ca_cert is not None and not certs.issued_by(cert, ca_cert):
        out.append(warn("tls", f"{cert_path.name} was not issued by {sync.ca_file} (fine if "
                               "the broker trusts another CA for clients)"))
    return out


def _secret_file(check: str, path: Path, what: str) -> list[Result]:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as e:
        return [fail(check, f"{what} {path}: {e.strerror}", "restore the file provisioning made")]
    if mode & 0o077:
        return [fail(check, f"{what} {path} is readable by others (mode {mode:o})",
                     f"run: chmod 600 {path}")]
    if not os.access(path, os.R_OK):
        return [fail(check, f"{what} {path} is not readable by this user",
                     f"run the gateway as the file's owner, or: chown $USER {path}")]
    return []


# -- field side -----------------------------------------------------------------------------
def serial_ports(ctx: Context) -> dict[str, list[str]]:
    """Serial port path -> names of the devices on it."""
    assert ctx.site is not None
    ports: dict[str, list[str]] = {}
    for name, dev in ctx.site.devices.items():
        port = getattr(dev.config, "port", None)
        if isinstance(port, str):
            ports.setdefault(port, []).append(name)
    return ports


def serial_exists(ctx: Context, port: str) -> Result | None:
    """A failure when ``port`` is missing or cannot be opened; None when it opens."""
    check = f"serial {port}"
    if not os.path.exists(port):
        return fail(check, f"no such serial port {port}",
                    "plug in the USB-RS-485 adapter; `ls /dev/serial/by-id/` names it; then "
                    "set that path as the devices' port in the site config")
    if not stat.S_ISCHR(os.stat(port).st_mode):
        return fail(check, f"{port} is not a serial device", "set the adapter's /dev path")
    if ctx.daemon is not None:
        return None  # the daemon holds it: do not open it under it
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except PermissionError:
        return fail(check, f"this user may not open {port}",
                    "add the user to the port's group: sudo usermod -aG dialout $USER, "
                    "then log in again")
    except OSError as e:
        return fail(check, f"cannot open {port}: {e.strerror}", "unplug and replug the adapter")
    os.close(fd)
    return None


def serial_answer(port: str, names: list[str], answered: dict[str, bool]) -> Result:
    check = f"serial {port}"
    heard = [n for n in names if answered.get(n)]
    if heard:
        return ok(check, f"{port}: {len(heard)} of {len(names)} devices answer "
                         f"({', '.join(heard)})")
    return fail(check, f"nothing answers on {port} ({', '.join(names)} configured)",
                "check the A/B wiring and polarity, termination, that the devices are "
                "powered, and the baud rate and parity in the site config")


def devices(ctx: Context) -> list[Result]:
    assert ctx.site is not None
    if ctx.daemon is not None:
        return [_from_daemon(ctx, name) for name in ctx.site.devices]
    return asyncio.run(_poll_all(ctx))


def _from_daemon(ctx: Context, name: str) -> Result:
    assert ctx.daemon is not None
    h = (ctx.daemon.get("devices") or {}).get(name) or {}
    state = h.get("state", "unknown")
    ctx.answered[name] = state in ("ok", "degraded")
    pid = ctx.daemon.get("pid")
    if state == "ok":
        return ok(f"device {name}", f"answers (the running gateway, pid {pid}, polls it)")
    if state in ("unknown", "") or not h:
        return warn(f"device {name}", f"the running gateway (pid {pid}) has not polled it yet")
    return fail(f"device {name}", f"{state} in the running gateway (pid {pid}): "
                                  f"{h.get('reason') or 'no reason given'}",
                _device_fix(ctx.site.devices[name].config))  # type: ignore[union-attr]


async def _poll_all(ctx: Context) -> list[Result]:
    assert ctx.site is not None
    # Devices on one serial line take turns inside the driver's bus; TCP ones go in parallel.
    return list(await asyncio.gather(*(_poll(ctx, n) for n in ctx.site.devices)))


async def _poll(ctx: Context, name: str) -> Result:
    import msgspec

    from cimedge import drivers
    assert ctx.site is not None
    dev = ctx.site.devices[name]
    cfg = dev.config
    if hasattr(cfg, "timeout_s"):
        cfg = msgspec.structs.replace(cfg, timeout_s=min(cfg.timeout_s, ctx.timeout))
    try:
        async with asyncio.timeout(ctx.timeout * 3 + 1):
            async with drivers.load(dev.driver).Driver(name, cfg) as drv:
                readings = await drv.read()
                health = drv.health()
    except TimeoutError:
        readings, health = [], None
    except Exception as e:  # noqa: BLE001 - any driver's failure is this check's result
        ctx.answered[name] = False
        return fail(f"device {name}", str(e) or type(e).__name__, _device_fix(dev.config))
    bad = [r.point for r in readings if r.quality.name == "COMM"]
    ctx.answered[name] = bool(readings) and len(bad) < len(readings)
    reason = (health.reason if health else "").split("; next ")[0] or \
        f"no answer within {ctx.timeout} s"
    if not readings or len(bad) == len(readings):
        listen = getattr(cfg, "listen_host", "")
        if listen and "listen" not in reason and "password" not in reason:
            # a station that reports to the gateway does so on its own schedule
            return warn(f"device {name}", f"listening on {listen}:{cfg.listen_port}; no report "
                                          f"from the station yet ({reason})")
        return fail(f"device {name}", f"no answer: {reason}", _device_fix(dev.config))
    if bad:
        return fail(f"device {name}", f"{len(bad)} of {len(readings)} points failed "
                                      f"({', '.join(bad[:5])}): {reason}",
                    "check those points' addresses and types against the device's register map")
    return ok(f"device {name}", f"answers: {len(readings)} points read")


def _device_fix(cfg: Any) -> str:  # noqa: ANN401 - any driver's config struct
    if getattr(cfg, "listen_host", ""):
        return (f"set the station to report to this gateway's {cfg.listen_host}:"
                f"{cfg.listen_port}, with the password in {cfg.password_file}")
    if isinstance(getattr(cfg, "port", None), str):
        return (f"check that the device is powered and wired to {cfg.port}, that its address "
                f"is {getattr(cfg, 'unit', '?')} and that it talks {getattr(cfg, 'baudrate', '?')} "
                f"baud {getattr(cfg, 'parity', 'N')}")
    host = getattr(cfg, "host", "")
    return (f"check that {host}:{getattr(cfg, 'port', '?')} is reachable from the gateway "
            f"(cable, IP settings) and that the unit id is {getattr(cfg, 'unit', '?')}")


# -- uplink, clock, disk, buffer --------------------------------------------------------------
def broker(ctx: Context) -> list[Result]:
    from cimedge.cloud_sync.transport import parse_broker
    from cimedge.provisioning.mqttprobe import ProbeError, probe

    assert ctx.site is not None
    s, sync = ctx.site, ctx.site.sync
    host, port, use_tls = parse_broker(sync.broker)
    try:
        context = _tls_context(s) if use_tls or sync.ca_file else None
        password = s.path(sync.password_file).read_bytes().strip() if sync.password_file else b""
    except (OSError, ssl.SSLError, ValueError) as e:
        return [fail("broker", f"cannot load the TLS files or password: {e}",
                     "fix the tls line above first")]
    try:
        took = probe(host, port, tls=context, client_id=f"cimedge-doctor-{os.getpid()}",
                     username=sync.username, password=password, timeout=ctx.timeout)
    except ProbeError as e:
        return [fail("broker", str(e), _BROKER_FIX[e.kind].format(url=sync.broker))]
    how = "mutual TLS" if sync.cert_file and context else "TLS" if context else "plain TCP"
    return [ok("broker", f"{sync.broker} accepts this gateway ({how}, {took * 1000:.0f} ms)")]


_BROKER_FIX = {
    "dns": "check [sync] broker and the gateway's DNS (resolv.conf, the modem's APN)",
    "refused": "check the host and port in [sync] broker ({url}) and that the broker runs",
    "timeout": "check the uplink (modem signal, APN, firewall) and the port in {url}",
    "tls_verify": "set [sync] ca_file to the CA that signed the broker's certificate, "
                  "check the host name in {url} and the clock",
    "tls_refused": "have tls.csr signed by the CA the broker trusts for clients and save it "
                   "as [sync] cert_file",
    "tls": "check that {url} is a TLS port (8883) and the TLS files in [sync]",
    "auth": "the broker does not accept this gateway: check its certificate's CN (the device "
            "id), [sync] username/password_file, and the broker's user list",
    "protocol": "check that {url} is an MQTT 5 broker",
}


def _tls_context(s: site_config.Site) -> ssl.SSLContext:
    sync = s.sync
    context = ssl.create_default_context(cafile=str(s.path(sync.ca_file)) if sync.ca_file
                                         else None)
    if sync.cert_file:
        context.load_cert_chain(str(s.path(sync.cert_file)),
                                str(s.path(sync.key_file)) if sync.key_file else None)
    return context


def clock(ctx: Context) -> list[Result]:
    now = time.time()
    fix = ("set the time: sudo timedatectl set-ntp true (or date -s); readings are stamped "
           "with it and TLS certificates are checked against it")
    if now * 1e9 < FLOOR_NS:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(now))
        return [fail("clock", f"the clock reads {when} UTC, before 2025: the real-time clock "
                              "was reset", fix)]
    ahead = [(p, p.stat().st_mtime - now) for p in _state_files(ctx)
             if p.stat().st_mtime - now > FUTURE_SLACK_S]
    if ahead:
        p, d = max(ahead, key=lambda t: t[1])
        return [fail("clock", f"the clock went back: {p.name} was written {d:.0f} s in the "
                              "future of this clock", fix)]
    out = [ok("clock", f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(now))} UTC")]
    c = (ctx.daemon or {}).get("clock") or {}
    if c.get("invalid"):
        out[0] = fail("clock", "the running gateway sees an invalid wall clock", fix)
    elif c.get("steps"):
        out.append(warn("clock", f"the running gateway saw the clock step {c['steps']} times",
                        "check NTP: a clock that keeps stepping has a bad source"))
    sync = _ntp_synchronised()
    if sync is False:
        out.append(warn("clock", "NTP has not synchronised the clock",
                        "sudo timedatectl set-ntp true; check that UDP 123 or the modem's "
                        "NTP server is reachable"))
    return out


def _state_files(ctx: Context) -> list[Path]:
    try:
        return [p for p in ctx.state.iterdir() if p.is_file()]
    except OSError:
        return []


def _ntp_synchronised() -> bool | None:
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "show", "-p", "NTPSynchronized", "--value"],  # noqa: S603
                             capture_output=True, text=True, timeout=2, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = out.stdout.strip()
    return {"yes": True, "no": False}.get(value) if out.returncode == 0 else None


def disk(ctx: Context) -> list[Result]:
    assert ctx.site is not None
    db = ctx.site.path(ctx.site.store.path)
    where = db.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    if not os.access(where, os.W_OK):
        return [fail("disk", f"this user cannot write {where}",
                     f"run the gateway as the owner of {where}, or: chown -R $USER {where}")]
    st = os.statvfs(where)
    free = st.f_bavail * st.f_frsize
    q = ctx.site.store.quota_bytes
    if free < MIN_FREE:
        return [fail("disk", f"only {free >> 20} MiB free on the file system of {where}",
                     "free space there (old logs, a moved-aside buffer), or move the state dir "
                     "to a bigger partition")]
    out = [ok("disk", f"{free >> 20} MiB free at {where}"
                      + (f", quota {q >> 20} MiB" if q else ""))]
    used = _used(db)
    if not q:
        out.append(warn("disk", "no [store] quota_bytes: a long outage can fill the disk",
                        f"set [store] quota_bytes, e.g. {min(free // 2, 1 << 30)}"))
    elif q > free + used:
        out.append(warn("disk", f"the quota ({q >> 20} MiB) is more than the free space "
                                f"({(free + used) >> 20} MiB): the buffer fills the disk first",
                        f"lower [store] quota_bytes to {(free + used) // 2}"))
    elif used > 0.9 * q:
        out.append(warn("disk", f"the buffer uses {100 * used / q:.0f}% of its quota: the "
                                "oldest unsent readings are being evicted",
                        "check the uplink (cimedge status), or raise the quota"))
    return out


def _used(db: Path) -> int:
    from cimedge.edge import quota

    if not db.exists():
        return 0
    try:
        con = bufferdb.connect(db)
        try:
            return quota.used_bytes(con)
        finally:
            con.close()
    except (CimEdgeError, sqlite3.Error):
        return 0


def buffer(ctx: Context) -> list[Result]:
    assert ctx.site is not None
    db = ctx.site.path(ctx.site.store.path)
    fix = ("restart the gateway: it moves a damaged buffer aside (kept for support) and "
           "starts a new one; unsent readings in it are lost")
    out: list[Result] = []
    aside = sorted(p for p in db.parent.glob(db.name + ".corrupt-*")
                   if not p.name.endswith(("-wal", "-shm")))
    if aside:
        out.append(warn("buffer", f"a damaged buffer was moved aside: {aside[-1].name}",
                        "send it to support, then delete it to free the space"))
    if not db.exists():
        return [ok("buffer", f"no buffer yet at {db} (the gateway creates it)"), *out]
    try:
        con = bufferdb.connect(db)
    except CimEdgeError as e:
        return [fail("buffer", str(e), fix), *out]
    try:
        check = con.execute("PRAGMA quick_check").fetchone()[0]
        m = bufferdb.meta(con)
        unacked = con.execute("SELECT count(*) FROM batches").fetchone()[0]
        lo = con.execute("SELECT min(id) FROM readings").fetchone()[0]
        oldest = con.execute("SELECT ts_ns FROM readings WHERE id = ?", (lo,)).fetchone() \
            if lo else None
    except sqlite3.DatabaseError as e:
        return [fail("buffer", f"{db} is damaged: {e}", fix), *out]
    finally:
        con.close()
    if check != "ok":
        return [fail("buffer", f"{db} failed its integrity check: {check}", fix), *out]
    age = time.time() - oldest[0] / 1e9 if oldest else 0.0
    out.insert(0, ok("buffer", f"integrity ok; {m.get('readings', 0)} readings, {unacked} "
                               f"batches unacked, next seq {m.get('next_seq')}"))
    if age > 86400:  # noqa: PLR2004
        out.append(warn("buffer", f"the oldest unacknowledged reading is {age / 3600:.0f} h old",
                        "check the uplink: cimedge status, and the broker line above"))
    return out

