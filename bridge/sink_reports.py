"""What the sink says about itself: metrics observed on the broker's ack (published count,
dead letters, snapshot records, frame → ack latency, event lag) and on each delivery error;
backpressure episodes in the log. Observed per record, also when records travel in batches."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bridge.delivery import Ledger, Pending
from bridge.logs import get_logger
from bridge.metrics import Metrics
from bridge.records import SOURCE_SNAPSHOT, DeadLetter, Envelope, VenueRecord
from bridge.series import CounterChild, HistogramChild


@dataclass(frozen=True, slots=True)
class _Children:
    published: CounterChild
    snapshot: CounterChild
    latency: HistogramChild
    lag: HistogramChild


class SinkReports:
    """What the sink says about itself: metrics observed on the broker's ack (published count,
    dead letters, snapshot records, frame → ack latency, event lag) and on each delivery error;
    backpressure episodes in the log."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._children: dict[tuple[str, str, str], _Children] = {}
        self._log = get_logger(component="sink")
        self._backpressure = False

    def pressure(self, record: Envelope, why: str, ledger: Ledger) -> None:
        """Reading is paused until Kafka takes records again: say so once, at info, naming the
        stream that met it first (the pause holds every stream: they share the buffer)."""
        if not self._backpressure:
            self._backpressure = True
            self._log.info(
                "backpressure on", stream=record.stream, reason=why, in_flight=ledger.in_flight
            )

    def relieved(self, ledger: Ledger) -> None:
        """The episode ends when the buffer is back to half empty."""
        if self._backpressure and ledger.in_flight <= ledger.capacity // 2:
            self._backpressure = False
            self._log.info("backpressure off", in_flight=ledger.in_flight)

    def acked(self, pending: Pending) -> None:
        record = pending.record
        m = self._labelled(record.stream, record.venue, pending.encoded.topic)
        m.published.inc()
        if isinstance(record, DeadLetter):
            self._metrics.deadletters.labels(record.stream, record.venue, record.reason).inc()
        if record.source == SOURCE_SNAPSHOT:
            m.snapshot.inc()
        if pending.received_mono is not None:
            m.latency.observe(time.monotonic() - pending.received_mono)
        # Lag is about live events: a snapshot restating an old fact would read as huge lag.
        live = record.source != SOURCE_SNAPSHOT
        if live and isinstance(record, VenueRecord) and record.event_time is not None:
            m.lag.observe(max(time.time() - record.event_time / 1000, 0.0))

    def error(self, pending: Pending) -> None:
        record = pending.record
        self._metrics.publish_errors.labels(
            record.stream, record.venue, pending.encoded.topic
        ).inc()

    def _labelled(self, stream: str, venue: str, topic: str) -> _Children:
        """The labelled children of one (stream, topic), looked up once: `.labels()` on every
        ack was a measurable part of the per-record cost (tests/bench)."""
        key = (stream, venue, topic)
        children = self._children.get(key)
        if children is None:
            m = self._metrics
            latency, lag = m.latencies(stream, venue)
            children = _Children(
                published=m.records_published.labels(stream, venue, topic),
                snapshot=m.snapshot_records.labels(stream, venue),
                latency=latency,
                lag=lag,
            )
            self._children[key] = children
        return children
