"""Fleet mode's fencing on a real broker (bridge/producer.py `TxnProducer`): a shard's new
owner starting its producer under the shard's transactional id aborts the old owner's open
transaction — records the old owner had already handed to the broker never become visible to
a read_committed consumer, and the old owner's next write fails for good — while another
shard's producer carries on."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from bridge.codec import Encoded
from bridge.dev.kafka import KafkaEndpoint
from bridge.kafka import KafkaAccess
from bridge.producer import TxnProducer
from bridge.settings import KafkaSettings

pytestmark = pytest.mark.integration

LONG = 3600.0  # commit interval: the tests commit by hand


def record(topic: str, key: str, value: str) -> Encoded:
    return Encoded(topic, key.encode(), value.encode(), [])


def shard_producer(access: KafkaAccess, tid: str) -> TxnProducer:
    return TxnProducer(access, tid, LONG, lambda: True, lambda: True)


async def committed(bootstrap: str, topic: str) -> list[str]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=5000)
        return [m.value.decode() for b in batches.values() for m in b]
    finally:
        await consumer.stop()


async def test_the_new_owner_fences_the_old_and_other_shards_carry_on(
    kafka: KafkaEndpoint,
) -> None:
    topic = f"t{uuid.uuid4().hex[:8]}.fencing"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    access = KafkaAccess(KafkaSettings(bootstrap_servers=kafka.bootstrap_servers))
    group = f"fence-{uuid.uuid4().hex[:8]}"
    old = shard_producer(access, f"{group}.shard-0")
    other = shard_producer(access, f"{group}.shard-1")
    new = shard_producer(access, f"{group}.shard-0")
    producers: list[TxnProducer] = [old, other, new]
    try:
        await old.start()
        await other.start()
        before = await old.send(topic, record(topic, "k", "old-before"))
        await old.commit()
        await before
        # In flight when the shard moves: handed to the broker, its transaction still open.
        late = await old.send(topic, record(topic, "k", "old-after-handover"))
        await old.current.flush()
        mine = await other.send(topic, record(topic, "o", "other"))
        await new.start()  # InitProducerId under shard-0's id: old is fenced, its txn aborted
        await old.commit()
        with pytest.raises(KafkaError):
            await late
        with pytest.raises(KafkaError):  # and it stays fenced
            await old.send(topic, record(topic, "k", "old-again"))
        await other.commit()
        await mine  # the other shard's producer is untouched
        after = await new.send(topic, record(topic, "k", "new"))
        await new.commit()
        await after
        values = await committed(kafka.bootstrap_servers, topic)
        assert sorted(values) == ["new", "old-before", "other"], values
    finally:
        for producer in producers:
            await producer.close(timeout=10)
