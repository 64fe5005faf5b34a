"""A stand-in for aiokafka's producer in unit tests of the sink: it acknowledges nothing by
itself; the test settles each delivery future by hand. It takes records one by one (`send`,
as the sink's ordered resends do) and in batches (`create_batch`/`send_batch`, the sink's
normal path); `max_records` caps a batch, so `max_records=1` gives one future per record."""

from __future__ import annotations

import asyncio
from typing import Any


class FakeBatch:
    """aiokafka's BatchBuilder as the sink uses it."""

    def __init__(self, max_records: int) -> None:
        self.values: list[bytes] = []
        self.keys: list[bytes] = []
        self._max = max_records
        self._closed = False

    def append(self, *, timestamp: Any, key: bytes, value: bytes, headers: Any) -> object | None:
        if self._closed or len(self.values) >= self._max:
            return None
        self.values.append(value)
        self.keys.append(key)
        return object()

    def close(self) -> None:
        self._closed = True

    def record_count(self) -> int:
        return len(self.values)


class PendingProducer:
    """`futures` lists every delivery future in order (one per `send`, one per batch);
    `values` the Avro value each future covers (a batch: its values' list joined by future
    index in `batches`); `sent` queues each future for a test to await; `stopped` says whether
    `stop()` was called."""

    def __init__(self, max_records: int = 1_000, **_: Any) -> None:
        self.futures: list[asyncio.Future[Any]] = []
        self.values: list[bytes] = []  # the first (or only) value of each future
        self.batches: list[list[bytes]] = []  # every value of each future
        self.sent: asyncio.Queue[asyncio.Future[Any]] = asyncio.Queue()
        self.stopped = False
        self.max_records = max_records

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.max_records)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        return self._future(batch.values)

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[Any]:
        return self._future([value])

    def _future(self, values: list[bytes]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        self.values.append(values[0])
        self.batches.append(list(values))
        self.sent.put_nowait(future)
        return future
