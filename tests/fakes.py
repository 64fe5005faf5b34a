"""A stand-in for aiokafka's producer in unit tests of the sink: it acknowledges nothing by
itself; the test settles each send's future by hand."""

from __future__ import annotations

import asyncio
from typing import Any


class PendingProducer:
    """`futures` and `values` list every send in order; `sent` queues each future for a test
    to await; `stopped` says whether `stop()` was called."""

    def __init__(self, **_: Any) -> None:
        self.futures: list[asyncio.Future[Any]] = []
        self.values: list[bytes] = []
        self.sent: asyncio.Queue[asyncio.Future[Any]] = asyncio.Queue()
        self.stopped = False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        self.values.append(value)
        self.sent.put_nowait(future)
        return future
