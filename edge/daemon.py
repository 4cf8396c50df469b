"""The gateway's task tree: drivers and pollers, the uplink and its link, over one store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cimedge import drivers
from cimedge.cloud_sync.ackcheck import AckCheck
from cimedge.cloud_sync.backend_keys import BackendFile, describe
from cimedge.cloud_sync.transport import Transport
from cimedge.cloud_sync.uplink import Uplink
from cimedge.edge.clock import carried
from cimedge.edge.config import Site
from cimedge.edge.control import Controller
from cimedge.edge.model import Reading
from cimedge.edge.poller import PollStats, poll_device
from cimedge.edge.promfile import Textfile
from cimedge.edge.rules import Rules
from cimedge.edge.store import Depth, Store
from cimedge.edge.wallclock import WallClock

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"


class Gateway:
    """One running gateway; its attributes are the live view the demo and status show."""

    def __init__(self, site: Site, key: Ed25519PrivateKey) -> None:
        self.site, self.key = site, key
        self.store_path = site.path(site.store.path)
        self.status_path = self.store_path.parent / STATUS_FILE
        self.last: dict[str, Reading] = {}
        self.drivers: dict[str, Any] = {}
        self.rules: Rules | None = None
        self.control: Controller | None = None
        self.uplink: Uplink | None = None
        self.transport: Transport | None = None
        self.depth: Depth | None = None
        self.store: Store | None = None
        self.north: dict[str, Any] = {}  # [north.NAME] reporters (HJ 212 to a platform)
        self.clock = WallClock()
        self.poll_stats = PollStats()
        self.started = time.time()
        self.textfile = Textfile(self.store_path.parent)  # node-exporter figures, never fatal
        # backend.json: ingest keys for v2 acks, operations keys for commands (DESIGN §4a)
        self.backend = BackendFile(site.path(site.gateway.backend_file))
        self.contract = site.sync.contract

    async def run(self) -> None:
        """Run until cancelled; shutdown stops polling first and closes the store last."""
        site, sync = self.site, self.site.sync
        async with Store(self.store_path, site.store.quota_bytes) as store, \
                contextlib.AsyncExitStack() as stack:
            self.store = store
            self.control = control = await Controller.open(site, self.drivers, store,
                                                           clock=carried(self.clock),
                                                           backend=self.backend)
            self.rules = control.rules
            self.uplink = uplink = Uplink(
                store, site.gateway.device_id, self.key, site.units,
                batch_max=sync.batch_max_readings, flush_interval=sync.flush_interval_s,
                ack_timeout=sync.ack_timeout_s, max_inflight=sync.max_inflight,
                contract=sync.contract, ack_check=self._ack_check())
            self.transport = transport = Transport(
                sync.broker, site.gateway.device_id, uplink.on_ack, username=sync.username,
                password_file=_opt(site, sync.password_file), ca_file=_opt(site, sync.ca_file),
                cert_file=_opt(site, sync.cert_file), key_file=_opt(site, sync.key_file),
                keepalive=sync.keepalive_s, mqtt_version=sync.mqtt_version,
                max_packet_size=sync.max_packet_size,
                on_cmd=control.on_cmd if control.commands is not None else None)
            for name, dev in site.devices.items():
                module = drivers.load(dev.driver)
                self.drivers[name] = await stack.enter_async_context(module.Driver(name, dev.config))
            for name, north in site.north.items():
                self.north[name] = drivers.load_north(north.protocol).Reporter(
                    name, north, store, self.last)
            async with asyncio.TaskGroup() as tg:
                for name, reporter in self.north.items():
                    tg.create_task(reporter.run(), name=f"north[{name}]")
                tg.create_task(transport.run(), name="mqtt")
                tg.create_task(uplink.run(transport), name="sync")
                tg.create_task(self._status_loop(store), name="status")
                tg.create_task(control.run(), name="control")  # actions: broker or not
                for name, drv in self.drivers.items():
                    period = site.devices[name].config.poll_interval_s
                    tg.create_task(poll_device(name, drv, period, store, control, self.last,
                                               uplink.wake.set, self.clock, self.poll_stats),
                                   name=f"poll[{name}]")

    def _ack_check(self) -> AckCheck | None:
        """v2: only acks signed by an ingest key delete data; v1 trusts its broker."""
        if self.contract != 2:  # noqa: PLR2004
            return None
        if not self.backend.keys.of("ingest"):
            # Polling, rules and sending go on; every ack is refused (and counted) until a
            # backend.json with an ingest key is installed, which is picked up while running.
            log.error("no ingest key in %s (%s): acks cannot be believed, so nothing is "
                      "deleted; install one with `cimedge backend install FILE`",
                      self.backend.path, self.backend.error or describe(self.backend.keys))
        return AckCheck(self.site.gateway.device_id, self.backend)

    async def _status_loop(self, store: Store) -> None:
        while True:
            self.depth = await store.depth()
            await asyncio.to_thread(self._write_status)
            await asyncio.sleep(1.0)

    def status(self) -> dict[str, Any]:
        """What `cimedge status` shows, also written to status.json every second."""
        d, up, tr = self.depth, self.uplink, self.transport
        return {
            "device_id": self.site.gateway.device_id,
            "pid": os.getpid(),
            "updated": time.time(),
            "started": self.started,
            "sqlite_version": sqlite3.sqlite_version,
            "connected": bool(tr and tr.up.is_set()),
            "broker": self.site.sync.broker,
            "last_error": tr.last_error if tr else "",
            "connects": tr.connects if tr else 0,
            "buffer": {"readings": d.readings, "events": d.events, "batches_unacked": d.batches,
                       "oldest_ts": d.oldest_ts_ns / 1e9 if d.oldest_ts_ns else None,
                       "next_seq": d.next_seq, "used_bytes": d.used_bytes,
                       "quota_bytes": d.quota_bytes, "evicted": d.evicted,
                       "live_lane": d.live_lane, "error": d.error or self.poll_stats.store_error,
                       "moved_aside": str(self.store.moved_aside)
                       if self.store and self.store.moved_aside else None,
                       "uncommitted_readings": self.poll_stats.uncommitted_readings}
            if d else None,
            "clock": {"steps": self.clock.steps, "invalid": self.clock.invalid},
            "sync": dict(up.counters, inflight=len(up.inflight), last_nack=up.last_nack,
                         last_ack=up.last_ack_ns / 1e9 if up.last_ack_ns else None,
                         signed_acks=up.ack_check is not None,
                         refused_acks=dict(up.refused_acks)) if up else None,
            "backend": {"file": str(self.backend.path), "error": self.backend.error,
                        "keys": describe(self.backend.keys),
                        "required": self.contract == 2 or self.site.commands is not None},
            "alarms": self.control.active() if self.control else [],
            "devices": {n: _health(d) for n, d in self.drivers.items()},
            "north": {n: msgspec.to_builtins(r.stats) for n, r in self.north.items()},
        }

    def _write_status(self) -> None:
        status = self.status()
        self.textfile.write(status)
        tmp = self.status_path.with_name(STATUS_FILE + ".new")
        tmp.write_text(json.dumps(status, indent=1))
        os.replace(tmp, self.status_path)


def _health(driver: Any) -> dict[str, Any]:
    h = driver.health()
    return {"state": h.state, "reason": h.reason, "timeouts": h.timeouts,
            "last_success": h.last_success_ns / 1e9 if h.last_success_ns else None}


def _opt(site: Site, p: str) -> Path | None:
    return site.path(p) if p else None
