"""The gateway's MQTT link (the only gateway module that imports aiomqtt): reconnects forever."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiomqtt
import cbor2
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cimedge.edge.errors import SyncError
from cimedge.stop import reraise_cancelled

log = logging.getLogger(__name__)

# MQTT 5 Maximum Packet Size for every connection we open: the contract's largest message
# (1 MiB, DESIGN §5) plus room for the PUBLISH header, topic and properties. The broker must
# drop a larger message rather than send it (MQTT 5 §3.1.2.11.4), so no flood on our
# topics can make us buffer it (a 200 MB ack once took a gateway from 49 to 667 MB).
MAX_MESSAGE = 1 << 20
MAX_PACKET_SIZE = MAX_MESSAGE + 4096


def connect_properties(max_packet_size: int = MAX_PACKET_SIZE) -> Properties:
    """CONNECT properties for MQTT 5: the Maximum Packet Size we accept."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.MaximumPacketSize = max_packet_size
    return props


def backoff_delay(attempt: int, cap: float = 60.0) -> float:
    """Full jitter (aiomqtt v3): a fleet that lost its broker does not come back in lockstep.

    Up to 1.5**attempt seconds (at most 1.5**10, about 58 s, and at most ``cap``); the
    gateway's transport and the receiver both reconnect with it.
    """
    return random.uniform(0, min(cap, 1.5 ** min(10, attempt)))  # noqa: S311 - jitter, not crypto


def parse_broker(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) from mqtt://host:port or mqtts://host:port."""
    u = urlsplit(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise SyncError(f"broker URL {url!r} is not mqtt://HOST:PORT or mqtts://HOST:PORT")
    tls = u.scheme == "mqtts"
    return u.hostname, u.port or (8883 if tls else 1883), tls


def read_password(path: Path | None) -> str | None:
    """The MQTT password from its file (config files name the file, never the secret)."""
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as e:
        raise SyncError(f"cannot read the MQTT password file {path}: "
                        f"{e.strerror or e}") from None


def make_tls_context(tls: bool, ca_file: Path | None, cert_file: Path | None,  # noqa: FBT001
                     key_file: Path | None) -> ssl.SSLContext | None:
    """The TLS context for mqtts:// or a CA file, with a client certificate for mutual TLS.

    None for a plain connection. A missing or unreadable file is one SyncError sentence.
    """
    if not (tls or ca_file):
        if cert_file or key_file:
            raise SyncError("a client certificate needs TLS: use an mqtts:// broker URL")
        return None
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if cert_file:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    except (OSError, ssl.SSLError) as e:
        files = ", ".join(str(f) for f in (ca_file, cert_file, key_file) if f)
        raise SyncError(f"cannot load the TLS files ({files}): "
                        f"{getattr(e, 'strerror', None) or e}") from None
    return context


class Transport:
    """Keeps one MQTT 5 session to the broker; publish() works while ``up`` is set.

    Acks on ``cim/v1/{dev}/ack`` are handed to ``on_ack`` as raw bytes, and commands on
    ``cim/v1/{dev}/cmd`` to ``on_cmd`` (subscribed only when given). The status topic
    carries a retained ``{"online": true}`` while connected and the will ``{"online": false}``.
    """

    def __init__(self, broker: str, dev: str, on_ack: Callable[[bytes], Awaitable[None]], *,
                 on_cmd: Callable[[bytes], Awaitable[None]] | None = None, username: str = "", password_file: Path | None = None,
                 ca_file: Path | None = None, cert_file: Path | None = None,
                 key_file: Path | None = None, keepalive: int = 30,
                 mqtt_version: str = "5", max_packet_size: int = MAX_PACKET_SIZE) -> None:
        self.host, self.port, tls = parse_broker(broker)
        self.dev = dev
        self.on_ack, self.on_cmd = on_ack, on_cmd
        # MQTT 5 is the contract's transport; 3.1.1 only for the demo's in-process broker
        self.protocol = (aiomqtt.ProtocolVersion.V5 if mqtt_version == "5"
                         else aiomqtt.ProtocolVersion.V311)
        self.up = asyncio.Event()
        self.connects = 0
        self.last_error = ""
        self._client: aiomqtt.Client | None = None
        password = read_password(password_file)
        tls_context = make_tls_context(tls, ca_file, cert_file, key_file)
        # Batches, PUBACKs and acks are small packets: Nagle's algorithm would hold each one
        # back until the broker's delayed ACK (about 40 ms on Linux), as the receiver found.
        self._kwargs = dict(username=username or None, password=password,
                            tls_context=tls_context, keepalive=keepalive,
                            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        if self.protocol == aiomqtt.ProtocolVersion.V5:  # 3.1.1 has no such property
            self._kwargs["properties"] = connect_properties(max_packet_size)

    def topic(self, kind: str) -> str:
        return f"cim/v1/{self.dev}/{kind}"

    async def run(self) -> None:
        """Connect, subscribe to acks, hand them over; on any broker error wait and retry."""
        attempt = 0
        will = aiomqtt.Will(self.topic("status"), cbor2.dumps({"online": False}), 1, True)
        while True:
            try:
                async with aiomqtt.Client(
                        self.host, self.port, identifier=f"gw-{self.dev}",
                        protocol=self.protocol, will=will, timeout=10,
                        **self._kwargs) as client:
                    # aiomqtt waits for CONNACK, SUBACK and PUBACK with wait_for, which can
                    # swallow a cancellation (cimedge.stop): check after each
                    reraise_cancelled()
                    await client.subscribe(self.topic("ack"), qos=1)
                    reraise_cancelled()
                    if self.on_cmd is not None:
                        await client.subscribe(self.topic("cmd"), qos=1)
                        reraise_cancelled()
                    await client.publish(self.topic("status"), cbor2.dumps({"online": True}),
                                         qos=1, retain=True)
                    reraise_cancelled()
                    self._client, attempt = client, 0
                    self.connects += 1
                    self.up.set()
                    log.info("connected to %s:%d", self.host, self.port)
                    try:
                        await self._dispatch(client)
                    except asyncio.CancelledError:
                        await self._say_offline(client)
                        raise
            except aiomqtt.MqttError as e:
                self.last_error = str(e)
                log.warning("broker %s:%d: %s", self.host, self.port, e)
            finally:
                self.up.clear()
                self._client = None
            reraise_cancelled()  # the MqttError may stand for a swallowed cancellation
            attempt += 1
            await asyncio.sleep(backoff_delay(attempt))

    async def _dispatch(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if not isinstance(message.payload, bytes | bytearray):
                continue
            if message.topic.value.endswith("/cmd") and self.on_cmd is not None:
                await self.on_cmd(bytes(message.payload))
            else:
                await self.on_ack(bytes(message.payload))

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        """On a clean stop, replace the retained status by hand: the broker publishes the
        will only when a connection breaks, not on a normal DISCONNECT."""
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            await client.publish(self.topic("status"), cbor2.dumps({"online": False}),
                                 qos=1, retain=True, timeout=2.0)

    async def publish(self, kind: str, payload: bytes, timeout: float = 10.0) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK; SyncError when the link is down."""
        client = self._client
        if client is None:
            raise SyncError("not connected to the broker")
        try:
            await client.publish(self.topic(kind), payload, qos=1, timeout=timeout)
        except aiomqtt.MqttError as e:
            raise SyncError(f"publish to {self.host}:{self.port} failed: {e}") from None
        finally:
            reraise_cancelled()  # aiomqtt waits for the PUBACK with wait_for (cimedge.stop)
