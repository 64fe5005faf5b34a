"""The only aiokafka user: idempotent producer, keys, headers, dead letters, backpressure, flush,
and recovery from failed deliveries without losing a record or the last-record-per-key order.

`publish` returns once the record is in the producer's hands; the broker's ack arrives later
and is observed by a callback (metrics: published count, event lag, frame → ack latency).
At most `buffer_records` records may be unacknowledged: when the buffer is full, `publish`
waits, and so does the websocket read that called it. Nothing is dropped.

Why recovery is needed: with idempotence, aiokafka retries a sent batch until it succeeds, but
a batch still queued for a partition whose leader is unknown expires after
`request_timeout_ms` (e.g. a broker restarting after a long outage). Then the sink stops
accepting records, waits until every record in flight is acknowledged or failed, replaces the
producer (a fresh producer id: no sequence gap left by the expired batch), resends the failed
records in their original order, and re-publishes the newest acknowledged record of each
affected key when it was sent after a failed one, so that the last record per key is the
newest again. Consumers may see duplicates (same `event_id`), never a loss.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
)
from prometheus_client import Counter, Histogram

from bridge.codec import Codec, Encoded
from bridge.errors import DeadLetterReason, EncodeError, SinkError
from bridge.logs import get_logger
from bridge.metrics import Metrics
from bridge.records import SOURCE_SNAPSHOT, DeadLetter, Envelope, VenueRecord, build_dead_letter
from bridge.settings import KafkaSettings

# Errors no retry can fix: the bridge stops (exit 1) instead of resending forever.
FATAL_DELIVERY_ERRORS = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)


def producer_options(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka producer options from the config (also used by benchmarks' bare producer)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": settings.linger_ms,
        "max_batch_size": settings.max_batch_bytes,
        "request_timeout_ms": settings.request_timeout_ms,
        "compression_type": None if settings.compression == "none" else settings.compression,
        "security_protocol": settings.security_protocol,
    }
    if settings.sasl_mechanism:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password is not None:
            options["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
        )
    return options


@dataclass(eq=False, slots=True)
class Pending:
    """A record handed to the producer and not yet acknowledged. `seq` is the publish order;
    `slot` says whether it holds a place in the bounded buffer (re-published duplicates don't)."""

    seq: int
    record: Envelope
    encoded: Encoded
    received_mono: float | None
    slot: bool = True

    @property
    def key(self) -> tuple[str, bytes]:
        return self.encoded.topic, self.encoded.key


def plan_resend(
    failed: list[Pending], acked_after: dict[tuple[str, bytes], Pending]
) -> list[Pending]:
    """What to send again after failed deliveries: the failed records in publish order, then,
    for each key with a failed record, the newest acknowledged record of that key that was
    published after its last failed one (it must be the last record of the key again)."""
    ordered = sorted(failed, key=lambda p: p.seq)
    last_failed = {p.key: p.seq for p in ordered}
    newer = [a for key, a in acked_after.items() if a.seq > last_failed.get(key, a.seq)]
    return ordered + sorted(newer, key=lambda p: p.seq)


@dataclass(frozen=True, slots=True)
class _Children:
    published: Counter
    snapshot: Counter
    latency: Histogram
    lag: Histogram


class Sink:
    """Publishes records to Kafka with at-least-once delivery and bounded memory."""

    def __init__(
        self,
        settings: KafkaSettings,
        codec: Codec,
        metrics: Metrics,
        producer_factory: Callable[..., AIOKafkaProducer] = AIOKafkaProducer,
    ) -> None:
        self._settings = settings
        self._codec = codec
        self._metrics = metrics
        self._factory = producer_factory
        self._producer: AIOKafkaProducer | None = None
        self._capacity = settings.buffer_records
        self._room = asyncio.Semaphore(settings.buffer_records)
        self._seq = itertools.count()
        self._in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._settled = asyncio.Event()  # set whenever an in-flight record is acked or failed
        self._open = asyncio.Event()  # cleared while recovering from failed deliveries
        self._open.set()
        self._failed: list[Pending] = []
        self._acked_after: dict[tuple[str, bytes], Pending] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None
        self._backpressure = False
        self._metric_children: dict[tuple[str, str, str], _Children] = {}
        self.resent = 0
        self.republished = 0
        self._log = get_logger(component="sink")
        metrics.buffer_capacity.set(settings.buffer_records)
        # Read at scrape time: setting the gauge on every publish and every ack cost a lock
        # each, twice per record (tests/bench).
        metrics.buffer_records.set_function(lambda: self._in_flight)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def start(self) -> None:
        self._producer = await self._new_producer()
        self._log.info("producer started", bootstrap_servers=self._settings.bootstrap_servers)

    async def _new_producer(self) -> AIOKafkaProducer:
        producer = self._factory(**producer_options(self._settings))
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def publish(self, record: Envelope, received_mono: float | None = None) -> None:
        """Hand `record` to the producer, waiting for buffer room (backpressure) and for any
        recovery in progress. Raises `SinkError` once delivery has failed for good."""
        if self._fatal is not None:
            raise SinkError(str(self._fatal)) from self._fatal
        try:
            encoded = self._codec.encode(record)
        except EncodeError as exc:
            record = self._dead_letter_for(record, "encode_error", str(exc))
            encoded = self._codec.encode(record)
        await self._open.wait()
        if self._room.locked():
            self._pressure(record, f"buffer full ({self._capacity} records unacknowledged)")
        await self._room.acquire()
        self._in_flight += 1
        self._drained.clear()
        pending = Pending(next(self._seq), record, encoded, received_mono)
        try:
            await self._send(pending)
        except BaseException:
            self._release(pending)
            raise

    async def _send(self, pending: Pending) -> None:
        while True:
            producer = self._producer
            assert producer is not None, "Sink.start() was not awaited"
            topic = self._settings.topics.name(pending.encoded.topic)
            encoded = pending.encoded
            try:
                future = await producer.send(
                    topic, encoded.value, key=encoded.key, headers=encoded.headers
                )
                break
            except KafkaTimeoutError:
                # The partition's batch could not drain (broker unreachable): keep this record
                # and its place, try again. The caller (the websocket read) waits meanwhile.
                self._count_error(pending)
                self._pressure(
                    pending.record, f"producer queue for {topic} full (broker not accepting)"
                )
            except MessageSizeTooLargeError as exc:
                self._count_error(pending)
                self._oversized(pending, exc)
        future.add_done_callback(lambda f: self._on_delivery(f, pending))

    def _on_delivery(self, future: asyncio.Future[Any], pending: Pending) -> None:
        self._settled.set()
        exc = None if future.cancelled() else future.exception()
        if future.cancelled() or exc is not None:
            self._delivery_failed(pending, exc)
            return
        if self._acked_after is not None:
            self._acked_after[pending.key] = pending
        self._release(pending)
        self._observe_ack(pending)

    def _delivery_failed(self, pending: Pending, exc: BaseException | None) -> None:
        self._count_error(pending)
        if isinstance(exc, FATAL_DELIVERY_ERRORS):
            self._fatal = exc
            self._log.error("delivery impossible; stopping", error=repr(exc))
            self._release(pending)
            return
        self._failed.append(pending)
        if self._acked_after is None:
            self._acked_after = {}
            self._log.warning("delivery failed; pausing to resend in order", error=repr(exc))
        self._open.clear()
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.get_running_loop().create_task(self._recover())
            self._recovery.add_done_callback(self._recovery_done)

    async def _recover(self) -> None:
        while self._failed:
            # Everything in flight must have an outcome first: a later record of a failed
            # record's key may still be on its way.
            while self._in_flight > len(self._failed):
                self._settled.clear()
                await self._settled.wait()
            failed, self._failed = self._failed, []
            plan = plan_resend(failed, self._acked_after or {})
            self._acked_after = None
            await self._replace_producer()
            for pending in plan[len(failed) :]:
                pending.slot = False  # a duplicate restoring order: no buffer slot of its own
                self._in_flight += 1
            # One at a time, each acknowledged before the next: strict order, and a broker's
            # MESSAGE_TOO_LARGE (which refuses a whole batch) is pinned on the record itself.
            for pending in plan:
                await self._deliver_alone(pending)
            self.resent += len(failed)
            self.republished += len(plan) - len(failed)
            self._log.info(
                "delivery recovered", resent=len(failed), republished=len(plan) - len(failed)
            )
        self._open.set()

    async def _deliver_alone(self, pending: Pending) -> None:
        """Send one record and wait for its ack. After any failure the producer is replaced:
        aiokafka's idempotent producer has already spent the failed record's sequence number,
        and the broker would refuse every later batch as out of order (OutOfOrderSequence)."""
        delay = 0.5
        while True:
            producer = self._producer
            assert producer is not None
            encoded = pending.encoded
            topic = self._settings.topics.name(encoded.topic)
            try:
                future = await producer.send(
                    topic, encoded.value, key=encoded.key, headers=encoded.headers
                )
                await future
            except MessageSizeTooLargeError as exc:
                self._count_error(pending)
                self._oversized(pending, exc)
                await self._replace_producer()
                continue
            except FATAL_DELIVERY_ERRORS:
                raise
            except KafkaError as exc:
                self._count_error(pending)
                self._log.warning("resend failed; retrying", error=repr(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                await self._replace_producer()
                continue
            self._release(pending)
            self._observe_ack(pending)
            return

    async def _replace_producer(self) -> None:
        old, self._producer = self._producer, None
        if old is not None:
            try:
                await asyncio.wait_for(old.stop(), timeout=10)
            except (TimeoutError, KafkaError) as exc:
                self._log.warning("old producer did not close cleanly", error=repr(exc))
        delay = 0.5
        while self._producer is None:
            try:
                self._producer = await self._new_producer()
            except KafkaError as exc:
                self._log.warning("kafka unreachable", error=repr(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _recovery_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._fatal = task.exception()
            self._open.set()  # let publishers see the failure instead of waiting forever

    def _oversized(self, pending: Pending, exc: Exception) -> None:
        """Replace a record too large for Kafka by a dead letter carrying its start."""
        if isinstance(pending.record, DeadLetter):
            raise SinkError(f"dead letter {pending.record.event_id} too large even when cut: {exc}")
        self._log.warning("record too large; sent to the dead-letter topic", error=str(exc))
        pending.record = self._dead_letter_for(pending.record, "oversized_record", str(exc))
        pending.encoded = self._codec.encode(pending.record)

    def _observe_ack(self, pending: Pending) -> None:
        record = pending.record
        m = self._children(record.stream, record.venue, pending.encoded.topic)
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

    def _children(self, stream: str, venue: str, topic: str) -> _Children:
        """The labelled metric children of one (stream, topic), looked up once: `.labels()`
        on every ack was a measurable part of the per-record cost (tests/bench)."""
        key = (stream, venue, topic)
        children = self._metric_children.get(key)
        if children is None:
            m = self._metrics
            children = _Children(
                published=m.records_published.labels(stream, venue, topic),
                snapshot=m.snapshot_records.labels(stream, venue),
                latency=m.pipeline_latency.labels(stream, venue),
                lag=m.event_lag.labels(stream, venue),
            )
            self._metric_children[key] = children
        return children

    def _count_error(self, pending: Pending) -> None:
        record = pending.record
        self._metrics.publish_errors.labels(
            record.stream, record.venue, pending.encoded.topic
        ).inc()

    def _pressure(self, record: Envelope, why: str) -> None:
        """Reading is paused until Kafka takes records again: say so once, at info, naming the
        stream that met it first (the pause holds every stream: they share the buffer)."""
        if not self._backpressure:
            self._backpressure = True
            self._log.info(
                "backpressure on", stream=record.stream, reason=why, in_flight=self._in_flight
            )

    def _release(self, pending: Pending) -> None:
        self._in_flight -= 1
        if pending.slot:
            self._room.release()
        if self._backpressure and self._in_flight <= self._capacity // 2:
            self._backpressure = False
            self._log.info("backpressure off", in_flight=self._in_flight)
        if self._in_flight == 0:
            self._drained.set()

    def _dead_letter_for(
        self, record: Envelope, reason: DeadLetterReason, detail: str
    ) -> DeadLetter:
        raw = record.raw if isinstance(record, DeadLetter | VenueRecord) else ""
        return build_dead_letter(
            venue=record.venue,
            stream=record.stream,
            received_at=record.received_at,
            source=record.source,
            reason=reason,
            detail=f"{record.TOPIC} record {record.event_id}: {detail}",
            raw=raw if isinstance(raw, bytes) else raw.encode(),
        )

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record handed over so far is acknowledged. False on timeout."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self, timeout: float = 20.0) -> bool:
        """Flush (up to `timeout`) and close the producer. True when nothing was left."""
        flushed = await self.flush(timeout)
        if not flushed:
            self._log.error("records not acknowledged at shutdown", count=self._in_flight)
        if self._recovery is not None and not self._recovery.done():
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        if self._producer is not None:
            try:
                await asyncio.wait_for(self._producer.stop(), timeout=5)
            except (TimeoutError, KafkaError) as exc:
                self._log.warning("producer did not close cleanly", error=repr(exc))
            self._producer = None
        return flushed
