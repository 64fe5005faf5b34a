"""The sink's recovery wiring with producers whose acks the test settles by hand: a batch that
expires (the failure no broker test provokes: a SIGKILLed broker did not) pauses publishing,
the records go out again in order through a fresh producer, and a delivery refused for good
stops the sink. The ledger's own rules are tested in test_delivery.py; a real broker refusal
in tests/integration/test_sink.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from aiokafka.errors import KafkaTimeoutError, TopicAuthorizationFailedError

from bridge.codec import Codec, Encoded, SchemaStore
from bridge.errors import SinkError
from bridge.kafka import KafkaAccess
from bridge.metrics import Metrics
from bridge.producer import ShardLost, TxnProducer
from bridge.settings import KafkaSettings
from bridge.sink import Sink
from tests.fakes import PendingProducer
from tests.loop.conftest import eventually
from tests.records import live_balance as balance

pytestmark = pytest.mark.unit


class Producers:
    """The factory the sink gets: each producer it starts is queued for the test."""

    def __init__(self, max_records: int = 1_000) -> None:
        self.made: list[PendingProducer] = []
        self.new: asyncio.Queue[PendingProducer] = asyncio.Queue()
        self.max_records = max_records

    def __call__(self, **_: Any) -> PendingProducer:
        producer = PendingProducer(self.max_records)
        self.made.append(producer)
        self.new.put_nowait(producer)
        return producer


async def next_send(producer: PendingProducer) -> tuple[list[bytes], asyncio.Future[Any]]:
    """The next future the producer hands out and the Avro values it covers."""
    future = await asyncio.wait_for(producer.sent.get(), 5)
    return producer.batches[producer.futures.index(future)], future


async def test_an_expired_batch_is_resent_in_order_through_a_fresh_producer() -> None:
    """The batch [a1, b1] expires; [a2] (A's newer record) is acknowledged after it. Exactly
    a1 and b1 go back to the ledger, and the fresh producer sends a1, b1, then a2 again (A's
    newest must be last), one at a time, before anything new."""
    producers = Producers(max_records=2)
    codec = Codec(SchemaStore.load())
    sink = Sink(KafkaSettings(), codec, Metrics(), producers)
    await sink.start()
    first = producers.new.get_nowait()
    a1, b1, a2, c1 = (balance(*r) for r in [("A", "1"), ("B", "1"), ("A", "2"), ("C", "1")])
    for record in (a1, b1, a2):
        await sink.publish(record)
    values, batch_1 = await next_send(first)
    assert values == [codec.value(a1), codec.value(b1)]
    values, batch_2 = await next_send(first)
    assert values == [codec.value(a2)]
    batch_1.set_exception(KafkaTimeoutError("Batch for TopicPartition expired"))
    later = asyncio.create_task(sink.publish(c1))
    batch_2.set_result(None)  # acknowledged after a1 failed: A's newest, must be last again

    fresh = await asyncio.wait_for(producers.new.get(), 5)
    assert first.stopped, "the producer that spent the batch's sequence numbers is gone"
    for record in (a1, b1, a2):
        values, resend = await next_send(fresh)
        assert values == [codec.value(record)]
        assert sink.ledger.recovering
        assert fresh.sent.empty(), "one at a time; the new record waits for the recovery"
        resend.set_result(None)
    values, sent_c1 = await next_send(fresh)
    assert values == [codec.value(c1)]
    sent_c1.set_result(None)
    await later
    assert await sink.stop(1)
    assert sink.ledger.resent == 2, "exactly the failed batch's records"
    assert sink.ledger.in_flight == 0
    assert len(producers.made) == 2


async def test_a_delivery_refused_for_good_stops_the_sink() -> None:
    producers = Producers()
    sink = Sink(KafkaSettings(buffer_records=1), Codec(SchemaStore.load()), Metrics(), producers)
    await sink.start()
    producer = producers.new.get_nowait()
    await sink.publish(balance("A", "1"))
    waiting = asyncio.create_task(sink.publish(balance("B", "1")))  # no room: it waits
    _, sent = await next_send(producer)
    sent.set_exception(TopicAuthorizationFailedError())
    with pytest.raises(SinkError):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(SinkError):
        await sink.publish(balance("C", "1"))
    assert len(producer.futures) == 1, "nothing else was handed over"
    assert sink.ledger.in_flight == 0
    assert await sink.stop(1)


async def test_a_stall_moves_the_age_metric_and_is_logged_when_it_starts_and_ends() -> None:
    """Records in flight and no ack: the age of the oldest one grows from the first scrape,
    and the log says when the stall started and ended (issue 12: a lost leader or a partition
    below min ISR moved no metric at all)."""
    producers = Producers(max_records=1)  # one batch, one future per record
    metrics = Metrics()
    sink = Sink(KafkaSettings(stall_seconds=0.05), Codec(SchemaStore.load()), metrics, producers)

    def age() -> float:
        value = metrics.registry.get_sample_value("bridge_producer_oldest_unacked_age_seconds")
        assert value is not None
        return value

    with structlog.testing.capture_logs() as logs:
        await sink.start()
        producer = producers.new.get_nowait()
        assert age() == 0.0
        await sink.publish(balance("A", "1"))
        await sink.publish(balance("B", "1"))
        await eventually(lambda: any(e["event"] == "kafka stall started" for e in logs), "stall")
        assert age() >= 0.05
        producer.futures[0].set_result(None)  # the oldest acked: the next one is as old
        await eventually(lambda: sink.ledger.in_flight == 1, "the first ack")
        assert age() >= 0.05
        producer.futures[1].set_result(None)
        await eventually(lambda: sink.ledger.in_flight == 0, "the second ack")
        assert age() == 0.0
        await eventually(lambda: any(e["event"] == "kafka stall ended" for e in logs), "its end")
        assert await sink.stop(1)
    started, ended = (e for e in logs if e["event"].startswith("kafka stall"))
    assert (started["log_level"], started["topic"], started["in_flight"]) == (
        "warning",
        "balances",
        2,
    )
    assert ended["seconds"] >= 0.05


class TxnPending(PendingProducer):
    """A transactional producer whose acks the test settles by hand (none, here)."""

    _txn_manager = SimpleNamespace(is_fatal_error=lambda: False)

    async def begin_transaction(self) -> None:
        return None

    async def commit_transaction(self) -> None:
        return None

    async def abort_transaction(self) -> None:
        return None


async def test_a_shard_producer_closed_mid_commit_fails_the_records_of_that_commit() -> None:
    """A shard stopped while its last commit waits for the broker (the grace ran out): the
    commit is cancelled, and its records must fail rather than wait forever (the sink would
    count them in flight for good)."""
    access = KafkaAccess(KafkaSettings(bootstrap_servers="127.0.0.1:9"))
    txn = TxnProducer(access, "g.shard-0", 0.001, lambda: True, lambda: True, factory=TxnPending)
    await txn.start()
    outcome = await txn.send("t", Encoded("t", b"k", b"v", []))
    await eventually(lambda: bool(txn._ending), "the commit waiting for the broker's ack")
    await txn.close(timeout=1)
    with pytest.raises(ShardLost):
        await asyncio.wait_for(outcome, 1)


async def test_a_shard_that_moved_while_its_producer_started_goes_no_further() -> None:
    """InitProducerId can take a while; a forming group gives its first member every shard,
    then moves some to the next member. A producer whose shard moved meanwhile is closed and
    its start fails (`ShardLost`): the member restores and connects nothing of it."""
    access = KafkaAccess(KafkaSettings(bootstrap_servers="127.0.0.1:9"))
    assigned = [True]
    made: list[TxnPending] = []

    class Moving(TxnPending):
        async def start(self) -> None:
            await super().start()
            if not made:
                assigned[0] = False  # the rebalance completed during InitProducerId
            made.append(self)

    txn = TxnProducer(access, "g.shard-0", 0.001, lambda: assigned[0], lambda: True, Moving)
    with pytest.raises(ShardLost, match="moved"):
        await txn.start()
    assert made[0].stopped
    assigned[0] = True
    await txn.start()  # assigned again later: it starts
    await txn.close(timeout=1)


class SlowMetadata(PendingProducer):
    """The topic's partitions are known only after the first lookup's metadata request
    answers (`metadata`): a new producer's first record of a topic."""

    def __init__(self, max_records: int = 1_000, **_: Any) -> None:
        super().__init__(max_records)
        self.metadata = asyncio.Event()
        self.lookups = 0

    async def partitions_for(self, topic: str) -> set[int]:
        self.lookups += 1
        if self.lookups == 1:
            await self.metadata.wait()
        return {0}


async def test_a_record_waiting_for_its_topics_partitions_is_not_overtaken() -> None:
    """Two records of one key handed over in order while the first waits for the topic's
    partitions (a fleet shard's new producer: its snapshot record, then a newer push): the
    newer one must not reach the batch first, or the older value ends last on Kafka."""
    producer = SlowMetadata()
    codec = Codec(SchemaStore.load())
    sink = Sink(KafkaSettings(), codec, Metrics(), lambda **_: producer)
    await sink.start()
    older, newer = balance("A", "1"), balance("A", "2")
    first = asyncio.create_task(sink.publish(older))
    await eventually(lambda: producer.lookups == 1, "the first record waiting for metadata")
    second = asyncio.create_task(sink.publish(newer))
    await eventually(lambda: sink.ledger.in_flight == 2, "the second record admitted")
    producer.metadata.set()
    await asyncio.gather(first, second)
    values, sent = await next_send(producer)
    assert values == [codec.value(older), codec.value(newer)]
    sent.set_result(None)
    assert await sink.stop(1)


async def test_a_record_whose_partition_is_known_does_not_overtake_one_waiting_to_enqueue() -> None:
    """K1 waits behind a record of its topic that is looking up the topic's partitions; the
    lookup answers and K2 arrives before K1 resumes. The partitions are known by then, but K2
    must still join the batch after K1 (bridge/sink.py `_enqueue`'s fast path stays shut while
    anyone waits)."""
    producer = SlowMetadata()
    codec = Codec(SchemaStore.load())
    sink = Sink(KafkaSettings(), codec, Metrics(), lambda **_: producer)
    await sink.start()
    j1, k1, k2 = balance("J", "1"), balance("K", "1"), balance("K", "2")
    first = asyncio.create_task(sink.publish(j1))
    await eventually(lambda: producer.lookups == 1, "J1 looking up the partitions")
    second = asyncio.create_task(sink.publish(k1))
    await eventually(lambda: sink.ledger.in_flight == 2, "K1 admitted, waiting to enqueue")
    producer.metadata.set()  # J1 resumes first, then K2 starts, then K1 would resume
    third = asyncio.create_task(sink.publish(k2))
    await asyncio.gather(first, second, third)
    values, sent = await next_send(producer)
    assert values == [codec.value(j1), codec.value(k1), codec.value(k2)]
    sent.set_result(None)
    assert await sink.stop(1)
