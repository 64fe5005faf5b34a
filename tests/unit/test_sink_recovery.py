"""The sink's recovery wiring with producers whose acks the test settles by hand: a batch that
expires (the failure no broker test provokes: a SIGKILLed broker did not) pauses publishing,
the records go out again in order through a fresh producer, and a delivery refused for good
stops the sink. The ledger's own rules are tested in test_delivery.py; a real broker refusal
in tests/integration/test_sink.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, TopicAuthorizationFailedError

from bridge.codec import Codec, SchemaStore
from bridge.errors import SinkError
from bridge.metrics import Metrics
from bridge.settings import KafkaSettings
from bridge.sink import Sink
from tests.fakes import PendingProducer
from tests.records import live_balance as balance

pytestmark = pytest.mark.unit


class Producers:
    """The factory the sink gets: each producer it starts is queued for the test."""

    def __init__(self) -> None:
        self.made: list[PendingProducer] = []
        self.new: asyncio.Queue[PendingProducer] = asyncio.Queue()

    def __call__(self, **_: Any) -> PendingProducer:
        producer = PendingProducer()
        self.made.append(producer)
        self.new.put_nowait(producer)
        return producer


async def next_send(producer: PendingProducer) -> tuple[bytes, asyncio.Future[Any]]:
    """The next record the producer is handed (its Avro value) and its delivery future."""
    future = await asyncio.wait_for(producer.sent.get(), 5)
    return producer.values[producer.futures.index(future)], future


async def test_an_expired_batch_is_resent_in_order_through_a_fresh_producer() -> None:
    producers = Producers()
    codec = Codec(SchemaStore.load())
    sink = Sink(KafkaSettings(), codec, Metrics(), producers)
    await sink.start()
    first = producers.new.get_nowait()
    a1, b1, a2, c1 = (balance(*r) for r in [("A", "1"), ("B", "1"), ("A", "2"), ("C", "1")])
    for record in (a1, b1, a2):
        await sink.publish(record)
    sent_a1, sent_b1, sent_a2 = first.futures
    sent_a1.set_exception(KafkaTimeoutError("Batch for TopicPartition expired"))
    later = asyncio.create_task(sink.publish(c1))
    sent_b1.set_result(None)
    sent_a2.set_result(None)  # acknowledged after a1 failed: A's newest, must be last again

    fresh = await asyncio.wait_for(producers.new.get(), 5)
    assert first.stopped, "the producer that spent a1's sequence number is gone"
    value, resend = await next_send(fresh)
    assert value == codec.encode(a1).value
    assert sink.ledger.recovering
    resend.set_result(None)
    value, duplicate = await next_send(fresh)
    assert value == codec.encode(a2).value
    assert fresh.sent.empty(), "one at a time; the new record waits for the recovery"
    duplicate.set_result(None)
    value, sent_c1 = await next_send(fresh)
    assert value == codec.encode(c1).value
    sent_c1.set_result(None)
    await later
    assert await sink.stop(1)
    assert sink.ledger.resent == 1
    assert sink.ledger.in_flight == 0
    assert len(producers.made) == 2


async def test_a_delivery_refused_for_good_stops_the_sink() -> None:
    producers = Producers()
    sink = Sink(KafkaSettings(buffer_records=1), Codec(SchemaStore.load()), Metrics(), producers)
    await sink.start()
    producer = producers.new.get_nowait()
    await sink.publish(balance("A", "1"))
    waiting = asyncio.create_task(sink.publish(balance("B", "1")))  # no room: it waits
    producer.futures[0].set_exception(TopicAuthorizationFailedError())
    with pytest.raises(SinkError):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(SinkError):
        await sink.publish(balance("C", "1"))
    assert len(producer.futures) == 1, "nothing else was handed over"
    assert sink.ledger.in_flight == 0
    assert await sink.stop(1)
