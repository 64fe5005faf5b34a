"""Records into aiokafka batches: Kafka's default partitioning, one open batch per partition
(closed when full or `linger` after its first record), and one lane per partition that hands
the closed batches to the producer in order.

aiokafka's `send()` costs ~55 µs per record here, a third of it its pure-Python murmur2 hash,
even for one-partition topics; its batch API (`create_batch`/`append`/`send_batch`) ~9 µs
(tests/bench). The batch API leaves the partition to the caller, so `Partitioner` computes
exactly what aiokafka's `DefaultPartitioner` (the Java client's) would: murmur2 of the key,
made positive, modulo the topic's partition count. Consumers and compaction rely on it.

Order: records of one key go to one partition, into its open batch in publish order; a lane
sends its partition's batches one after the other, and aiokafka keeps one request per
partition in flight (idempotence), so a key's records reach the broker in publish order.
What happens to a batch after it is handed over (acknowledged, failed) is the sink's business.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from bridge.delivery import Pending

# The producer's max_request_size (aiokafka's default, set explicitly by bridge.producer): a record
# larger than this can never be sent, `send()` would raise MessageSizeTooLargeError.
MAX_REQUEST_BYTES: Final = 1_048_576

Lane = tuple[str, int]  # (Kafka topic name, partition)


@lru_cache(maxsize=65_536)
def key_hash(key: bytes) -> int:
    """murmur2 of a key, made positive, as Kafka's default partitioner uses it. Cached: the
    pure-Python hash costs ~16 µs, and a stream's keys repeat (accounts, assets, orders)."""
    return int(murmur2(key)) & 0x7FFFFFFF


# What a record adds to a batch beyond its bytes, at most: the batch header (61), five varints
# of up to 5 bytes, a timestamp delta of up to 10 and an attributes byte; per header two varints.
_RECORD_SLACK: Final = 61 + 36
_HEADER_SLACK: Final = 10


def oversized(key: bytes, value: bytes | None, headers: list[tuple[str, bytes]]) -> int | None:
    """The size of a record aiokafka's `send()` would refuse (over MAX_REQUEST_BYTES), or
    None. A record whose size is bounded well below the limit is not measured: aiokafka's
    estimate was ~2 % of a record's CPU (tests/bench)."""
    bound = len(key) + len(value or b"") + _RECORD_SLACK
    for name, data in headers:
        bound += 4 * len(name) + len(data) + _HEADER_SLACK  # UTF-8: ≤ 4 bytes a character
    if bound <= MAX_REQUEST_BYTES:
        return None
    size = int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))
    return size if size > MAX_REQUEST_BYTES else None


class Partitioner:
    """Kafka's default partition for a key, from the topic's partition list in the producer's
    metadata. The lists are re-read after every flush of the open batches (at most `linger`
    apart), so a topic that gained partitions is seen as soon as aiokafka's `send()` would."""

    def __init__(self) -> None:
        self._partitions: dict[str, list[int]] = {}

    async def partition(self, producer: Any, topic: str, key: bytes) -> int:
        if topic not in self._partitions:
            self._partitions[topic] = sorted(await producer.partitions_for(topic))
        partition = self.known(topic, key)
        assert partition is not None
        return partition

    def known(self, topic: str, key: bytes) -> int | None:
        """The key's partition if the topic's partition list is at hand, else None."""
        partitions = self._partitions.get(topic)
        if partitions is None:
            return None
        if len(partitions) == 1:
            return partitions[0]
        return partitions[key_hash(key) % len(partitions)]

    def forget(self) -> None:
        self._partitions.clear()


@dataclass(eq=False, slots=True)
class Batch:
    """One aiokafka batch being filled or sent, and the records in it, in order."""

    topic: str
    partition: int
    builder: Any  # aiokafka.producer.message_accumulator.BatchBuilder
    pendings: list[Pending] = field(default_factory=list)


class Batcher:
    """The open batch of each partition and the lanes that send closed ones in order.

    `send(batch)` hands one batch to the producer (the sink: retries, outcome callback); a lane
    awaits it before taking its next batch.
    """

    def __init__(
        self,
        linger: float,
        send: Callable[[Batch], Awaitable[None]],
        on_flush: Callable[[], None] = lambda: None,
    ) -> None:
        self._linger = linger
        self._send = send
        self._on_flush = on_flush
        self._open: dict[Lane, Batch] = {}
        self._queues: dict[Lane, deque[Batch]] = {}
        self._lanes: dict[Lane, asyncio.Task[None]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, lane: Lane, pending: Pending, new_builder: Callable[[], Any]) -> None:
        """Append `pending` to its partition's open batch (a full batch is closed and sent)."""
        batch = self._open.get(lane)
        if batch is None:
            batch = self._open_batch(lane, new_builder)
        encoded = pending.encoded
        if not _append(batch, encoded):
            self._close(lane)
            batch = self._open_batch(lane, new_builder)
            if not _append(batch, encoded):  # an empty batch takes any record under the limit
                raise RuntimeError(
                    f"record of {len(encoded.value or b'')} bytes refused by a new batch"
                )
        batch.pendings.append(pending)

    def flush(self) -> None:
        """Close every open batch now (linger elapsed, or a flush is awaited)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for lane in list(self._open):
            self._close(lane)
        self._on_flush()

    @property
    def idle(self) -> bool:
        return not self._open and not self._lanes

    async def stop(self) -> None:
        """Cancel the lanes (their batches' records stay in the ledger, unacknowledged)."""
        if self._timer is not None:
            self._timer.cancel()
        lanes = list(self._lanes.values())
        for task in lanes:
            task.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)

    def _open_batch(self, lane: Lane, new_builder: Callable[[], Any]) -> Batch:
        batch = self._open[lane] = Batch(lane[0], lane[1], new_builder())
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._linger, self.flush)
        return batch

    def _close(self, lane: Lane) -> None:
        batch = self._open.pop(lane)
        batch.builder.close()  # closed: aiokafka sends it without lingering again
        self._queues.setdefault(lane, deque()).append(batch)
        if lane not in self._lanes:
            task = asyncio.get_running_loop().create_task(self._run(lane), name=f"lane:{lane}")
            self._lanes[lane] = task

    async def _run(self, lane: Lane) -> None:
        queue = self._queues[lane]
        try:
            while queue:
                await self._send(queue[0])
                queue.popleft()
        finally:
            del self._lanes[lane]
            if not queue:
                del self._queues[lane]


def _append(batch: Batch, encoded: Any) -> bool:
    metadata = batch.builder.append(
        timestamp=None, key=encoded.key, value=encoded.value, headers=encoded.headers
    )
    return metadata is not None
