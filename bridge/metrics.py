"""Every Prometheus metric, defined once, and the HTTP server for /metrics, /healthz, /readyz.

Labels are bounded: `stream` and `venue` (from the config), `topic` (six logical topics),
`reason` (a fixed vocabulary, below). Never a symbol, an order id or anything from a frame.
Nothing is created at import time: `Metrics()` builds its own registry.

`add_stream` creates every labelled series of a stream at zero when the stream is configured.
Alert rules depend on that: `increase()` cannot see a counter's first increment when the series
appears with the value 1, so the first dead letter, auth failure or reconnect of a series that
did not exist yet would never alert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Protocol, get_args

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from bridge import __version__
from bridge.errors import DeadLetterReason, ReconnectReason, RestErrorKind

# The label vocabularies (bridge.errors): every value is created at zero for each stream.
RECONNECT_REASONS: Final[tuple[ReconnectReason, ...]] = get_args(ReconnectReason)
DEADLETTER_REASONS: Final[tuple[DeadLetterReason, ...]] = get_args(DeadLetterReason)
SNAPSHOT_FAILURE_KINDS: Final[tuple[RestErrorKind, ...]] = get_args(RestErrorKind)
# The `topic` label: logical topics (the Kafka names are configurable, these are not).
TOPICS: Final = (
    "balances",
    "orders",
    "positions",
    "trades",
    "credit",
    "deadletter",
    "control",
    "state",
)
STATE_TOPICS: Final = ("balances", "orders", "positions", "credit")

# Seconds. Fine-grained below 100 ms (the pipeline's normal range), coarse above (outages).
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)


class Metrics:
    """The bridge's metrics on one registry (one per process; tests make their own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No `*_created` series: they double every counter's cardinality and nothing uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry()
        r, sv = self.registry, ("stream", "venue")
        self.ws_connected = Gauge(
            "bridge_ws_connected", "1 while the stream's websocket is open", sv, registry=r
        )
        self.ws_subscribed = Gauge(
            "bridge_ws_subscribed",
            "1 while every subscription of the stream is active",
            sv,
            registry=r,
        )
        self.ws_reconnects = Counter(
            "bridge_ws_reconnects_total",
            "Connections lost or refused, by reason: " + ", ".join(RECONNECT_REASONS),
            (*sv, "reason"),
            registry=r,
        )
        self.ws_sessions = Counter(
            "bridge_ws_sessions_total", "Sessions that reached subscribed", sv, registry=r
        )
        self.ws_messages = Counter(
            "bridge_ws_messages_received_total", "Websocket frames received", sv, registry=r
        )
        self.ws_last_message = Gauge(
            "bridge_ws_last_message_timestamp_seconds",
            "Wall-clock time of the last frame received (epoch seconds; 0 = none since start)",
            sv,
            registry=r,
        )
        self.control_frames = Counter(
            "bridge_control_frames_total",
            "Frames that carried no fact: acks, errors and other control messages",
            sv,
            registry=r,
        )
        self.records_published = Counter(
            "bridge_records_published_total",
            "Records acknowledged by the broker, by logical topic",
            (*sv, "topic"),
            registry=r,
        )
        self.deadletters = Counter(
            "bridge_deadletter_total",
            "Records sent to the dead-letter topic, by reason",
            (*sv, "reason"),
            registry=r,
        )
        self.publish_errors = Counter(
            "bridge_publish_errors_total",
            "Records the producer failed to deliver (each is retried), by logical topic",
            (*sv, "topic"),
            registry=r,
        )
        self.event_lag = Histogram(
            "bridge_event_lag_seconds",
            "Broker ack time minus the venue's event time (stream records that carry one)",
            sv,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.pipeline_latency = Histogram(
            "bridge_pipeline_latency_seconds",
            "Frame received to broker ack",
            sv,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.buffer_records = Gauge(
            "bridge_producer_buffer_records",
            "Records handed to the producer and not yet acknowledged",
            registry=r,
        )
        self.buffer_capacity = Gauge(
            "bridge_producer_buffer_capacity_records",
            "Size of the bounded producer buffer (kafka.buffer_records)",
            registry=r,
        )
        self.auth_failures = Counter(
            "bridge_auth_failures_total",
            "Subscriptions or sessions the venue refused as unauthenticated",
            sv,
            registry=r,
        )
        self.snapshot_records = Counter(
            "bridge_snapshot_records_total",
            "Records published from REST snapshots",
            sv,
            registry=r,
        )
        self.snapshot_failures = Counter(
            "bridge_snapshot_failures_total",
            "Snapshot runs that failed and will be retried, by reason: "
            + ", ".join(SNAPSHOT_FAILURE_KINDS),
            (*sv, "reason"),
            registry=r,
        )
        self.snapshot_last_success = Gauge(
            "bridge_snapshot_last_success_timestamp_seconds",
            "Wall-clock time the stream's last snapshot completed (epoch seconds)",
            sv,
            registry=r,
        )
        self.reconcile_drift = Counter(
            "bridge_reconcile_drift_total",
            "State keys a scheduled or requested reconciliation found different from what was "
            "published, with no push to explain them (pushes the venue did not deliver), by "
            "logical topic",
            (*sv, "topic"),
            registry=r,
        )
        self.restored_keys = Gauge(
            "bridge_state_restored_keys",
            "State keys the stream restored from its checkpoint at start",
            sv,
            registry=r,
        )
        self.restore_seconds = Gauge(
            "bridge_state_restore_seconds",
            "How long restoring every stream's checkpoint took at start",
            registry=r,
        )
        self.kafka_up = Gauge(
            "bridge_kafka_up",
            "1 while the bridge can sign in to Kafka and every configured topic exists and may "
            "be written (checked at start and every kafka.check_interval)",
            registry=r,
        )
        self.kafka_auth_failures = Counter(
            "bridge_kafka_auth_failures_total",
            "Kafka sign-ins refused: SASL authentication failed, or the identity provider "
            "refused the bridge's client",
            registry=r,
        )
        self.build_info = Gauge(
            "bridge_build_info",
            "Always 1; the version label says which build runs",
            ("version",),
            registry=r,
        )
        self.build_info.labels(__version__).set(1)
        # process_start_time_seconds, memory, CPU, open fds (Linux; a no-op elsewhere). The
        # feed-silent alert uses the start time: a fresh process has seen no frame yet.
        ProcessCollector(registry=r)

    def add_stream(self, stream: str, venue: str) -> None:
        """Create every series of a configured stream at zero (see the module docstring)."""
        labels = (stream, venue)
        for gauge in (
            self.ws_connected,
            self.ws_subscribed,
            self.ws_last_message,
            self.snapshot_last_success,
        ):
            gauge.labels(*labels)
        for kind in SNAPSHOT_FAILURE_KINDS:
            self.snapshot_failures.labels(*labels, kind)
        for counter in (
            self.ws_sessions,
            self.ws_messages,
            self.control_frames,
            self.auth_failures,
            self.snapshot_records,
        ):
            counter.labels(*labels)
        for reconnect in RECONNECT_REASONS:
            self.ws_reconnects.labels(*labels, reconnect)
        for dead in DEADLETTER_REASONS:
            self.deadletters.labels(*labels, dead)
        for topic in TOPICS:
            self.records_published.labels(*labels, topic)
            self.publish_errors.labels(*labels, topic)
        for topic in STATE_TOPICS:
            self.reconcile_drift.labels(*labels, topic)
        self.restored_keys.labels(*labels)
        self.event_lag.labels(*labels)
        self.pipeline_latency.labels(*labels)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Readiness(Protocol):
    """A stream as /readyz sees it (bridge.stream.StreamState)."""

    name: str
    subscribed: bool


@dataclass
class Health:
    """What /readyz reports: the producer is up and every stream is subscribed."""

    producer_started: bool = False
    stopping: bool = False
    streams: list[Readiness] = field(default_factory=list)

    def ready(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "shutting down"
        if not self.producer_started:
            return False, "producer not started"
        waiting = sorted(s.name for s in self.streams if not s.subscribed)
        if waiting:
            return False, "not subscribed: " + ", ".join(waiting)
        return True, "ready"


async def start_http_server(
    metrics: Metrics, health: Health, host: str, port: int
) -> web.AppRunner:
    """Serve /metrics, /healthz (the process is alive) and /readyz. Port 0 picks a free port;
    read it back with `bound_port(runner)`."""

    async def get_metrics(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_health(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def get_ready(_: web.Request) -> web.Response:
        ok, detail = health.ready()
        return web.Response(text=detail + "\n", status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_health)
    app.router.add_get("/readyz", get_ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        return int(address[1])
    raise RuntimeError("the metrics server is not listening")
