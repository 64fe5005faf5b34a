"""bridge/batches.py: the partition of a key is Kafka's default one (murmur2, the Java
client's test vectors), batches close when full or after the linger, and each partition's
lane hands its batches over one after the other, in order."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.batches import MAX_REQUEST_BYTES, Batch, Batcher, Partitioner, key_hash, oversized
from bridge.codec import Encoded
from bridge.delivery import Pending
from tests import records as make
from tests.fakes import FakeBatch, PendingProducer

pytestmark = pytest.mark.unit

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed 32-bit results).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_the_key_hash_is_the_java_clients_murmur2() -> None:
    for key, java in JAVA_MURMUR2.items():
        assert key_hash(key) == java & 0x7FFFFFFF, key


@settings(max_examples=300, deadline=None)
@given(
    key=st.binary(max_size=300),
    value_size=st.one_of(
        st.integers(0, 2_000),
        st.integers(MAX_REQUEST_BYTES - 2_000, MAX_REQUEST_BYTES + 100),
    ),
    headers=st.lists(
        st.tuples(st.text(max_size=20), st.binary(max_size=64)),
        max_size=8,
    ),
)
def test_oversized_refuses_exactly_what_aiokafkas_estimate_refuses(
    key: bytes, value_size: int, headers: list[tuple[str, bytes]]
) -> None:
    """`oversized` skips aiokafka's estimate for records bounded well below the limit: the
    bound must never be under the estimate, or a record `send()` refuses would get through."""
    value = b"v" * value_size
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
    assert oversized(key, value, headers) == (size if size > MAX_REQUEST_BYTES else None)


class Metadata(PendingProducer):
    def __init__(self, partitions: int) -> None:
        super().__init__()
        self.count = partitions

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.count))


@settings(max_examples=300, deadline=None)
@given(key=st.binary(max_size=64), partitions=st.integers(1, 64))
async def test_the_partition_is_kafkas_default(key: bytes, partitions: int) -> None:
    expected = DefaultPartitioner()(key, list(range(partitions)), list(range(partitions)))
    assert await Partitioner().partition(Metadata(partitions), "t", key) == expected


def pending(seq: int) -> Pending:
    return Pending(seq, make.balance(), Encoded("balances", b"k%d" % seq, b"v%d" % seq, []), None)


async def test_lanes_send_full_and_lingering_batches_in_order() -> None:
    handed: list[tuple[int, list[int]]] = []
    release = asyncio.Event()

    async def send(batch: Batch) -> None:
        handed.append((batch.partition, [p.seq for p in batch.pendings]))
        if len(handed) == 1:
            await release.wait()  # the lane must wait for this one before its next batch

    batcher = Batcher(0.01, send)
    for seq in range(5):  # partition 0: batches of 2 → [0, 1], [2, 3], then [4] lingers
        batcher.add(("t", 0), pending(seq), lambda: FakeBatch(2))
    batcher.add(("t", 1), pending(5), lambda: FakeBatch(2))
    await asyncio.sleep(0)
    assert handed == [(0, [0, 1])], "partition 0's second batch waits for its first"
    release.set()
    async with asyncio.timeout(5):
        while len(handed) < 4:
            await asyncio.sleep(0.005)
    assert [seqs for partition, seqs in handed if partition == 0] == [[0, 1], [2, 3], [4]]
    assert (1, [5]) in handed
    await asyncio.sleep(0.02)
    assert batcher.idle
    await batcher.stop()


async def test_flush_closes_open_batches_without_waiting_for_the_linger() -> None:
    handed: list[list[int]] = []

    async def send(batch: Batch) -> None:
        handed.append([p.seq for p in batch.pendings])

    batcher = Batcher(60.0, send)
    batcher.add(("t", 0), pending(0), lambda: FakeBatch(10))
    batcher.flush()
    await asyncio.sleep(0)
    assert handed == [[0]]
    await batcher.stop()
