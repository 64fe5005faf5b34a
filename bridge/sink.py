"""The only aiokafka user: idempotent producer, topic names, dead letters for records Kafka
refuses, backpressure, flush, and recovery from failed deliveries without losing a record or the
last-record-per-key order. What is in flight, what failed and what to send again is kept by the
pure ledger (`bridge/delivery.py`); this module does the I/O around it.

`publish` returns once the record is in its partition's open batch (bridge/batches.py:
aiokafka's batch API, Kafka's default partitioning, batches closed when full or after
`linger_ms` and sent in order per partition); the broker's ack of a batch arrives later and is
recorded per record (ledger outcome; metrics: published count, event lag, frame → ack
latency). At most `buffer_records` records may be unacknowledged: when the buffer is full,
`publish` waits, and so does the websocket read that called it. Nothing is dropped.

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

from bridge.backoff import Backoff, retry_until
from bridge.batches import Batch, Batcher, Partitioner, oversized
from bridge.codec import Codec
from bridge.delivery import Ledger, Pending
from bridge.disklog import Ticket
from bridge.errors import DeadLetterReason, EncodeError, SinkError
from bridge.kafka import KafkaAccess
from bridge.logs import get_logger
from bridge.metrics import Metrics
from bridge.producer import FENCED_ERRORS, RECOVERY_DELAYS, Producer
from bridge.records import DeadLetter, Envelope, VenueRecord, build_dead_letter
from bridge.sections import KafkaSettings
from bridge.sink_reports import SinkReports

# Errors no retry can fix: the bridge stops (exit 1) instead of resending forever.
FATAL_DELIVERY_ERRORS = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)
# What ends a sink for good besides them: its shard's producer was fenced (fleet mode).
FINAL_ERRORS = (*FATAL_DELIVERY_ERRORS, *FENCED_ERRORS)


class Sink:
    """Publishes records to Kafka with at-least-once delivery and bounded memory."""

    takes_digest = True  # `publish` takes a state record's digest (bridge/stream.py)

    def __init__(
        self,
        settings: KafkaSettings,
        codec: Codec,
        metrics: Metrics,
        producer_factory: Callable[..., AIOKafkaProducer] = AIOKafkaProducer,
        access: KafkaAccess | None = None,
        producer: Producer | None = None,
        report_buffer: bool = True,
    ) -> None:
        self._settings = settings
        self._codec = codec
        self._producer = producer or Producer(access or KafkaAccess(settings), producer_factory)
        self.ledger = Ledger(settings.buffer_records)
        self._changed = asyncio.Event()  # set whenever the ledger changes: waiters look again
        self._admission = asyncio.Lock()
        # Per topic: records join batches in admission order (`_enqueue`), and how many
        # publishers are in the slow path (holding or awaiting the topic's lock).
        self._enqueuing: dict[str, asyncio.Lock] = {}
        self._enqueue_waits: dict[str, int] = {}
        self._recovery: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None
        self._reports = SinkReports(metrics)
        self._log = get_logger(component="sink")
        self._partitioner = Partitioner()
        self._batcher = Batcher(
            settings.linger_ms / 1000, self._send_batch, on_flush=self._partitioner.forget
        )
        # Hooks for the checkpoint (bridge/changelog.py): who hears of each acknowledged
        # record (with the value bytes Kafka holds and the digest given to `publish`), and
        # which partition a record must go to (None: the key's partition).
        self.on_acked: Callable[[Envelope, bytes | None, str | None], None] | None = None
        self.partition_of: Callable[[Envelope], int | None] | None = None
        if report_buffer:  # a fleet member reports the sum over its shards' sinks
            metrics.buffer_capacity.set(settings.buffer_records)
            # Read at scrape time: setting the gauge on every publish and every ack cost a lock
            # each, twice per record (tests/bench).
            metrics.buffer_records.set_function(lambda: self.ledger.in_flight)
            metrics.oldest_unacked.set_function(lambda: self.ledger.oldest_age(time.monotonic()))
        self._stall_watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the producer. `SinkError` (retriable) when the brokers cannot be reached."""
        try:
            await self._producer.start()
        except KafkaError as exc:
            raise SinkError(f"cannot start the producer: {exc!r}") from exc
        self._log.info("producer started", bootstrap_servers=self._settings.bootstrap_servers)
        self._stall_watch = asyncio.create_task(self._watch_stalls(), name="stall watch")

    async def _watch_stalls(self) -> None:
        """Say when Kafka stops acknowledging (a leader lost, a partition below min ISR, a
        broker down): the oldest record in flight older than `stall_seconds`; and when it is
        over. The producer retries such records on its own, so nothing else would tell."""
        threshold = self._settings.stall_seconds
        since: float | None = None
        while True:
            await asyncio.sleep(min(threshold / 2, 1.0))
            now = time.monotonic()
            oldest, age = self.ledger.oldest(), self.ledger.oldest_age(now)
            if since is None and oldest is not None and age >= threshold:
                since = oldest.admitted
                self._log.warning(
                    "kafka stall started",
                    oldest_unacked_seconds=round(age, 1),
                    topic=self._settings.topics.name(oldest.encoded.topic),
                    in_flight=self.ledger.in_flight,
                )
            elif since is not None and age < threshold:
                self._log.info("kafka stall ended", seconds=round(now - since, 1))
                since = None

    async def publish(
        self,
        record: Envelope,
        received_mono: float | None = None,
        ticket: Ticket | None = None,
        digest: str | None = None,
    ) -> None:
        """Hand `record` to the producer, waiting for buffer room (backpressure) and for any
        recovery in progress. Raises `SinkError` once delivery has failed for good. `ticket`:
        the disk buffer's frame the record was made from, settled on the record's ack;
        `digest`: a state record's digest, handed to `on_acked` (the checkpoint's)."""
        self._raise_if_fatal()
        try:
            encoded = self._codec.encode(record)
        except EncodeError as exc:
            record = _dead_letter_for(record, "encode_error", str(exc))
            encoded = self._codec.encode(record)
        ledger = self.ledger
        if ledger.accepting and not self._admission.locked():
            pending = ledger.admit(record, encoded, received_mono, time.monotonic())
        else:
            if not ledger.has_room:
                why = f"buffer full ({ledger.capacity} records unacknowledged)"
                self._reports.pressure(record, why, ledger)
            async with self._admission:  # publishers that wait get room in call order
                await self._until(lambda: self._fatal is not None or ledger.accepting)
                self._raise_if_fatal()
                pending = ledger.admit(record, encoded, received_mono, time.monotonic())
        pending.digest = digest
        if ticket is not None:
            pending.ticket = ticket
            ticket.hold()
        try:
            await self._enqueue(pending)
        except BaseException:
            ledger.dropped(pending)
            self._settled()
            raise

    async def _enqueue(self, pending: Pending) -> None:
        """Into its partition's open batch (bridge/batches.py); a record over the producer's
        request limit becomes a dead letter first, as `send()` would refuse it."""
        while True:
            encoded = pending.encoded
            size = oversized(encoded.key, encoded.value, encoded.headers)
            if size is None:
                break
            self._reports.error(pending)
            self._oversized(pending, MessageSizeTooLargeError(f"record of {size} bytes"))
        topic = self._settings.topics.name(encoded.topic)
        # In admission order: a record that waits for its topic's partitions (the first of a
        # topic on a new producer: a metadata request) must not be overtaken by one admitted
        # after it, or a key's older record lands last (a fleet shard's start-up snapshot
        # record after a newer push). Per topic: keys are, and a topic deleted under the
        # bridge (its records wait here) holds no other topic's. While none waits, a record
        # whose partition is known joins its batch at once (the lock's round trip was ~2 % of
        # a record, tests/bench).
        partition = self.partition_of(pending.record) if self.partition_of else None
        waits = self._enqueue_waits
        if not waits.get(topic):
            if partition is None:
                partition = self._partitioner.known(topic, encoded.key)
            if partition is not None:
                self._batcher.add((topic, partition), pending, self._producer.current.create_batch)
                return
        waits[topic] = waits.get(topic, 0) + 1
        try:
            async with self._enqueuing.setdefault(topic, asyncio.Lock()):
                producer = self._producer.current
                while partition is None:
                    try:
                        partition = await self._partitioner.partition(producer, topic, encoded.key)
                    except UnknownTopicOrPartitionError:
                        self._missing_topic(pending, topic)  # after aiokafka's metadata wait
                self._batcher.add((topic, partition), pending, producer.create_batch)
        finally:
            waits[topic] -= 1

    async def _send_batch(self, batch: Batch) -> None:
        """Hand one closed batch to the producer (its lane waits meanwhile). While the
        partition's queue cannot drain (broker unreachable) the batch keeps its place."""
        while True:
            try:
                future = await self._producer.send_batch(batch)
            except KafkaTimeoutError:
                for pending in batch.pendings:
                    self._reports.error(pending)
                why = f"producer queue for {batch.topic} full (broker not accepting)"
                self._reports.pressure(batch.pendings[0].record, why, self.ledger)
                continue
            except UnknownTopicOrPartitionError:
                for pending in batch.pendings:
                    self._missing_topic(pending, batch.topic)
                continue
            except KafkaError as exc:
                self._outcomes(batch.pendings, exc)
                return
            future.add_done_callback(lambda f: self._on_batch(f, batch))
            return

    def _on_batch(self, future: asyncio.Future[Any], batch: Batch) -> None:
        if future.cancelled():
            self._outcomes(batch.pendings, KafkaError("batch cancelled"))
        else:
            self._outcomes(batch.pendings, future.exception())

    async def _produce(self, pending: Pending) -> asyncio.Future[Any]:
        """The one way to Kafka, for first sends and resends alike: the topic's name,
        `producer.send`, a dead letter in place of a record over the size limit, and waiting
        while the partition's queue cannot drain. Returns the delivery future."""
        while True:
            encoded = pending.encoded
            topic = self._settings.topics.name(encoded.topic)
            try:
                partition = self.partition_of(pending.record) if self.partition_of else None
                return await self._producer.send(topic, encoded, partition, pending.record)
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
                self._missing_topic(pending, topic)

    def _missing_topic(self, pending: Pending, topic: str) -> None:
        """The topic is gone (deleted under the running bridge; the start-up check saw it):
        the record keeps its place and is tried again after aiokafka's metadata wait
        (request_timeout_ms). bridge_kafka_up turns 0 (bridge/kafka_check.py)."""
        self._reports.error(pending)
        self._log.error("topic missing; holding its records until it exists", topic=topic)
        self._reports.pressure(pending.record, f"topic {topic} missing", self.ledger)

    def _outcomes(self, pendings: list[Pending], exc: BaseException | None) -> None:
        """The broker's answer for records sent together, recorded per record: acknowledged,
        failed (to be resent in order), or refused for good (the sink stops)."""
        ledger = self.ledger
        if exc is None:
            for pending in pendings:
                self._acked(pending)
        elif isinstance(exc, FINAL_ERRORS):
            self._fatal = exc
            self._log.error("delivery impossible; stopping", error=repr(exc))
            for pending in pendings:
                self._reports.error(pending)
                ledger.dropped(pending)
        else:
            opened = False
            for pending in pendings:
                self._reports.error(pending)
                opened = ledger.failed(pending) or opened
            if opened:
                self._log.warning("delivery failed; pausing to resend in order", error=repr(exc))
            if self._recovery is None or self._recovery.done():
                self._recovery = asyncio.get_running_loop().create_task(self._recover())
                self._recovery.add_done_callback(self._recovery_done)
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
            retriable=lambda exc: not isinstance(exc, FINAL_ERRORS),
            delay_hint=lambda exc: 0.0 if isinstance(exc, MessageSizeTooLargeError) else None,
            on_retry=failed,
        )
        self._acked(pending)
        self._settled()

    def _acked(self, pending: Pending) -> None:
        self.ledger.acked(pending)
        if pending.ticket is not None:
            pending.settle_ticket()
        self._reports.acked(pending)
        if self.on_acked is not None:
            self.on_acked(pending.record, pending.encoded.value, pending.digest)

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

    def single_object(self, record: Envelope, value: bytes) -> bytes:
        """`value`, as this sink's codec wrote it for `record`, in single-object framing."""
        return self._codec.single_object(record, value)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record handed over so far is acknowledged. False on timeout."""
        self._batcher.flush()  # no reason to linger: send what is open now
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
        for task in (self._recovery, self._stall_watch):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._batcher.stop()
        await self._producer.close(timeout=5)
        return flushed


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
