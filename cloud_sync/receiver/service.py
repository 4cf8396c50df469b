"""The reference receiver: MQTT in, verify, dedup, durable store, then ack (DESIGN.md 4-5)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cimedge.cloud_sync.ack import encode_ack
from cimedge.cloud_sync.receiver.fleetdb import FleetDB
from cimedge.cloud_sync.receiver.ingest import IngestKeys, sniff
from cimedge.cloud_sync.receiver.registry import DEVICE_ID, Keys
from cimedge.cloud_sync.receiver.status import decode_status
from cimedge.cloud_sync.receiver.store import Refusal, Result, Store, StoreThread, open_store
from cimedge.cloud_sync.receiver.store import is_postgres_url
from cimedge.cloud_sync.reject import Reject
from cimedge.cloud_sync.transport import MAX_MESSAGE, MAX_PACKET_SIZE, backoff_delay
from cimedge.cloud_sync.verify import Verified, verify_message
from cimedge.edge.errors import StoreError
from cimedge.stop import reraise_cancelled

log = logging.getLogger(__name__)
T = TypeVar("T")

_KINDS = ("batch", "event")
_MAX_SEQ = (1 << 64) - 1
_RESUMABLE_SESSION_S = 300  # a restart takes seconds; a dead receiver's share waits this long
# Unacked QoS 1 messages the broker may have in flight to us. PUBACK goes only after the
# commit, so this bounds what queues here (worst case inflight x max_size bytes), and it
# must exceed max_group so the next group is verified while this one commits.
INFLIGHT = 256
MAX_GROUP = 128  # messages per transaction
# Bytes of verified messages waiting for their commit (wire bytes plus what a v2 packz
# inflated to). A decoded payload takes up to ~80x its size in Python objects (a signed
# 1 MiB of tiny maps), so this, not the inflight window, bounds memory when a store is
# slow and batches are large.
MAX_QUEUED_BYTES = 16 << 20
_CONTRACTS_KEPT = 50_000  # the contract each device last spoke, to sign a refusal to a v2 one


def topic_parts(topic: str) -> tuple[str, str] | None:
    """(dev, kind) of `cim/v1/{dev}/batch|event`, or None for any other topic."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[:2] != ["cim", "v1"] or parts[3] not in _KINDS:  # noqa: PLR2004
        return None
    if not DEVICE_ID.fullmatch(parts[2]):
        return None
    return parts[2], parts[3]


@dataclass(slots=True)
class _Item:
    """One received message, checked and waiting for its group's commit."""

    mid: int
    qos: int
    size: int  # bytes on the wire, counted against max_queued_bytes until committed
    dev: str  # from the topic; "" when the topic is not ours
    known: bool  # the device is enrolled, so it may be sent an ok:false ack
    verified: Verified | None = None
    reject: Reject | None = None
    failed: bool = False  # the registry could not be asked: no ack, the gateway resends
    arrived: float = 0.0  # time.monotonic() when it came in: the ack latency starts here
    contract: int | None = None  # the message's contract version, when it could be read
    prefix: bytes = b""  # the first bytes of its signature, which a v2 ack names


