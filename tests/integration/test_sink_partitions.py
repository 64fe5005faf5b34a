"""The batch sink against a real broker with a three-partition topic: every record lands on
the partition Kafka's default partitioner (the Java client's murmur2) gives its key, and each
key's records keep their publish order."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bridge.codec import Codec, SchemaStore
from bridge.dev.kafka import KafkaEndpoint
from bridge.metrics import Metrics
from bridge.settings import KafkaSettings, TopicNames
from bridge.sink import Sink
from tests.helpers import AvroReader, unique_topics
from tests.records import live_balance as balance
from tests.unit.test_batches import JAVA_MURMUR2

pytestmark = pytest.mark.integration

PARTITIONS = 3


def java_partition(key: bytes) -> int:
    """Kafka's DefaultPartitioner: toPositive(murmur2(key)) % partitions, computed here from
    an independent murmur2 (Kafka's Utils.murmur2, transcribed)."""
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(key)) & 0xFFFFFFFF
    full = len(key) // 4 * 4
    for i in range(0, full, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = key[full:]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % PARTITIONS


def test_the_transcription_matches_the_java_vectors() -> None:
    for key, java in JAVA_MURMUR2.items():
        assert java_partition(key) == (java & 0x7FFFFFFF) % PARTITIONS


async def test_records_land_on_kafkas_default_partition_in_order(kafka: KafkaEndpoint) -> None:
    topics = unique_topics()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topics["balances"], PARTITIONS, 1)])
    finally:
        await admin.close()
    settings = KafkaSettings(bootstrap_servers=kafka.bootstrap_servers, topics=TopicNames(**topics))
    sink = Sink(settings, Codec(SchemaStore.load()), Metrics())
    await sink.start()
    published = [(f"A{i % 40}", str(i)) for i in range(400)]
    try:
        for asset, available in published:
            await sink.publish(balance(asset, available))
        assert await sink.flush(30)
    finally:
        assert await sink.stop()

    reader = AvroReader()
    consumer = AIOKafkaConsumer(
        topics["balances"], bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    seen: dict[str, list[Decimal]] = defaultdict(list)
    partitions_used = set()
    try:
        async with asyncio.timeout(30):
            while sum(map(len, seen.values())) < len(published):
                batches = await consumer.getmany(timeout_ms=200)
                for messages in batches.values():
                    for m in messages:
                        assert m.partition == java_partition(m.key), m.key
                        partitions_used.add(m.partition)
                        _, _, record = reader.decode(m.value)
                        seen[record["asset"]].append(record["available"])
    finally:
        await consumer.stop()
    assert partitions_used == set(range(PARTITIONS))
    for asset in {a for a, _ in published}:
        assert seen[asset] == [Decimal(v) for a, v in published if a == asset], asset
