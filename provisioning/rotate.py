"""`cimedge rotate-key`: a new device key, used from the moment the registry has confirmed it.

Two steps, because the gateway must never sign with a key the registry does not know
(the receiver would refuse those batches until it did) and must never sign a seq above
the one the old key is retired after (the receiver would refuse those for good):

1. ``cimedge rotate-key`` writes ``device.key.next`` (0600) and ``enrollment.next.json``.
   Operations enroll it (``cimedge registry add enrollment.next.json``): the device now has
   two valid keys. The gateway still signs with the old one.
2. ``cimedge rotate-key --confirm``, once ``cimedge registry list`` shows the new kid active
   (``--registry`` checks that itself where the registry is reachable): the new key
   replaces device.key, the old private key is deleted, and a running gateway switches on
   SIGHUP. The switch happens on the store's writer thread between two batches, so the
   first seq signed with the new key is exact; the command prints it as S and operations
   retire the old key with ``cimedge registry rotate enrollment.json --after-seq S-1``.
   Batches signed before the switch are resent byte for byte and still verify.

The running gateway advertises that it can switch in ``signing.json`` (pid, kid, since_seq),
written by ``serve()``, which `cimedge run` wraps around the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cimedge.cloud_sync.cose import kid_for
from cimedge.edge.errors import CimEdgeError
from cimedge.provisioning import identity
from cimedge.provisioning.clikit import (
    Progress,
    Subparsers,
    UsageError,
    add_where,
    command,
    config_path,
    state_dir,
)

log = logging.getLogger(__name__)
SIGNING_FILE = "signing.json"
NEXT_ENROLLMENT = "enrollment.next.json"


def kid_hex(key: Ed25519PrivateKey) -> str:
    return kid_for(key.public_key().public_bytes_raw()).hex()


# -- daemon side ------------------------------------------------------------------------------
async def serve(gateway: Any, key_path: Path) -> None:  # noqa: ANN401 - edge.daemon.Gateway
    """Run the gateway; on SIGHUP load ``key_path`` again and sign with it from the next batch."""
    path = gateway.status_path.with_name(SIGNING_FILE)
    state: dict[str, Any] = {"pid": os.getpid(), "kid": kid_hex(gateway.key), "since_seq": None,
                             "switched": None, "reload": "SIGHUP", "error": ""}
    await asyncio.to_thread(_write_json, path, state)
    wanted = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, wanted.set)
    reloader = asyncio.create_task(_reload(gateway, key_path, path, state, wanted),
                                   name="key-reload")
    try:
        await gateway.run()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        reloader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reloader


async def _reload(gateway: Any, key_path: Path, path: Path, state: dict[str, Any],  # noqa: ANN401
                  wanted: asyncio.Event) -> None:
    while True:
        await wanted.wait()
        wanted.clear()
        try:
            key = await asyncio.to_thread(identity.load_key, key_path)
        except CimEdgeError as e:
            log.error("key reload: %s; still signing with kid %s", e, state["kid"])
            state["error"] = str(e)
        else:
            if kid_hex(key) != state["kid"]:
                since = await switch(gateway, key)
                state.update(kid=kid_hex(key), since_seq=since, switched=time.time(), error="")
                log.warning("signing with kid %s from seq %d", state["kid"], since)
        await asyncio.to_thread(_write_json, path, state)


async def switch(gateway: Any, key: Ed25519PrivateKey) -> int:  # noqa: ANN401
    """Sign with ``key`` from the next batch on; return that batch's seq.

    Uses ``Gateway.use_key`` when the daemon has it; otherwise swaps the uplink's key and kid
    in one step on the store's writer thread, where batches are signed, so no batch can get
    one without the other.
    """
    use_key = getattr(gateway, "use_key", None)
    if use_key is not None:
        return int(await use_key(key))
    while gateway.uplink is None or gateway.store is None:  # still starting
        await asyncio.sleep(0.05)
    store, uplink = gateway.store, gateway.uplink
    kid = kid_for(key.public_key().public_bytes_raw())

    def swap() -> int:
        uplink.key, uplink.kid = key, kid
        return int(store._meta("next_seq"))  # noqa: SLF001 - until Gateway.use_key exists

    gateway.key = key
    return int(await store._call(swap))  # noqa: SLF001


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


# -- technician side --------------------------------------------------------------------------
class Paths:
    def __init__(self, args: argparse.Namespace) -> None:
        from cimedge.edge import config as site_config

        cfg = config_path(args)
        if cfg.exists():
            site = site_config.load(cfg)
            self.key = site.path(site.gateway.key_file)
            self.state = site.path(site.store.path).parent
        else:
            self.state = state_dir(args)
            self.key = self.state / "device.key"
        self.dir = self.key.parent
        self.next_key = self.key.with_name(self.key.name + ".next")
        self.enrollment = self.dir / "enrollment.json"
        self.next_enrollment = self.dir / NEXT_ENROLLMENT


def prepare(p: Paths, force: bool) -> dict[str, Any]:
    """Step 1: the next key and its enrollment record, beside the current ones."""
    if p.next_enrollment.exists() and not force:
        kid = _read(p.next_enrollment).get("kid")
        raise CimEdgeError(f"a rotation to kid {kid} is pending: finish it with "
                           "`cimedge rotate-key --confirm`, or start over with --force")
    current = identity.load_key(p.key)
    record = _read(p.enrollment)
    for field in ("device_id", "site_type"):
        if not isinstance(record.get(field), str):
            raise CimEdgeError(f"{p.enrollment} has no {field}: cannot enroll a new key for it")
    key = identity.write_key(p.next_key, force=True)
    new = identity.enrollment(key, record["device_id"], record["site_type"],
                              str(record.get("location", "")))
    identity.write_enrollment(p.next_enrollment, new)
    return {"device_id": record["device_id"], "current_kid": kid_hex(current),
            "pending_kid": new["kid"], "enrollment": str(p.next_enrollment)}


def confirm(p: Paths, registry: str | None, timeout: float) -> dict[str, Any]:
    """Step 2: make the confirmed key the device key and have a running gateway use it."""
    if not p.next_enrollment.exists():
        raise CimEdgeError("no rotation is pending: run `cimedge rotate-key` first")
    new = _read(p.next_enrollment)
    if registry:
        _check_registry(registry, new)
    daemon = _daemon(p.state)
    old_kid = kid_hex(identity.load_key(p.key)) if p.key.exists() else None
    if p.next_key.exists():
        if kid_hex(identity.load_key(p.next_key)) != new["kid"]:
            raise CimEdgeError(f"{p.next_key} does not match {p.next_enrollment}: start over "
                               "with `cimedge rotate-key --force`")
        if old_kid and p.enrollment.exists():
            identity.write_enrollment(p.dir / f"enrollment.{old_kid}.json", _read(p.enrollment))
        os.replace(p.next_key, p.key)  # the old private key is gone from here on
    elif old_kid != new["kid"]:
        raise CimEdgeError(f"{p.next_key} is missing: start over with `cimedge rotate-key "
                           "--force`")
    os.replace(p.next_enrollment, p.enrollment)
    if daemon is None:
        since = _next_seq(p.state)
    else:
        since = _signal_and_wait(daemon, p.state, new["kid"], timeout)
    return {"device_id": new["device_id"], "kid": new["kid"], "old_kid": old_kid,
            "since_seq": since, "after_seq": since - 1,
            "gateway": "running" if daemon else "stopped",
            "enrollment": str(p.enrollment)}


def _check_registry(target: str, new: dict[str, Any]) -> None:
    from cimedge.cloud_sync.receiver.registry import open_registry

    reg = open_registry(target, readonly=True)
    try:
        info = reg.lookup(bytes.fromhex(new["kid"]))
    finally:
        reg.close()
    if info is None or info.dev != new["device_id"] or info.status != "active":
        state = "unknown" if info is None else f"{info.status} for {info.dev}"
        raise CimEdgeError(f"the registry {target} does not list kid {new['kid']} as an active "
                           f"key of {new['device_id']} ({state}): enroll it first with "
                           f"`cimedge registry add {NEXT_ENROLLMENT}`")


def _daemon(state: Path) -> dict[str, Any] | None:
    """signing.json of the live gateway, None when none runs; refuse one that cannot switch.

    Live means status.json was written in the last seconds by that same pid: a stale
    signing.json whose pid now belongs to another process must never get a SIGHUP.
    """
    from cimedge.provisioning import status

    report: dict[str, Any] = status.read(state) if state.is_dir() else {"running": False}
    if not report.get("running"):
        return None
    pid = report["daemon"].get("pid")
    info = _read(state / SIGNING_FILE, missing_ok=True)
    if info.get("pid") == pid and info.get("reload") == "SIGHUP":
        return info
    raise CimEdgeError(f"the running gateway (pid {pid}) cannot switch keys while running: "
                       "stop it, run --confirm, start it")


def _signal_and_wait(daemon: dict[str, Any], state: Path, kid: str, timeout: float) -> int:
    try:
        os.kill(daemon["pid"], signal.SIGHUP)
    except ProcessLookupError:  # it stopped meanwhile: it loads the new key when started
        return _next_seq(state)
    progress = Progress("waiting for the gateway to switch keys")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                info = _read(state / SIGNING_FILE, missing_ok=True)
            except CimEdgeError:  # caught between two writes: look again
                info = {}
            if info.get("kid") == kid and isinstance(info.get("since_seq"), int):
                return int(info["since_seq"])
            if info.get("error"):
                raise CimEdgeError(f"the gateway could not load the new key: {info['error']}")
            progress.show()
            time.sleep(0.1)
    finally:
        progress.close()
    raise CimEdgeError(f"the gateway (pid {daemon['pid']}) did not switch to kid {kid} within "
                       f"{timeout:.0f} s; it loads the new device.key when restarted")


def _next_seq(state: Path) -> int:
    db = state / "buffer.sqlite"
    if not db.exists():
        return 1
    from cimedge.provisioning import bufferdb

    con = bufferdb.connect(db)
    try:
        return int(bufferdb.meta(con).get("next_seq", 1))
    finally:
        con.close()


def _read(path: Path, *, missing_ok: bool = False) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise CimEdgeError(f"{path} does not exist") from None
    except (OSError, ValueError) as e:
        raise CimEdgeError(f"{path} is unreadable: {e}") from None
    if not isinstance(data, dict):
        raise CimEdgeError(f"{path} is not a JSON object")
    return data


def render(r: dict[str, Any]) -> str:
    if "pending_kid" in r:
        return (f"new key for {r['device_id']}: kid {r['pending_kid']} (pending; still signing "
                f"with {r['current_kid']})\n"
                f"1. operations: cimedge registry add {r['enrollment']}\n"
                f"2. once `cimedge registry list` shows kid {r['pending_kid']} active: "
                f"cimedge rotate-key --confirm")
    where = "from its next start" if r["gateway"] == "stopped" else "now"
    return (f"{r['device_id']} signs with kid {r['kid']} {where}, from seq {r['since_seq']}; "
            f"the old key {r['old_kid']} is deleted\n"
            f"operations: cimedge registry rotate {r['enrollment']} --after-seq {r['after_seq']}")


def run(args: argparse.Namespace) -> int:
    p = Paths(args)
    if args.registry and not args.confirm:
        raise UsageError("--registry", "checks the registry before --confirm; add --confirm")
    try:
        result = confirm(p, args.registry, args.timeout) if args.confirm else \
            prepare(p, args.force)
    except OSError as e:
        raise CimEdgeError(f"cannot change {e.filename}: {e.strerror}") from None
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


def add_parsers(sub: Subparsers) -> None:
    p = command(sub, "rotate-key", "make a new device key; switch to it once the registry has it",
                "cimedge rotate-key --state-dir /var/lib/cimedge   (then, once enrolled: "
                "cimedge rotate-key --confirm --state-dir /var/lib/cimedge)",
                description=__doc__.split(": ", 1)[1])
    add_where(p)
    p.add_argument("--confirm", action="store_true",
                   help="the registry lists the new kid: switch the gateway to it")
    p.add_argument("--registry", metavar="FILE|URL",
                   help="with --confirm: check the registry lists the new kid first")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for a running gateway to switch (default 30)")
    p.add_argument("--force", action="store_true", help="replace a pending new key")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run)
