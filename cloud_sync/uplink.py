"""The sync loop: store rows -> SenML-CBOR -> COSE_Sign1 -> publish -> ack -> prune.

At most ``max_inflight`` batches wait for their ack at a time; a batch whose ack does not
come within ``ack_timeout`` (or that was in flight when the link dropped) is published
again from its recorded bytes, so a resend is byte for byte the same. Events go first.
A full batch goes out as soon as one is waiting (backlog drain); a partial one waits for
the flush timer, so a quiet site does not send one message per reading.

After an outage the backlog drains oldest first, and the newest readings get a lane of
their own with one send slot per flush tick beyond the backlog's window, so live data
arrives within about one flush interval however long the backlog is. Nothing is read into
memory beyond one batch: the backlog stays in SQLite.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cimedge.cloud_sync import cose, payload2, senml
from cimedge.cloud_sync.ack import PREFIX_LEN, decode_ack
from cimedge.cloud_sync.ackcheck import AckCheck, AckRefused
from cimedge.cloud_sync.reject import Reject
from cimedge.cloud_sync.transport import Transport
from cimedge.edge.errors import SyncError
from cimedge.edge.store import Batch, Store

log = logging.getLogger(__name__)

BACKLOG_BATCHES = 4  # a backlog of this many full batches opens the lane for the newest data
# Flushes fall on the flush interval's beat, this long after it: polls fall on their
# period's beat too (edge/poller.py), so a 1 s site's batch leaves just after its polls
# are committed, not at a random phase up to a whole interval later.
FLUSH_LAG = 0.05
REFUSAL_LOG_S = 60.0  # a flood of forged acks logs one line per kind a minute


class Uplink:
    """Moves signed batches from the store to the broker until cancelled."""

    def __init__(self, store: Store, dev: str, key: Ed25519PrivateKey, units: Mapping[str, str],
                 *, batch_max: int = 1000, flush_interval: float = 1.0,
                 ack_timeout: float = 10.0, max_inflight: int = 4, contract: int = 1,
                 ack_check: AckCheck | None = None) -> None:
        self.store, self.dev, self.key, self.units = store, dev, key, units
        self.contract = contract
        self.kid = cose.kid_for(key.public_key().public_bytes_raw())
        self.batch_max, self.flush_interval = batch_max, flush_interval
        self.ack_timeout, self.max_inflight = ack_timeout, max_inflight
        self.inflight: dict[int, float] = {}  # seq -> monotonic deadline of its ack
        self.wake = asyncio.Event()
        self.counters = {"sent": 0, "resent": 0, "acked": 0, "nacked": 0, "bad_acks": 0,
                         "late_acks": 0, "dropped_invalid": 0, "live": 0}
        # v2: only acks signed by a backend ingest key for this device delete anything
        self.ack_check = ack_check
        self.refused_acks: Counter[str] = Counter()  # by AckRefused kind
        self._refusal_logged: dict[str, float] = {}
        self.last_ack_ns: int | None = None
        self.last_nack = ""
        self.transport: Transport | None = None

    # -- encoding, run in the store's thread so seq allocation and record are one step ----
    def _make_batch(self, seq: int, rows: list[Any]) -> bytes:
        c = self.contract
        try:
            recs = senml.encode_pack(self.dev, rows, self.units, contract=c)
        except ValueError:
            # A row the receiver would refuse (a time before 1978 from an RTC reset, say)
            # would stall the uplink forever: send the rest, count and log what is dropped.
            good = [r for r in rows if _encodable(self.dev, r, self.units)]
            self.counters["dropped_invalid"] += len(rows) - len(good)
            log.error("dropped %d readings the receiver would refuse", len(rows) - len(good))
            recs = senml.encode_pack(self.dev, good, self.units, contract=c)
        if c == 2:  # noqa: PLR2004
            return cose.sign1(payload2.batch_payload(seq, recs), self.key, self.kid,
                              external_aad=cose.aad("batch", self.dev))
        return cose.sign1(senml.batch_payload(self.dev, seq, time.time(), recs), self.key, self.kid)

    def _make_events(self, seq: int, rows: list[Any]) -> bytes:
        if self.contract == 2:  # noqa: PLR2004
            return cose.sign1(payload2.event_payload(seq, rows), self.key, self.kid,
                              external_aad=cose.aad("event", self.dev))
        return cose.sign1(senml.event_payload(self.dev, seq, time.time(), rows), self.key, self.kid)

    async def on_ack(self, data: bytes) -> None:
        """Handle one message on the ack topic: v2 acks must be signed (``ack_check``)."""
        try:
            if self.ack_check is None:  # v1: the broker is trusted (DESIGN §4)
                ack = decode_ack(data)
                seq, ok, err, prefix = ack.seq, ack.ok, ack.err, None
            else:
                signed = self.ack_check.check(data)
                seq, ok, err, prefix = signed.seq, signed.ok, signed.err, signed.prefix
        except Reject as e:
            self._refuse(AckRefused("malformed", str(e)))
            return
        except AckRefused as e:
            self._refuse(e)
            return
        if not ok:
            # Keep the batch: a rejection (key not yet enrolled, say) must not lose data.
            # It is sent again after ack_timeout; the count and reason show in status.
            self.counters["nacked"] += 1
            self.last_nack = f"seq {seq}: {err}"
            log.warning("receiver refused seq %d: %s", seq, err)
            return
        if prefix is None:
            result = "acked" if await self.store.mark_acked(seq) else "unknown"
        else:
            result = await self.store.ack_if(seq, lambda msg: _signature_prefix(msg) == prefix)
        if result == "mismatch":
            self._refuse(AckRefused("wrong_prefix", f"seq {seq}: prefix {prefix.hex()} is "
                                                    "not that of the batch held"))
            return
        if result == "acked":
            self.counters["acked"] += 1
            self.last_ack_ns = time.time_ns()
        else:
            self.counters["late_acks"] += 1  # acked before (a resend's second ack), or unknown
        self.inflight.pop(seq, None)
        self.wake.set()

    def _refuse(self, e: AckRefused) -> None:
        """Count an ack that changes nothing; log the first of each kind, then once a minute."""
        self.counters["bad_acks"] += 1
        self.refused_acks[e.kind] += 1
        now = time.monotonic()
        if now - self._refusal_logged.get(e.kind, -math.inf) >= REFUSAL_LOG_S:
            self._refusal_logged[e.kind] = now
            log.warning("ignored an ack (%d %s so far): %s", self.refused_acks[e.kind],
                        e.kind, e)

    async def _next(self, partial: bool) -> Batch | None:
        pending = await self.store.pending(frozenset(self.inflight), 1)
        if pending:
            self.counters["resent"] += 1
            return pending[0]
        now_ns = time.time_ns()
        batch = await self.store.build_batch("event", self.batch_max, self._make_events, now_ns)
        if batch is None and (partial or await self.store.has_unbatched(self.batch_max)):
            batch = await self.store.build_batch("batch", self.batch_max, self._make_batch, now_ns)
        if batch is not None:
            self.counters["sent"] += 1
        return batch

    def _beat(self, t: float) -> float:
        """The first flush time at or after ``t``: the interval's beat plus FLUSH_LAG."""
        fi = self.flush_interval
        return math.ceil((t - FLUSH_LAG) / fi) * fi + FLUSH_LAG

    async def _publish(self, transport: Transport, batch: Batch) -> None:
        await transport.publish(batch.topic, batch.payload)
        self.inflight[batch.seq] = asyncio.get_running_loop().time() + self.ack_timeout

    async def run(self, transport: Transport) -> None:
        """Fill the send window whenever the link is up; wait for acks, timers or new data."""
        self.transport = transport
        loop = asyncio.get_running_loop()
        next_flush = loop.time()  # at once (a first value soon after start), then on the beat
        while True:
            if not transport.up.is_set():
                self.inflight.clear()  # whatever was in flight is sent again after reconnect
                await transport.up.wait()
            now = loop.time()
            for seq in [s for s, dl in self.inflight.items() if dl <= now]:
                del self.inflight[seq]  # ack overdue: pending() hands it out again
            flush = now >= next_flush
            if flush:
                next_flush = self._beat(now + self.flush_interval / 2)
                if await self.store.has_unbatched(BACKLOG_BATCHES * self.batch_max):
                    # After an outage: the newest data gets a lane of its own and a slot
                    # every flush, so it is not starved behind the backlog.
                    await self.store.split_live()
            try:
                if flush and await self.store.lane_open():
                    # the newest data's slot, one batch a flush, beyond the backlog's window
                    batch = await self.store.build_batch("batch", self.batch_max,
                                                         self._make_batch, time.time_ns(),
                                                         lane="newest")
                    if batch is not None:
                        self.counters["sent"] += 1
                        self.counters["live"] += 1
                        await self._publish(transport, batch)
                while len(self.inflight) < self.max_inflight:
                    batch = await self._next(partial=flush)
                    if batch is None:
                        break
                    await self._publish(transport, batch)
            except SyncError as e:
                log.warning("%s", e)
                # the link may not know yet that it is down: give it a moment, then retry
                await _wait_cleared(transport.up, 1.0)
                continue
            deadline = min([next_flush, *self.inflight.values()])
            self.wake.clear()
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await self.wake.wait()
            except TimeoutError:
                pass


def _signature_prefix(message: bytes) -> bytes:
    """The first bytes of a recorded message's COSE signature, as a v2 ack names them."""
    return cose.parse_sign1(message).signature[:PREFIX_LEN]


def _encodable(dev: str, row: Any, units: Mapping[str, str]) -> bool:
    try:
        senml.encode_pack(dev, [row], units)
    except ValueError:
        return False
    return True


async def _wait_cleared(flag: asyncio.Event, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while flag.is_set() and loop.time() < end:
        await asyncio.sleep(0.05)
