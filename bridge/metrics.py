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

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol, TypeVar, get_args

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)

from bridge import __version__
from bridge.errors import DeadLetterReason, ReconnectReason, RestErrorKind
from bridge.series import (
    CounterFamily,
    FamiliesCollector,
    Family,
    GaugeFamily,
    HistogramChild,
    HistogramFamily,
    render_chunks,
    render_lines,
)

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
FLEET_STOP_REASONS: Final = ("moved", "lease_expired", "lost", "shutdown")

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


F = TypeVar("F", bound=Family)

# cgroup v2, then v1: the container's own cgroup as it sees it (a cgroup namespace).
CGROUP_MEMORY_LIMITS: Final = (
    "sys/fs/cgroup/memory.max",
    "sys/fs/cgroup/memory/memory.limit_in_bytes",
)


def memory_limit_bytes(root: Path = Path("/")) -> float:
    """What the kernel lets this process use before it is killed: its cgroup's memory limit
    where one is set, else the machine's memory (`MemTotal`); 0 when neither can be read. v1
    says "no limit" with a huge number, v2 with `max`."""
    machine = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in (root / "proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                machine = float(line.split()[1]) * 1024
    for path in CGROUP_MEMORY_LIMITS:
        with contextlib.suppress(OSError, ValueError):
            limit = float((root / path).read_text().strip())
            return min(limit, machine) if machine else limit
    return machine


# While /metrics is served, the render yields to the event loop after this many seconds (it
# checks the time every `RENDER_SLICE_SERIES` label sets). A yield after every 100 series made
# a scrape of 1,000 streams wait for ~900 loop turns: 0.30 s at most under load, for ~0.05 s
# of rendering (tests/bench fan-out). Pushes and pings wait at most this long for a turn.
RENDER_SLICE_S: Final = 0.005
RENDER_SLICE_SERIES: Final = 100


class Metrics:
    """The bridge's metrics (one set per process; tests make their own).

    The bridge's own series are lock-free (bridge/series.py) and rendered by `render`; the
    `registry` (prometheus_client) holds them through a collector, with the standard
    `process_*` metrics, so `registry.get_sample_value` sees everything a scrape shows.
    No `*_created` series: they would double every counter and nothing reads them.
    """

    def __init__(self, stream_histograms: bool = True) -> None:
        self._families: list[Family] = []
        self._stream_histograms = stream_histograms
        self.registry = CollectorRegistry()
        self.registry.register(FamiliesCollector(lambda: self._families))
        self._process = CollectorRegistry()
        sv = ("stream", "venue")
        self.ws_connected = self._gauge(
            "bridge_ws_connected", "1 while the stream's websocket is open", sv
        )
        self.ws_subscribed = self._gauge(
            "bridge_ws_subscribed",
            "1 while every subscription of the stream is active",
            sv,
        )
        self.ws_reconnects = self._counter(
            "bridge_ws_reconnects_total",
            "Connections lost or refused, by reason: " + ", ".join(RECONNECT_REASONS),
            (*sv, "reason"),
        )
        self.ws_sessions = self._counter(
            "bridge_ws_sessions_total", "Sessions that reached subscribed", sv
        )
        self.ws_messages = self._counter(
            "bridge_ws_messages_received_total", "Websocket frames received", sv
        )
        self.ws_last_message = self._gauge(
            "bridge_ws_last_message_timestamp_seconds",
            "Wall-clock time of the last frame received (epoch seconds; 0 = none since start)",
            sv,
        )
        self.control_frames = self._counter(
            "bridge_control_frames_total",
            "Frames that carried no fact: acks, errors and other control messages",
            sv,
        )
        self.records_published = self._counter(
            "bridge_records_published_total",
            "Records acknowledged by the broker, by logical topic",
            (*sv, "topic"),
        )
        self.deadletters = self._counter(
            "bridge_deadletter_total",
            "Records sent to the dead-letter topic, by reason",
            (*sv, "reason"),
        )
        self.publish_errors = self._counter(
            "bridge_publish_errors_total",
            "Records the producer failed to deliver (each is retried), by logical topic",
            (*sv, "topic"),
        )
        hv = sv if stream_histograms else ("venue",)  # metrics.stream_histograms
        self.event_lag = self._histogram(
            "bridge_event_lag_seconds",
            "Broker ack time minus the venue's event time (stream records that carry one)",
            hv,
        )
        self.pipeline_latency = self._histogram(
            "bridge_pipeline_latency_seconds",
            "Frame received to broker ack",
            hv,
        )
        self.buffer_records = self._gauge(
            "bridge_producer_buffer_records",
            "Records handed to the producer and not yet acknowledged",
        )
        self.oldest_unacked = self._gauge(
            "bridge_producer_oldest_unacked_age_seconds",
            "Age of the oldest record handed to the producer and not yet acknowledged "
            "(0 when none): grows while Kafka stalls",
        )
        self.buffer_capacity = self._gauge(
            "bridge_producer_buffer_capacity_records",
            "Size of the bounded producer buffer (kafka.buffer_records)",
        )
        self.auth_failures = self._counter(
            "bridge_auth_failures_total",
            "Subscriptions or sessions the venue refused as unauthenticated",
            sv,
        )
        self.snapshot_records = self._counter(
            "bridge_snapshot_records_total",
            "Records published from REST snapshots",
            sv,
        )
        self.snapshot_failures = self._counter(
            "bridge_snapshot_failures_total",
            "Snapshot runs that failed and will be retried, by reason: "
            + ", ".join(SNAPSHOT_FAILURE_KINDS),
            (*sv, "reason"),
        )
        self.snapshot_last_success = self._gauge(
            "bridge_snapshot_last_success_timestamp_seconds",
            "Wall-clock time the stream's last snapshot completed (epoch seconds)",
            sv,
        )
        self.reconcile_drift = self._counter(
            "bridge_reconcile_drift_total",
            "State keys a scheduled or requested reconciliation found different from what was "
            "published, with no push to explain them (pushes the venue did not deliver), by "
            "logical topic",
            (*sv, "topic"),
        )
        self.restored_keys = self._gauge(
            "bridge_state_restored_keys",
            "State keys the stream restored from its checkpoint at start",
            sv,
        )
        self.state_keys = self._gauge(
            "bridge_state_keys",
            "State keys the stream remembers now: one digest per balance, credit line, open "
            "order or position, and per finished one until it is forgotten (~340 bytes each; "
            "what grows the bridge's memory)",
            sv,
        )
        self.restore_seconds = self._gauge(
            "bridge_state_restore_seconds",
            "How long restoring every stream's checkpoint took at start",
        )
        self.kafka_up = self._gauge(
            "bridge_kafka_up",
            "1 while the bridge can sign in to Kafka and every configured topic exists and may "
            "be written (checked at start and every kafka.check_interval)",
        )
        self.kafka_auth_failures = self._counter(
            "bridge_kafka_auth_failures_total",
            "Kafka sign-ins refused: SASL authentication failed, or the identity provider "
            "refused the bridge's client",
        )
        # The disk buffer (disk_buffer; bridge/diskbuffer.py): one log per process.
        self.disk_buffer_bytes = self._gauge(
            "bridge_disk_buffer_bytes",
            "Bytes of the disk buffer's files: frames not yet released, and released ones "
            "sharing a file with them",
        )
        self.disk_buffer_capacity = self._gauge(
            "bridge_disk_buffer_capacity_bytes",
            "The disk buffer's size limit (disk_buffer.max_bytes; 0 when it is off): reading "
            "pauses when its files reach it",
        )
        self.disk_buffer_frames = self._gauge(
            "bridge_disk_buffer_frames",
            "Frames in the disk buffer whose records are not all acknowledged yet",
        )
        self.disk_buffer_replayed = self._counter(
            "bridge_disk_buffer_replayed_frames_total",
            "Frames a previous run left in the disk buffer, published again at start",
        )
        self.disk_buffer_torn = self._counter(
            "bridge_disk_buffer_torn_entries_total",
            "Disk buffer files whose last entry was incomplete or damaged at start (skipped)",
        )
        self.disk_buffer_write_errors = self._counter(
            "bridge_disk_buffer_write_errors_total",
            "Failed writes and fsyncs of the disk buffer (a write is retried while reading "
            "waits; a failed fsync stops the process)",
        )
        self.stream_owned = self._gauge(
            "bridge_stream_owned",
            "1 while this process runs the stream (fleet mode: while this member owns the "
            "stream's shard), 0 otherwise; summed over a fleet's members exactly 1 per stream",
            sv,
        )
        self.fleet_members = self._gauge(
            "bridge_fleet_members", "Fleet mode: members of the group, as its coordinator says"
        )
        self.fleet_shards = self._gauge(
            "bridge_fleet_shards_assigned", "Fleet mode: shards the group assigned this member"
        )
        self.fleet_rebalances = self._counter(
            "bridge_fleet_rebalances_total",
            "Fleet mode: rebalances this member completed (each ends with a new assignment)",
        )
        self.fleet_stream_starts = self._counter(
            "bridge_fleet_stream_starts_total",
            "Fleet mode: streams this member started because it got their shard",
        )
        self.fleet_stream_stops = self._counter(
            "bridge_fleet_stream_stops_total",
            "Fleet mode: streams this member stopped, by reason: moved (the shard went to "
            "another member), lease_expired (no heartbeat for the session timeout), lost "
            "(fenced, or its producer failed; started again while the shard is ours), shutdown",
            ("reason",),
        )
        self.fleet_lease_expirations = self._counter(
            "bridge_fleet_lease_expirations_total",
            "Fleet mode: times this member's lease expired (it lost contact with the group for "
            "the session timeout) and it stopped its streams",
        )
        self.memory_limit = self._gauge(
            "bridge_memory_limit_bytes",
            "The memory this process may use: its cgroup's limit (a container's "
            "resources.limits.memory), else the machine's; read at start",
        )
        self.memory_limit.set(memory_limit_bytes())
        self.build_info = self._gauge(
            "bridge_build_info",
            "Always 1; the version label says which build runs",
            ("version",),
        )
        self.build_info.labels(__version__).set(1)
        for reason in FLEET_STOP_REASONS:
            self.fleet_stream_stops.labels(reason)
        # process_start_time_seconds, memory, CPU, open fds (Linux; a no-op elsewhere). The
        # feed-silent alert uses the start time: a fresh process has seen no frame yet.
        process = ProcessCollector(registry=self._process)
        self.registry.register(process)

    def _gauge(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> GaugeFamily:
        return self._add(GaugeFamily(name, documentation, labels))

    def _counter(
        self, name: str, documentation: str, labels: tuple[str, ...] = ()
    ) -> CounterFamily:
        return self._add(CounterFamily(name, documentation, labels))

    def _histogram(self, name: str, documentation: str, labels: tuple[str, ...]) -> HistogramFamily:
        return self._add(HistogramFamily(name, documentation, labels, LATENCY_BUCKETS))

    def _add(self, family: F) -> F:
        self._families.append(family)
        return family

    def add_stream(self, stream: str, venue: str) -> None:
        """Create every series of a configured stream at zero (see the module docstring)."""
        labels = (stream, venue)
        for gauge in (
            self.ws_connected,
            self.ws_subscribed,
            self.ws_last_message,
            self.snapshot_last_success,
            self.state_keys,
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
        self.latencies(stream, venue)

    def latencies(self, stream: str, venue: str) -> tuple[HistogramChild, HistogramChild]:
        """A stream's series of `pipeline_latency` and `event_lag`: its own, or its venue's
        (`metrics.stream_histograms: false`)."""
        labels = (stream, venue) if self._stream_histograms else (venue,)
        return self.pipeline_latency.labels(*labels), self.event_lag.labels(*labels)

    def render(self) -> bytes:
        return render_lines(self._families).encode() + generate_latest(self._process)

    async def render_slices(
        self, clock: Callable[[], float] = time.monotonic
    ) -> AsyncIterator[bytes]:
        """`render`, handed out a slice at a time: after each `RENDER_SLICE_S` seconds of
        rendering, what it made so far, then a turn for the loop. A scrape of thousands of
        streams must not hold pings and pushes, nor be held whole in memory (the text, its
        pieces and its bytes at once: ~23 MB for 1,000 streams, tests/bench fan-out RSS)."""
        parts: list[str] = []
        started = clock()
        for chunk in render_chunks(self._families, RENDER_SLICE_SERIES):
            parts.append(chunk)
            if clock() - started >= RENDER_SLICE_S:
                yield "".join(parts).encode()
                parts.clear()
                await asyncio.sleep(0)
                started = clock()
        yield "".join(parts).encode() + generate_latest(self._process)


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
    pending: str | None = None  # fleet mode: why the member does not run all it owns yet

    def ready(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "shutting down"
        if not self.producer_started:
            return False, "producer not started"
        if self.pending:
            return False, self.pending
        waiting = sorted(s.name for s in self.streams if not s.subscribed)
        if waiting:
            return False, "not subscribed: " + ", ".join(waiting)
        return True, "ready"


async def start_http_server(
    metrics: Metrics, health: Health, host: str, port: int
) -> web.AppRunner:
    """Serve /metrics, /healthz (the process is alive) and /readyz. Port 0 picks a free port;
    read it back with `bound_port(runner)`."""

    async def get_metrics(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_LATEST})
        await response.prepare(request)
        try:
            async for piece in metrics.render_slices():
                await response.write(piece)  # waits while the scraper is behind
            await response.write_eof()
        except ConnectionError:
            pass  # the scraper gave up (its scrape_timeout): no one to answer, nothing to log
        return response

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
