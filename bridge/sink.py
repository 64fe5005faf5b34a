"""The only aiokafka user: idempotent producer, keys, headers, dead letters, backpressure, flush.

`publish` returns once the record is in the producer's hands; the broker's ack arrives later
and is observed by a callback (metrics: published count, event lag, frame → ack latency).
A bounded number of records may be unacknowledged at once: when the buffer is full, `publish`
waits, and so does the websocket read that called it. Nothing is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from bridge.codec import Codec, Encoded
from bridge.errors import EncodeError, SinkError
from bridge.logs import get_logger
from bridge.metrics import Metrics
from bridge.records import SOURCE_SNAPSHOT, DeadLetter, Envelope, VenueRecord, build_dead_letter
from bridge.settings import KafkaSettings


def producer_options(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka producer options from the config (also used by benchmarks' bare producer)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": settings.linger_ms,
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
        self._room = asyncio.Semaphore(settings.buffer_records)
        self._in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None  # a resend that could not be done
        self._backpressure = False  # on while a publish waited for room, off at half empty
        self._log = get_logger(component="sink")
        metrics.buffer_capacity.set(settings.buffer_records)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def start(self) -> None:
        producer = self._factory(**producer_options(self._settings))
        await producer.start()
        self._producer = producer
        self._log.info("producer started", bootstrap_servers=self._settings.bootstrap_servers)

    async def publish(self, record: Envelope, received_mono: float | None = None) -> None:
        """Hand `record` to the producer (waiting for buffer room: backpressure)."""
        if self._failure is not None:
            raise self._failure
        try:
            encoded = self._codec.encode(record)
        except EncodeError as exc:
            record = self._dead_letter_for(record, "encode_error", str(exc))
            encoded = self._codec.encode(record)
        if self._room.locked() and not self._backpressure:  # log the episode, not each wait
            self._backpressure = True
            self._log.info("backpressure on", stream=record.stream, buffered=self._in_flight)
        await self._room.acquire()
        self._in_flight += 1
        self._drained.clear()
        self._metrics.buffer_records.set(self._in_flight)
        try:
            await self._send(record, encoded, received_mono)
        except BaseException:
            self._release()
            raise

    async def _send(self, record: Envelope, encoded: Encoded, received_mono: float | None) -> None:
        producer = self._producer
        assert producer is not None, "Sink.start() was not awaited"
        while True:
            topic = self._settings.topics.name(encoded.topic)
            try:
                future = await producer.send(
                    topic, encoded.value, key=encoded.key, headers=encoded.headers
                )
                break
            except KafkaTimeoutError:
                # The partition's batch could not drain (broker unreachable): keep this record
                # and its order, try again. The caller (the websocket read) waits meanwhile.
                self._count_error(record, encoded.topic)
                self._log.warning("broker not accepting records; retrying", topic=topic)
            except MessageSizeTooLargeError as exc:
                self._count_error(record, encoded.topic)
                record, encoded = self._oversized(record, exc)
        future.add_done_callback(lambda f: self._on_delivery(f, record, encoded, received_mono))

    def _oversized(self, record: Envelope, exc: Exception) -> tuple[Envelope, Encoded]:
        """Replace a record too large for Kafka by a dead letter carrying its start."""
        if isinstance(record, DeadLetter):
            raise SinkError(f"dead letter {record.event_id} too large even when cut: {exc}")
        self._log.warning("record too large; sent to the dead-letter topic", error=str(exc))
        dead = self._dead_letter_for(record, "oversized_record", str(exc))
        return dead, self._codec.encode(dead)

    def _on_delivery(
        self,
        future: asyncio.Future[Any],
        record: Envelope,
        encoded: Encoded,
        received_mono: float | None,
    ) -> None:
        exc = None if future.cancelled() else future.exception()
        if future.cancelled() or exc is not None:
            self._count_error(record, encoded.topic)
            self._retry(record, encoded, received_mono, exc)
            return
        self._release()
        self._observe_ack(record, encoded.topic, received_mono)

    def _retry(
        self,
        record: Envelope,
        encoded: Encoded,
        received_mono: float | None,
        exc: BaseException | None,
    ) -> None:
        """Deliver again, keeping the buffer slot. A record too large for the broker is
        replaced by a dead letter saying so."""
        if isinstance(exc, MessageSizeTooLargeError):
            record, encoded = self._oversized(record, exc)
        self._log.warning(
            "delivery failed; sending again",
            topic=encoded.topic,
            event_id=record.event_id,
            error=repr(exc),
        )
        task = asyncio.get_running_loop().create_task(self._send(record, encoded, received_mono))
        self._tasks.add(task)
        task.add_done_callback(self._resend_done)

    def _resend_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._failure = task.exception()
            self._release()

    def _observe_ack(self, record: Envelope, topic: str, received_mono: float | None) -> None:
        m, labels = self._metrics, (record.stream, record.venue)
        m.records_published.labels(*labels, topic).inc()
        if isinstance(record, DeadLetter):
            m.deadletters.labels(*labels, record.reason).inc()
        if record.source == SOURCE_SNAPSHOT:
            m.snapshot_records.labels(*labels).inc()
        if received_mono is not None:
            m.pipeline_latency.labels(*labels).observe(time.monotonic() - received_mono)
        if (  # a snapshot restates old facts: their event time says nothing about our lag
            isinstance(record, VenueRecord)
            and record.event_time is not None
            and record.source != SOURCE_SNAPSHOT
        ):
            lag = time.time() - record.event_time / 1000
            m.event_lag.labels(*labels).observe(max(lag, 0.0))

    def _count_error(self, record: Envelope, topic: str) -> None:
        self._metrics.publish_errors.labels(record.stream, record.venue, topic).inc()

    def _release(self) -> None:
        self._in_flight -= 1
        self._metrics.buffer_records.set(self._in_flight)
        self._room.release()
        if self._backpressure and self._in_flight <= self._settings.buffer_records // 2:
            self._backpressure = False
            self._log.info("backpressure off", buffered=self._in_flight)
        if self._in_flight == 0:
            self._drained.set()

    def _dead_letter_for(self, record: Envelope, reason: str, detail: str) -> DeadLetter:
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
        if self._producer is not None:
            try:
                await asyncio.wait_for(self._producer.stop(), timeout=5)
            except (TimeoutError, KafkaError) as exc:
                self._log.warning("producer did not close cleanly", error=repr(exc))
            self._producer = None
        return flushed
