"""One shard a fleet member owns (bridge/fleet.py decides which): its transactional sink, its
streams restored from the checkpoint and running, its checkpoint writer.

Start order — the order is the fencing argument: (1) the shard's transactional producer starts
(InitProducerId under the shard's id: the previous owner's producer is fenced and its open
transaction aborted); (2) the shard's checkpoint partition is read with read_committed (what
an aborted transaction wrote is not restored); (3) each stream connects after the delay the
connect budget gives it. Whatever the previous owner did after (1) never becomes visible, so
the new owner's snapshot is the last word on every key.

Checkpoint entries are written inside the transaction of the records they describe (not every
`state.flush_interval` after the acks, as without fleet mode): a fenced or killed owner can
leave neither a record without its entry nor an entry without its record.

Stop order: as the app's shutdown, for this shard only: the streams stop reading, the sink
flushes (the last transaction commits, with its entries), the producer closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bridge.changelog import Changelog, restore
from bridge.codec import Codec, Encoded
from bridge.connection import StreamConnection
from bridge.control import Control
from bridge.errors import SinkError
from bridge.kafka import KafkaAccess
from bridge.logs import get_logger
from bridge.ownership import ConnectBudget, transactional_id
from bridge.producer import TxnProducer
from bridge.records import Envelope
from bridge.settings import StreamSettings
from bridge.sink import Sink

if TYPE_CHECKING:
    from bridge.app import App, Stream


class Shard:
    """The running part of one owned shard."""

    def __init__(
        self,
        app: App,
        shard: int,
        streams: Sequence[StreamSettings],
        access: KafkaAccess,
        codec: Codec,
        control: Control,
        may_start: Callable[[], bool],
        may_write: Callable[[], bool],
    ) -> None:
        self.app = app
        self.shard = shard
        self.settings = streams
        self._access = access
        self._codec = codec
        self._control = control
        fleet = app.settings.fleet
        self.producer = TxnProducer(
            access,
            transactional_id(fleet.group, shard),
            fleet.commit_interval,
            may_start,
            may_write,
        )
        self.sink = Sink(
            app.settings.kafka,
            codec,
            app.metrics,
            access=access,
            producer=self.producer,
            report_buffer=False,
        )
        self.streams: list[Stream] = []
        self._connections: list[StreamConnection] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.ended = asyncio.Event()  # set when a stream of the shard ended on its own
        self.failure: BaseException | None = None
        self.watch: asyncio.Task[None] | None = None  # the fleet's watch on `ended`
        self._log = get_logger(component="fleet", shard=shard)

    async def start(self, partitions: int, budget: ConnectBudget) -> None:
        """Fence, restore, connect (see the module docstring). Raises `SinkError` or
        `KafkaAccessError` when Kafka cannot be reached or the shard was lost meanwhile."""
        started = time.monotonic()
        await self.sink.start()  # InitProducerId: the previous owner is fenced from here on
        fenced = time.monotonic()
        settings = self.app.settings
        store = self._codec.store
        topic = settings.kafka.topics.name("state")
        options = {**self._access.consumer_options(), "isolation_level": "read_committed"}
        checkpoints = {}
        if self.settings:  # a shard without streams is owned all the same (and fenced)
            async with asyncio.timeout(settings.state.restore_timeout):
                checkpoints = await restore(
                    options, topic, {s.name: self.shard for s in self.settings}, store
                )
        changelog = Changelog(settings.state, self.sink, store, partitions)
        for stream_settings in self.settings:
            stream = self.app.build_stream(stream_settings, self.sink)
            self.app.seed(stream, checkpoints[stream_settings.name], changelog)
            self._control.add(stream.state)
            self.streams.append(stream)
        self.sink.partition_of = changelog.partition_of
        self.producer.entries_for = lambda records: self._entries(changelog, topic, records)
        now = time.monotonic()
        for stream in self.streams:
            connection = self.app.build_connection(stream, self._control)
            delay = budget.delay(stream.venue.name, now)
            task = asyncio.create_task(
                self._run(connection, delay), name=f"stream:{stream.settings.name}"
            )
            self._connections.append(connection)
            self._tasks.append(task)
        self._log.info(
            "shard started",
            streams=[s.name for s in self.settings],
            fence_seconds=round(fenced - started, 3),
            restore_seconds=round(time.monotonic() - fenced, 3),
        )

    def _entries(
        self, changelog: Changelog, topic: str, records: list[Envelope]
    ) -> list[tuple[str, int, Encoded]]:
        """The checkpoint entries for the records of a transaction about to commit: written
        in it (bridge/producer.py), so that after any failover the restored checkpoint says
        exactly what the visible records say (one written every `state.flush_interval`
        after the acks, as without fleet mode, would lag behind a fenced handover)."""
        for record in records:
            changelog.acked(record)
        return [(topic, self.shard, self._codec.encode(e)) for e in changelog.entries()]

    async def _run(self, connection: StreamConnection, delay: float) -> None:
        """Connect after `delay` (the connect budget), unless stopped first; a stream that
        ends by itself (its sink failed: fenced, lease lost) ends the shard."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)
        if self._stopping.is_set():
            return
        try:
            await connection.run()
        except SinkError as exc:
            self.failure = exc
            raise
        finally:
            if not self._stopping.is_set():
                self.ended.set()

    async def stop(self, grace: float) -> bool:
        """Stop reading, flush (the last transaction commits), write the checkpoint, close.
        True when every record was delivered."""
        deadline = time.monotonic() + grace
        self._stopping.set()
        await asyncio.gather(*(c.stop() for c in self._connections), return_exceptions=True)
        if self._tasks:
            _, pending = await asyncio.wait(
                self._tasks, timeout=max(deadline - time.monotonic(), 0.1)
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        flushed = await self.sink.stop(max(deadline - time.monotonic(), 0.1))
        for stream in self.streams:
            self._control.remove(stream.state)
            with contextlib.suppress(ValueError):
                self.app.health.streams.remove(stream.state)
            # its keys are no longer held here (and the gauge must not keep the state alive)
            keys = self.app.metrics.state_keys.labels(stream.settings.name, stream.venue.name)
            keys.set_function(lambda: 0.0)
        return flushed
