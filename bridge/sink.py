"""The only aiokafka user: idempotent producer, topic names, dead letters for records Kafka
refuses, backpressure, flush, and recovery from failed deliveries without losing a record or the
last-record-per-key order. What is in flight, what failed and what to send again is kept by the
pure ledger (`bridge/delivery.py`); this module does the I/O around it.

`publish` returns once the record is in the producer's hands; the broker's ack arrives later
and is observed by a callback (metrics: published count, event lag, frame → ack latency).
At most `buffer_records` records may be unacknowledged: when the buffer is full, `publish`
waits, and so does the websocket read that called it. Nothing is dropped.

Why recovery is needed: with idempotence, aiokafka retries a sent batch until it succeeds, but
a batch still queued for a partition whose leader is unknown expires after
`request_timeout_ms` (e.g. a broker restarting after a long outage). Then the sink stops
accepting records, waits until every record in flight is acknowledged or failed, replaces the
producer (a fresh producer id: no sequence gap left by the expired batch) and sends the
ledger's resend plan one record at a time: the failed records in their original order, then
the newest acknowledged record of each affected key when it was sent after a failed one, so
that the last record per key is the newest again. Consumers may see duplicates (same
`event_id`), never a loss.
"""

from __future__ import annotations

import asyncio
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
    UnknownTopicOrPartitionError,
)
from prometheus_client import Counter, Histogram

from bridge.backoff import Backoff, retry_until
from bridge.codec import Codec, Encoded
from bridge.delivery import Ledger, Pending
from bridge.errors import DeadLetterReason, EncodeError, SinkError
from bridge.kafka import KafkaAccess
from bridge.logs import get_logger
from bridge.metrics import Metrics
from bridge.records import SOURCE_SNAPSHOT, DeadLetter, Envelope, VenueRecord, build_dead_letter
from bridge.sections import KafkaSettings, ReconnectSettings

# Errors no retry can fix: the bridge stops (exit 1) instead of resending forever.
FATAL_DELIVERY_ERRORS = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)
# Delays between attempts to resend a record or to start a replacement producer.
RECOVERY_DELAYS = ReconnectSettings(initial_delay=0.5, max_delay=10.0, multiplier=2.0, jitter=0.0)