class Receiver:
    """Subscribes to every device's batch and event topic through a shared subscription.

    Stateless apart from its store: run several with the same `group` and the broker
    splits the messages among them; (dev, seq) is stored once whichever one gets it, as
    long as they share the store (PostgreSQL; a SQLite file has one receiver).

    Messages are verified as they arrive and committed in groups: whatever queued while
    the previous transaction ran goes into the next one (group commit), and only after
    it is durable are the acks published and the messages PUBACKed to the broker.

    Give each instance a stable `client_id` in production: its broker session then
    outlives it for `session_expiry` seconds (default 300), so a restarted receiver gets
    the messages queued meanwhile. Without a client_id the session ends with the
    connection (expiry 0), because Mosquitto 2.0 keeps dealing a shared subscription's
    messages to an offline member: a session nobody resumes would swallow its share.
    """

    def __init__(self, broker_host: str, broker_port: int, db_path: str | Path,
                 registry: Keys, *, group: str = "cim-ingest",
                 client_id: str | None = None, max_size: int = 1 << 20,
                 session_expiry: int | None = None, timeout: float = 10.0,
                 max_backoff: float = 30.0, inflight: int = INFLIGHT,
                 max_group: int = MAX_GROUP, clock: Callable[[], float] = time.time,
                 mqtt_version: str = "5", max_queued_bytes: int = MAX_QUEUED_BYTES,
                 tls_context: ssl.SSLContext | None = None, username: str | None = None,
                 password: str | None = None, ingest: IngestKeys | None = None,
                 max_packet_size: int | None = None) -> None:
        if (not is_postgres_url(db_path) and registry.path is not None
                and Path(db_path).resolve() == registry.path.resolve()):
            msg = "the registry and the store must be different files (one writer per file)"
            raise ValueError(msg)
        self.host, self.port, self.registry = broker_host, broker_port, registry
        self.db_path = db_path
        # "3.1.1" only for the demo's in-process broker: no shared subscription (one
        # receiver), no session properties. The contract's transport is MQTT 5.
        self.mqtt_version = mqtt_version
        self.group, self.max_size, self.timeout = group, max_size, timeout
        self.client_id = client_id or f"cim-receiver-{uuid.uuid4().hex[:12]}"
        if session_expiry is None:
            session_expiry = _RESUMABLE_SESSION_S if client_id else 0
        self.session_expiry, self.max_backoff = session_expiry, max_backoff
        self.inflight, self.max_group, self.clock = inflight, max_group, clock
        self.max_queued_bytes = max_queued_bytes
        # MQTT 5 Maximum Packet Size: the broker drops anything larger instead of sending
        # it here (a 25 MB message on a batch topic once cost 20 MB of RSS each).
        self.max_packet_size = max_packet_size or max_size + MAX_PACKET_SIZE - MAX_MESSAGE
        # v2 acks are signed with an ingest key; without one a v2 device gets unsigned acks,
        # which it counts and ignores (so it keeps its data), and the receiver says so.
        self.ingest = ingest
        self._contracts: dict[str, int] = {}
        # Mutual TLS: the broker maps the certificate's CN to the backend user of its ACL
        # (`cimedge ca mosquitto --backend-user`); username/password for brokers without it.
        self._auth = {"tls_context": tls_context, "username": username or None,
                      "password": password}
        self._queued_bytes = 0
        self._drained = asyncio.Event()  # set whenever a commit frees queued bytes
        self.ready = asyncio.Event()  # set while connected and subscribed
        self.on_ready: Callable[[], None] | None = None  # called each time it is subscribed
        self.rejects: Counter[str] = Counter()
        self.metrics: dict[str, Any] = {
            "received": 0, "stored": 0, "duplicates": 0, "acks_sent": 0,
            "rejects": self.rejects, "errors": 0, "reconnects": 0, "commits": 0,
            "readings": 0, "statuses": 0, "status_rejects": Counter(),
            "unsigned_v2_acks": 0,
        }
        # Called with each ack's latency (arrival to ack published, seconds): the web
        # view's Prometheus histogram, when it runs in this process.
        self.ack_latency: Callable[[float], None] | None = None
        self._queue: asyncio.Queue[_Item] | None = None
        self._store: StoreThread | None = None

    def queued(self) -> tuple[int, int]:
        """Verified messages waiting for their commit: (how many, their bytes on the wire)."""
        return (self._queue.qsize() if self._queue else 0), max(0, self._queued_bytes)

    async def run(self) -> None:
        """Receive until cancelled, reconnecting with full-jitter backoff when the broker goes."""
        self._store = StoreThread(lambda: open_store(self.db_path))
        try:
            await self._store.open()
            attempt = 0
            while True:
                try:
                    async with self._client() as client:
                        reraise_cancelled()  # aiomqtt's wait_for may swallow it: cimedge.stop
                        attempt = 0
                        await self._subscribe(client)
                        self.ready.set()
                        if self.on_ready is not None:
                            self.on_ready()
                        await self._session(client)
                except (aiomqtt.MqttError, OSError) as exc:  # TimeoutError is an OSError
                    self.ready.clear()
                    attempt += 1
                    self.metrics["reconnects"] += 1
                    reraise_cancelled()  # the error may stand for a swallowed cancellation
                    delay = backoff_delay(attempt, self.max_backoff)
                    log.warning("broker %s:%d: %s; reconnecting in %.1f s",
                                self.host, self.port, exc, delay)
                    await asyncio.sleep(delay)
        finally:
            self.ready.clear()
            store, self._store = self._store, None
            store.close()  # waits for a commit in progress: it finishes, it is not torn

    async def query(self, fn: Callable[[Store], T]) -> T:
        """Run fn(store) on the store's writer thread while run() is running (tests, views)."""
        if self._store is None:
            msg = "the receiver is not running"
            raise RuntimeError(msg)
        return await self._store.call(fn)

    def _client(self) -> aiomqtt.Client:
        session: dict[str, Any]
        if self.mqtt_version == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.session_expiry
            props.ReceiveMaximum = self.inflight
            props.MaximumPacketSize = self.max_packet_size
            session = {"protocol": aiomqtt.ProtocolVersion.V5, "clean_start": False,
                       "properties": props}
        else:  # no session properties in 3.1.1: the broker's own in-flight limit applies
            session = {"protocol": aiomqtt.ProtocolVersion.V311,
                       "clean_session": self.session_expiry == 0}
        client = aiomqtt.Client(
            self.host, self.port, identifier=self.client_id, **session,
            timeout=self.timeout, max_inflight_messages=self.inflight,
            # Acks and PUBACKs are small packets: Nagle's algorithm would hold each one
            # back until the broker's delayed ACK, about 40 ms on Linux.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)], **self._auth)
        # PUBACK only once a message is committed: the broker's in-flight window
        # (ReceiveMaximum) then bounds what queues here, and a resumable session hands a
        # receiver that died mid-commit the message again (otherwise the gateway resends
        # it). aiomqtt 2.5 exposes no switch for this, hence its paho client.
        client._client.manual_ack_set(True)  # noqa: SLF001
        client.pending_calls_threshold = 2 * self.max_group  # a group's acks go out together
        return client

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        for kind in _KINDS:
            topic = f"cim/v1/+/{kind}"
            if self.mqtt_version == "5":
                topic = f"$share/{self.group}/{topic}"
            async with asyncio.timeout(self.timeout):
                codes = await client.subscribe(topic, qos=1)
                reraise_cancelled()
            if any(getattr(c, "value", c) >= 0x80 for c in codes):  # noqa: PLR2004
                msg = f"broker refused subscription {topic}: {codes}"
                raise aiomqtt.MqttError(msg)
        # Status is not shared: every receiver keeps every gateway's latest status, and a
        # plain subscription gets the retained ones (a shared subscription gets none).
        async with asyncio.timeout(self.timeout):
            await client.subscribe("cim/v1/+/status", qos=1)

    async def _session(self, client: aiomqtt.Client) -> None:
        """Receive and commit side by side until the connection breaks (which raises)."""
        queue: asyncio.Queue[_Item] = asyncio.Queue()  # bounded by the inflight window
        statuses: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()  # bounded likewise
        self._queue = queue
        tasks = {asyncio.create_task(self._receive(client, queue, statuses),
                                     name="receiver-verify"),
                 asyncio.create_task(self._commit_loop(client, queue), name="receiver-commit"),
                 asyncio.create_task(self._status_loop(client, statuses),
                                     name="receiver-status")}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _receive(self, client: aiomqtt.Client, queue: asyncio.Queue[_Item],
                       statuses: asyncio.Queue[aiomqtt.Message]) -> None:
        self._queued_bytes = 0
        async for message in client.messages:
            if message.topic.value.endswith("/status"):
                statuses.put_nowait(message)
                continue
            while self._queued_bytes > self.max_queued_bytes:
                self._drained.clear()  # the broker keeps the rest: PUBACKs wait for commits
                await self._drained.wait()
            self.metrics["received"] += 1
            item = self._check(message.topic.value, message.payload, message.mid, message.qos)
            item.arrived = time.monotonic()
            self._queued_bytes += item.size
            queue.put_nowait(item)
            # Let the committer take what is queued now: at low load a message commits at
            # once; under load, messages gather while the previous transaction runs.
            await asyncio.sleep(0)

    def _check(self, topic: str, payload: object, mid: int, qos: int) -> _Item:
        """Verify one message (no I/O but the registry lookup); never raises on input."""
        parts = topic_parts(topic)
        if parts is None or not isinstance(payload, bytes | bytearray):
            return _Item(mid, qos, 0, "", known=False)
        dev, kind = parts
        try:
            v = verify_message(dev, kind, bytes(payload), self.registry.lookup,
                               now=self.clock(), max_size=self.max_size)
            self._remember_contract(dev, v.contract)
            # A v2 packz counts at its inflated size: 16 MiB of wire could be 1 GiB of it.
            return _Item(mid, qos, v.size, dev, True, verified=v, contract=v.contract,
                         prefix=v.sig_prefix)
        except Reject as r:
            try:
                known = self.registry.has_device(dev)
            except Exception:  # noqa: BLE001 - as below: count it, do not stop
                log.exception("registry failed on %s", topic)
                known = False
            contract, prefix = sniff(bytes(payload), self.max_size) if known else (None, b"")
            return _Item(mid, qos, 0, dev, known, reject=r, prefix=prefix,
                         contract=contract or self._contracts.get(dev))
        except Exception:  # noqa: BLE001 - a registry outage, or a bug: never stop on input
            self.metrics["errors"] += 1
            log.exception("cannot check %s (no ack sent)", topic)
            return _Item(mid, qos, 0, dev, False, failed=True)

    async def _commit_loop(self, client: aiomqtt.Client, queue: asyncio.Queue[_Item]) -> None:
        while True:
            group = [await queue.get()]
            while not queue.empty() and len(group) < self.max_group:
                group.append(queue.get_nowait())
            try:
                await self._commit_group(client, group)
            finally:
                self._queued_bytes -= sum(i.size for i in group)
                self._drained.set()

    async def _commit_group(self, client: aiomqtt.Client, group: list[_Item]) -> None:
        """Commit a group, then ack each message (ok or its reason) and PUBACK them all."""
        verified = [i.verified for i in group if i.verified is not None]
        refusals = [Refusal(i.reject.reason if i.reject else "bad_topic",
                            i.dev if i.known else None,
                            str(i.reject.detail) if i.reject else "topic is not cim/v1/{dev}/…")
                    for i in group if i.verified is None and not i.failed]
        results = iter(await self._commit(verified, refusals))
        acks: list[tuple[_Item, int, bool, str | None]] = []
        acked: list[_Item] = []
        for item in group:
            if item.failed:
                continue
            if item.verified is not None:
                result = next(results)
                if result is None:
                    continue  # the store failed: no ack, so the gateway sends it again
                if isinstance(result, Reject):
                    item.reject = result
                else:
                    self.metrics["stored" if result == "stored" else "duplicates"] += 1
                    if result == "stored":
                        self.metrics["readings"] += len(item.verified.records)
                    acks.append((item, item.verified.seq, True, None))
                    acked.append(item)
                    continue
            self._count(item)
            if item.reject is not None and item.known:
                seq = item.reject.seq
                seq = seq if type(seq) is int and 0 <= seq <= _MAX_SEQ else 0
                acks.append((item, seq, False, item.reject.reason))
                acked.append(item)
        if acks:
            async with asyncio.timeout(self.timeout):
                await asyncio.gather(*(client.publish(f"cim/v1/{item.dev}/ack",
                                                      self._ack(item, seq, ok, err), qos=1)
                                       for item, seq, ok, err in acks))
                reraise_cancelled()
            self.metrics["acks_sent"] += len(acks)
            if self.ack_latency is not None:
                now = time.monotonic()
                for item in acked:
                    self.ack_latency(now - item.arrived)
        for item in group:
            if item.qos > 0:
                client._client.ack(item.mid, item.qos)  # noqa: SLF001

    async def _status_loop(self, client: aiomqtt.Client,
                           statuses: asyncio.Queue[aiomqtt.Message]) -> None:
        """Keep each enrolled gateway's latest status; a status is state, not data, so a
        refused or unstorable one is counted and PUBACKed all the same."""
        while True:
            message = await statuses.get()
            await self._take_status(message)
            if message.qos > 0:
                client._client.ack(message.mid, message.qos)  # noqa: SLF001

    async def _take_status(self, message: aiomqtt.Message) -> None:
        rejects: Counter[str] = self.metrics["status_rejects"]
        parts = message.topic.value.split("/")
        dev = parts[2] if len(parts) == 4 else ""  # noqa: PLR2004 - cim/v1/{dev}/status
        payload = message.payload
        try:
            if not DEVICE_ID.fullmatch(dev) or not isinstance(payload, bytes | bytearray):
                raise Reject("malformed_payload", "not cim/v1/{dev}/status with bytes")
            status = decode_status(dev, bytes(payload))
            if not self.registry.has_device(dev):
                rejects["unknown_device"] += 1
                return
        except Reject as r:
            rejects[r.reason] += 1
            log.warning("status of %s refused: %s", dev or "?", r)
            return
        except Exception:  # noqa: BLE001 - a registry outage: count it, go on
            rejects["error"] += 1
            log.exception("cannot check the status of %s", dev)
            return
        received_ns, live = time.time_ns(), not message.retain
        assert self._store is not None  # noqa: S101 - run() opens it first
        try:
            await self._store.call(lambda s: FleetDB(s).record_status(
                status, received_ns, live=live))
        except Exception:  # noqa: BLE001 - the next status replaces it anyway
            rejects["error"] += 1
            log.exception("cannot store the status of %s", dev)
            return
        self.metrics["statuses"] += 1
    def _ack(self, item: _Item, seq: int, ok: bool, err: str | None) -> bytes:  # noqa: FBT001
        """A v2 device's ack is signed with the ingest key (DESIGN §4a); a v1 one is not."""
        if item.contract != 2:  # noqa: PLR2004
            return encode_ack(seq, ok, err)
        if self.ingest is None:
            self.metrics["unsigned_v2_acks"] += 1
            if self.metrics["unsigned_v2_acks"] == 1:
                log.error("a v2 device (%s) gets unsigned acks, which it ignores: start the "
                          "receiver with --ingest-key", item.dev)
            return encode_ack(seq, ok, err)
        return self.ingest.sign(item.dev, seq, ok, item.prefix, err)

    def _remember_contract(self, dev: str, contract: int) -> None:
        if self._contracts.get(dev) != contract:
            if len(self._contracts) >= _CONTRACTS_KEPT:
                del self._contracts[next(iter(self._contracts))]
            self._contracts[dev] = contract

    def _count(self, item: _Item) -> None:
        reason = item.reject.reason if item.reject else "bad_topic"
        self.rejects[reason] += 1
        if item.reject is None:
            log.warning("reject bad_topic (mid %d)", item.mid)
        else:
            # seq_conflict is an alarm (DESIGN.md section 4): a cloned key or a broken gateway.
            log.log(logging.ERROR if reason == "seq_conflict" else logging.WARNING,
                    "reject %s: dev=%s seq=%s %s", reason, item.dev, item.reject.seq,
                    item.reject.detail or "")

    async def _commit(self, verified: list[Verified],
                      refusals: list[Refusal]) -> Sequence[Result | None]:
        """The group's results; a failed group is retried one message at a time, so one
        message the store cannot take does not hold back the others (None: not stored)."""
        assert self._store is not None  # noqa: S101 - run() opens it first
        try:
            results = await self._store.call(lambda s: s.commit(verified, refusals))
        except StoreError as e:  # the database is unreachable: one at a time would not help
            self.metrics["errors"] += len(verified) or 1
            # One line, no traceback: the cause is outside this program.
            log.error("%s (%d messages not acked; gateways resend them)",  # noqa: TRY400
                      e, len(verified))
            return [None] * len(verified)
        except Exception:
            if len(verified) + len(refusals) <= 1 or not verified:
                self.metrics["errors"] += len(verified) or 1
                log.exception("store failed on %d messages (no ack sent)",
                              len(verified) + len(refusals))
                return [None] * len(verified)
        else:
            self.metrics["commits"] += 1
            return results
        out: list[Result | None] = []
        for v in verified:
            out += await self._commit([v], [])
        if refusals:
            await self._commit([], refusals)
        return out
