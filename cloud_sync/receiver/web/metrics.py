"""The receiver's Prometheus metrics (prometheus_client): its counters as they run, and each
gateway's last-seen time, state and open alarms read from the store at scrape time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cimedge.cloud_sync.receiver.fleet import FleetRow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Ack latency on one machine is a few ms; over a city's network tens of ms; a slow
# database or a group under load can take seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _ReceiverCounters(Collector):
    """Proxies Receiver.metrics (plain counters the receiver keeps anyway) at scrape time."""

    def __init__(self, receiver: Any) -> None:  # noqa: ANN401 - service.Receiver
        self.receiver = receiver

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        m = self.receiver.metrics
        c = CounterMetricFamily("cim_receiver_messages", "Verified batches and events by what "
                                "the store made of them", labels=["outcome"])
        c.add_metric(["stored"], m["stored"])
        c.add_metric(["duplicate"], m["duplicates"])
        yield c
        for name, key, text in (
                ("received", "received", "Messages taken off the broker (batches and events)"),
                ("readings", "readings", "Readings stored (from new batches)"),
                ("acks_sent", "acks_sent", "Acks published (ok and refusals)"),
                ("commits", "commits", "Store transactions (group commits)"),
                ("errors", "errors", "Messages not acked because the store or registry failed"),
                ("reconnects", "reconnects", "Broker reconnections"),
                ("statuses", "statuses", "Gateway status messages stored")):
            yield CounterMetricFamily(f"cim_receiver_{name}", text, value=m[key])
        for name, counts, text in (
                ("rejects", m["rejects"], "Refused batches and events by reason"),
                ("status_rejects", m["status_rejects"], "Refused status messages by reason")):
            fam = CounterMetricFamily(f"cim_receiver_{name}", text, labels=["reason"])
            for reason, n in sorted(counts.items()):
                fam.add_metric([reason], n)
            yield fam
        n, size = self.receiver.queued()
        yield GaugeMetricFamily("cim_receiver_queue_messages",
                                "Verified messages waiting for their commit", value=n)
        yield GaugeMetricFamily("cim_receiver_queue_bytes",
                                "Wire bytes of the messages waiting for their commit",
                                value=size)
        yield GaugeMetricFamily("cim_receiver_connected", "1 while subscribed to the broker",
                                value=1 if self.receiver.ready.is_set() else 0)


class ReceiverMetrics:
    """The registry a /metrics scrape reads: receiver counters (when the receiver runs in
    this process), its ack latency histogram, and per-gateway gauges from fleet rows."""

    def __init__(self, receiver: Any = None) -> None:  # noqa: ANN401 - service.Receiver
        self.registry = CollectorRegistry(auto_describe=True)
        if receiver is not None:
            self.registry.register(_ReceiverCounters(receiver))
            latency = Histogram("cim_receiver_ack_latency_seconds",
                                "From a message's arrival to its ack's publish",
                                buckets=LATENCY_BUCKETS, registry=self.registry)
            receiver.ack_latency = latency.observe

    def exposition(self, rows: Sequence[FleetRow], now: float) -> bytes:
        """The text exposition: this process's metrics, then one gauge set per gateway."""
        per_gateway = CollectorRegistry(auto_describe=False)
        per_gateway.register(_GatewayGauges(rows, now))
        return generate_latest(self.registry) + generate_latest(per_gateway)


class _GatewayGauges(Collector):
    def __init__(self, rows: Sequence[FleetRow], now: float) -> None:
        self.rows, self.now = rows, now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["dev", "site_type"]
        # Prometheus' convention: export when it happened, not how long ago; the age is
        # `time() - cim_gateway_last_seen_timestamp_seconds` in PromQL.
        seen = GaugeMetricFamily("cim_gateway_last_seen_timestamp_seconds",
                                 "When the receiver last heard from the gateway (batch, event "
                                 "or live status); absent if never", labels=labels)
        online = GaugeMetricFamily("cim_gateway_online", "1 online, 0 offline (from its "
                                   "status; absent before its first status)", labels=labels)
        silent = GaugeMetricFamily("cim_gateway_silent", "1 when enrolled but never seen, or "
                                   "not seen for longer than its site type allows",
                                   labels=labels)
        alarms = GaugeMetricFamily("cim_gateway_open_alarms", "Alarms raised and not cleared",
                                   labels=labels)
        backlog = GaugeMetricFamily("cim_gateway_backlog_readings", "Readings the gateway "
                                    "holds unacked, from its status", labels=labels)
        for r in self.rows:
            key = [r.dev, r.site_type]
            if r.last_seen is not None:
                seen.add_metric(key, r.last_seen)
            if r.state != "unknown":
                online.add_metric(key, 1 if r.state == "online" else 0)
            silent.add_metric(key, 1 if r.silent else 0)
            alarms.add_metric(key, r.open_alarms)
            if r.backlog is not None:
                backlog.add_metric(key, r.backlog)
        gateways = GaugeMetricFamily("cim_gateways", "Enrolled gateways", value=len(self.rows))
        yield from (seen, online, silent, alarms, backlog, gateways)