class Sink:
    """Publishes records to Kafka with at-least-once delivery and bounded memory."""

    def __init__(
        self,
        settings: KafkaSettings,
        codec: Codec,
        metrics: Metrics,
        producer_factory: Callable[..., AIOKafkaProducer] = AIOKafkaProducer,
        access: KafkaAccess | None = None,
    ) -> None:
        self._settings = settings
        self._codec = codec
        self._producer = _Producer(access or KafkaAccess(settings), producer_factory)
        self.ledger = Ledger(settings.buffer_records)
        self._changed = asyncio.Event()  # set whenever the ledger changes: waiters look again
        self._admission = asyncio.Lock()
        self._recovery: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None
        self._reports = _Reports(metrics)
        self._log = get_logger(component="sink")
        # Hooks for the checkpoint (bridge/changelog.py): who hears of each acknowledged
        # record, and which partition a record must go to (None: the key's partition).
        self.on_acked: Callable[[Envelope], None] | None = None
        self.partition_of: Callable[[Envelope], int | None] | None = None
        metrics.buffer_capacity.set(settings.buffer_records)
        # Read at scrape time: setting the gauge on every publish and every ack cost a lock
        # each, twice per record (tests/bench).
        metrics.buffer_records.set_function(lambda: self.ledger.in_flight)

    async def start(self) -> None:
        """Start the producer. `SinkError` (retriable) when the brokers cannot be reached."""
        try:
            await self._producer.start()
        except KafkaError as exc:
            raise SinkError(f"cannot start the producer: {exc!r}") from exc
        self._log.info("producer started", bootstrap_servers=self._settings.bootstrap_servers)

    async def publish(self, record: Envelope, received_mono: float | None = None) -> None:
        """Hand `record` to the producer, waiting for buffer room (backpressure) and for any
        recovery in progress. Raises `SinkError` once delivery has failed for good."""
        self._raise_if_fatal()
        try:
            encoded = self._codec.encode(record)
        except EncodeError as exc:
            record = _dead_letter_for(record, "encode_error", str(exc))
            encoded = self._codec.encode(record)
        ledger = self.ledger
        if ledger.accepting and not self._admission.locked():
            pending = ledger.admit(record, encoded, received_mono)
        else:
            if not ledger.has_room:
                why = f"buffer full ({ledger.capacity} records unacknowledged)"
                self._reports.pressure(record, why, ledger)
            async with self._admission:  # publishers that wait get room in call order
                await self._until(lambda: self._fatal is not None or ledger.accepting)
                self._raise_if_fatal()
                pending = ledger.admit(record, encoded, received_mono)
        try:
            future = await self._produce(pending)
        except BaseException:
            ledger.dropped(pending)
            self._settled()
            raise
        future.add_done_callback(lambda f: self._on_delivery(f, pending))

    async def _produce(self, pending: Pending) -> asyncio.Future[Any]:
        """The one way to Kafka, for first sends and resends alike: the topic's name,
        `producer.send`, a dead letter in place of a record over the size limit, and waiting
        while the partition's queue cannot drain. Returns the delivery future."""
        while True:
            encoded = pending.encoded
            topic = self._settings.topics.name(encoded.topic)
            try:
                partition = self.partition_of(pending.record) if self.partition_of else None
                return await self._producer.send(topic, encoded, partition)
            except KafkaTimeoutError:
                # The partition's batch could not drain (broker unreachable): keep this record
                # and its place, try again. The caller (the websocket read) waits meanwhile.
                self._reports.error(pending)
                why = f"producer queue for {topic} full (broker not accepting)"
                self._reports.pressure(pending.record, why, self.ledger)
            except MessageSizeTooLargeError as exc:
                self._reports.error(pending)
                self._oversized(pending, exc)
            except UnknownTopicOrPartitionError:
                # The topic is gone (deleted under the running bridge; the start-up check saw
                # it): keep the record and its place and look again after aiokafka's metadata
                # wait (request_timeout_ms). bridge_kafka_up turns 0 (bridge/kafka_check.py).
                self._reports.error(pending)
                self._log.error("topic missing; holding its records until it exists", topic=topic)
                self._reports.pressure(pending.record, f"topic {topic} missing", self.ledger)

    def _on_delivery(self, future: asyncio.Future[Any], pending: Pending) -> None:
        exc = None if future.cancelled() else future.exception()
        if future.cancelled() or exc is not None:
            self._reports.error(pending)
            if isinstance(exc, FATAL_DELIVERY_ERRORS):
                self._fatal = exc
                self._log.error("delivery impossible; stopping", error=repr(exc))
                self.ledger.dropped(pending)
            else:
                if self.ledger.failed(pending):
                    self._log.warning(
                        "delivery failed; pausing to resend in order", error=repr(exc)
                    )
                if self._recovery is None or self._recovery.done():
                    self._recovery = asyncio.get_running_loop().create_task(self._recover())
                    self._recovery.add_done_callback(self._recovery_done)
        else:
            self._acked(pending)
        self._settled()

    async def _recover(self) -> None:
        while self.ledger.recovering:
            # Everything in flight must have an outcome first: a later record of a failed
            # record's key may still be on its way.
            await self._until(lambda: self.ledger.resend_due)
            resend = self.ledger.begin_resend()
            await self._producer.replace()
            # One at a time, each acknowledged before the next: strict order, and a broker's
            # MESSAGE_TOO_LARGE (which refuses a whole batch) is pinned on the record itself.
            for pending in resend.records:
                await self._deliver_alone(pending)
            self._log.info(
                "delivery recovered", resent=len(resend.failed), republished=len(resend.republish)
            )

    async def _deliver_alone(self, pending: Pending) -> None:
        """Send one record and wait for its ack, until it is delivered. After any failure the
        producer is replaced: aiokafka's idempotent producer has already spent the failed
        record's sequence number, and the broker would refuse every later batch as out of order
        (OutOfOrderSequence)."""
        first = True

        async def attempt() -> None:
            nonlocal first
            if not first:
                await self._producer.replace()
            first = False
            await (await self._produce(pending))

        def failed(exc: KafkaError, delay: float) -> None:
            self._reports.error(pending)
            if isinstance(exc, MessageSizeTooLargeError):  # the broker refused this record alone
                self._oversized(pending, exc)
            else:
                self._log.warning("resend failed; retrying", error=repr(exc), retry_in=delay)

        await retry_until(
            attempt,
            Backoff(RECOVERY_DELAYS),
            retry_on=KafkaError,
            retriable=lambda exc: not isinstance(exc, FATAL_DELIVERY_ERRORS),
            delay_hint=lambda exc: 0.0 if isinstance(exc, MessageSizeTooLargeError) else None,
            on_retry=failed,
        )
        self._acked(pending)
        self._settled()

    def _acked(self, pending: Pending) -> None:
        self.ledger.acked(pending)
        self._reports.acked(pending)
        if self.on_acked is not None:
            self.on_acked(pending.record)

    def _recovery_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._fatal = task.exception()
            self._settled()  # let waiting publishers see the failure instead of waiting forever

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise SinkError(str(self._fatal)) from self._fatal

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self._changed.clear()
            await self._changed.wait()

    def _settled(self) -> None:
        """The ledger changed: wake every waiter (admission, flush, recovery) to look again."""
        self._changed.set()
        self._reports.relieved(self.ledger)

    def _oversized(self, pending: Pending, exc: Exception) -> None:
        """Replace a record too large for Kafka by a dead letter carrying its start."""
        if isinstance(pending.record, DeadLetter):
            raise SinkError(f"dead letter {pending.record.event_id} too large even when cut: {exc}")
        self._log.warning("record too large; sent to the dead-letter topic", error=str(exc))
        pending.record = _dead_letter_for(pending.record, "oversized_record", str(exc))
        pending.encoded = self._codec.encode(pending.record)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record handed over so far is acknowledged. False on timeout."""
        try:
            await asyncio.wait_for(self._until(lambda: self.ledger.drained), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self, timeout: float = 20.0) -> bool:
        """Flush (up to `timeout`) and close the producer. True when nothing was left."""
        flushed = await self.flush(timeout)
        if not flushed:
            self._log.error("records not acknowledged at shutdown", count=self.ledger.in_flight)
        if self._recovery is not None and not self._recovery.done():
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        await self._producer.close(timeout=5)
        return flushed


class _Producer:
    """The current aiokafka producer: started, replaced after a failed delivery (a fresh
    producer id leaves no sequence gap behind), closed."""

    def __init__(self, access: KafkaAccess, factory: Callable[..., AIOKafkaProducer]) -> None:
        self._options = access.producer_options()  # built once: TLS context, token cache
        self._factory = factory
        self._current: AIOKafkaProducer | None = None
        self._log = get_logger(component="sink")

    async def start(self) -> None:
        producer = self._factory(**self._options)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._current = producer

    async def send(
        self, topic: str, encoded: Encoded, partition: int | None = None
    ) -> asyncio.Future[Any]:
        assert self._current is not None, "Sink.start() was not awaited"
        future: asyncio.Future[Any] = await self._current.send(
            topic, encoded.value, key=encoded.key, headers=encoded.headers, partition=partition
        )
        return future

    async def replace(self) -> None:
        """Close the current producer and start a new one, retrying until the brokers answer."""
        await self.close(timeout=10)

        def unreachable(exc: KafkaError, delay: float) -> None:
            self._log.warning("kafka unreachable", error=repr(exc), retry_in=delay)

        await retry_until(
            self.start, Backoff(RECOVERY_DELAYS), retry_on=KafkaError, on_retry=unreachable
        )

    async def close(self, timeout: float) -> None:
        producer, self._current = self._current, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), timeout)
            except (TimeoutError, KafkaError) as exc:
                self._log.warning("producer did not close cleanly", error=repr(exc))


def _dead_letter_for(record: Envelope, reason: DeadLetterReason, detail: str) -> DeadLetter:
    """The dead letter standing in for a record Kafka cannot take (`detail` says why)."""
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


@dataclass(frozen=True, slots=True)
class _Children:
    published: Counter
    snapshot: Counter
    latency: Histogram
    lag: Histogram


class _Reports:
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
            children = _Children(
                published=m.records_published.labels(stream, venue, topic),
                snapshot=m.snapshot_records.labels(stream, venue),
                latency=m.pipeline_latency.labels(stream, venue),
                lag=m.event_lag.labels(stream, venue),
            )
            self._children[key] = children
        return children
