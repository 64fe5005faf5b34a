"""Fleet mode: many replicas, each stream run by exactly one, coordinated by Kafka itself.

Membership: every member joins the consumer group `fleet.group` subscribed to the checkpoint
topic (`kafka.topics.state`), whose partitions are the shards (bridge/shards.py). The group's
assignment is the ownership: a member runs the streams of the shards it is assigned
(bridge/shard.py) and nothing else. It never reads the topic through the group (its partitions
are paused); a shard's checkpoint is read by the shard itself when it starts. Static membership
(`group.instance.id` = `fleet.member_id`): a member back within `session_timeout` gets its
shards back without a rebalance; aiokafka's sticky assignor moves only what must move.

aiokafka's protocol is eager (every rebalance revokes everything first), so revocation is
ignored: the member keeps running its shards and, once the new assignment arrives, stops those
it lost and starts those it gained (bridge/ownership.py `plan`). The new owner's start fences
the previous owner's transactional producer (bridge/producer.py), so the short overlap a
rebalance can leave writes nothing a read_committed consumer sees.

The lease: a member whose last successful heartbeat (or assignment) is older than
`session_timeout` stops its streams — the group has given its shards away by then — and
starts them again only once the group counts it in again. No venue connection without a Kafka
to write to. (aiokafka does not report heartbeats: the coordinator's `_do_heartbeat` is
wrapped, the one private hook used here.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from aiokafka.errors import KafkaError

from bridge.backoff import Backoff, retry_until
from bridge.changelog import state_partitions
from bridge.codec import Codec
from bridge.control import Control
from bridge.errors import ConfigError, ExitCode, KafkaAccessError, SinkError
from bridge.kafka import KafkaAccess
from bridge.logs import get_logger
from bridge.ownership import ConnectBudget, Lease, plan, shard_streams
from bridge.settings import StreamSettings
from bridge.shard import Shard

if TYPE_CHECKING:
    from bridge.app import App

RESTART_DELAY: Final = 2.0  # seconds before a failed shard that is still ours starts again


class Fleet:
    """A member of the fleet: joins the group, runs the shards it is assigned."""

    def __init__(self, app: App, access: KafkaAccess, codec: Codec) -> None:
        self.app = app
        self.settings = app.settings.fleet
        self._access = access
        self._codec = codec
        self._metrics = app.metrics
        self._topic = app.settings.kafka.topics.name("state")
        self.lease = Lease(self.settings.session_timeout)
        self.assigned: frozenset[int] = frozenset()
        self.running: dict[int, Shard] = {}
        self._retry_at: dict[int, float] = {}
        self._changed = asyncio.Event()
        self._shards: dict[int, list[StreamSettings]] = {}
        self._partitions = 0
        self._budget = ConnectBudget(
            self.settings.connect_rate, self.settings.connect_burst, self.settings.connect_jitter
        )
        self._control = Control(app.settings.control, [])
        self._log = get_logger(component="fleet", member=self.settings.member_id)

    async def run(self, stop: asyncio.Event) -> int:
        """Until `stop`: membership, lease, shards. Returns the exit code."""
        self._partitions = await self._shard_count()
        self._shards = shard_streams(self.app.settings.streams, self._partitions)
        for stream in self.app.settings.streams:
            self._metrics.stream_owned.labels(stream.name, stream.venue).set(0)
        self.app.health.pending = "fleet: joining the group"
        self.app.health.producer_started = True
        self._report_buffers()
        consumer = await self._join(stop)
        if consumer is None:
            return ExitCode.OK
        loops: list[Coroutine[Any, Any, None]] = [
            self._poll(consumer),
            self._watch_lease(),
            self._reconcile(),
            self._count_members(),
            *self._control_loops(),
        ]
        tasks = [asyncio.create_task(loop) for loop in loops]
        stopped = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({stopped, *tasks}, return_when="FIRST_COMPLETED")
            for task in done - {stopped}:  # the loops run until cancelled: this is a bug
                task.result()
        finally:
            stopped.cancel()
            self.app.health.stopping = True
            self._log.info("leaving: stopping every shard", shards=sorted(self.running))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            flushed = await self._stop_all("shutdown")
            await consumer.stop()  # static member: no LeaveGroup, the shards wait for its return
        return ExitCode.OK if flushed else ExitCode.UNACKED

    async def _shard_count(self) -> int:
        count = await state_partitions(self._access, self._topic)
        wanted = self.settings.shards
        if wanted is not None and wanted != count:
            raise ConfigError(
                f"fleet.shards: {wanted}, but the state topic {self._topic} has {count} "
                "partitions (the shard count is the topic's partition count)"
            )
        return count

    async def _join(self, stop: asyncio.Event) -> AIOKafkaConsumer | None:
        """The group consumer, started (retried while Kafka cannot be reached)."""
        session_ms = int(self.settings.session_timeout * 1000)

        async def attempt() -> AIOKafkaConsumer:
            consumer = AIOKafkaConsumer(
                group_id=self.settings.group,
                group_instance_id=self.settings.member_id,
                session_timeout_ms=session_ms,
                heartbeat_interval_ms=max(session_ms // 4, 100),
                enable_auto_commit=False,
                partition_assignment_strategy=(StickyPartitionAssignor,),
                **self._access.consumer_options(),
            )
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()
                raise
            return consumer

        def unreachable(exc: KafkaError, delay: float) -> None:
            self._log.warning("cannot join the fleet; retrying", error=repr(exc), retry_in=delay)

        consumer = await retry_until(
            attempt,
            Backoff(self.app.settings.reconnect),
            retry_on=KafkaError,
            on_retry=unreachable,
            stop=stop,
        )
        if consumer is not None:
            self._track_heartbeats(consumer)
            consumer.subscribe([self._topic], listener=_Listener(self, consumer))
            self._log.info("joining the fleet", group=self.settings.group, shards=self._partitions)
        return consumer

    def _track_heartbeats(self, consumer: AIOKafkaConsumer) -> None:
        """Renew the lease on every successful heartbeat (see the module docstring)."""
        coordinator: Any = consumer._coordinator
        beat: Callable[[], Awaitable[bool]] = coordinator._do_heartbeat

        async def heartbeat() -> bool:
            ok = await beat()
            if ok:
                self.lease.renew(time.monotonic())
            return ok

        coordinator._do_heartbeat = heartbeat

    def assign(self, shards: set[int]) -> None:
        """A rebalance completed (aiokafka's listener): the new assignment."""
        self.lease.renew(time.monotonic())
        self.assigned = frozenset(shards)
        self._metrics.fleet_rebalances.inc()
        self._metrics.fleet_shards.set(len(shards))
        self._log.info("assigned", shards=sorted(shards), rebalance="completed")
        self._changed.set()

    def may_start(self, shard: int) -> bool:
        """May this member start `shard`'s producer (fencing whoever had it): the shard is
        assigned to it and its lease is valid."""
        return shard in self.assigned and self.lease.valid(time.monotonic())

    def may_write(self) -> bool:
        """May this member still write at all: its lease is valid."""
        return self.lease.valid(time.monotonic())

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        """The group consumer must poll, or aiokafka leaves the group (max_poll_interval);
        every partition is paused, so nothing is fetched."""
        while True:
            await consumer.getmany(timeout_ms=1000)

    async def _watch_lease(self) -> None:
        interval = min(1.0, self.settings.session_timeout / 10)
        expired = False
        while True:
            await asyncio.sleep(interval)
            valid = self.lease.valid(time.monotonic())
            if not valid and not expired and self.running:
                age = self.lease.age(time.monotonic())
                self._log.warning(
                    "fleet lease expired: no heartbeat for the session timeout; stopping "
                    "every stream until the group counts this member in again",
                    seconds_since_heartbeat=None if age is None else round(age, 1),
                )
                self._metrics.fleet_lease_expirations.inc()
            if valid == expired:  # changed either way
                self._changed.set()
            expired = not valid

    async def _reconcile(self) -> None:
        """Make the running shards the assigned ones (none while the lease is expired)."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            await self._step()

    async def _step(self) -> None:
        now = time.monotonic()
        for shard, run in list(self.running.items()):
            if run.ended.is_set():  # fenced or failed: stop it, start again later if ours
                await self._stop(shard, "lost")
                self._retry_at[shard] = now + RESTART_DELAY
                asyncio.get_running_loop().call_later(RESTART_DELAY, self._changed.set)
        valid = self.lease.valid(now)
        wanted = self.assigned if valid else frozenset()
        changes = plan(self.running, wanted)
        reason = "moved" if valid else "lease_expired"
        await asyncio.gather(*(self._stop(s, reason) for s in changes.stop))
        starts = [s for s in changes.start if self._retry_at.get(s, 0) <= now]
        await asyncio.gather(*(self._start(s) for s in sorted(starts)))
        missing = sorted(wanted - set(self.running))
        self.app.health.pending = (
            None if not missing else f"fleet: shards not running yet: {missing}"
        )
        if not valid:
            self.app.health.pending = "fleet: lease expired (no heartbeat for session_timeout)"

    async def _start(self, shard: int) -> None:
        streams = self._shards.get(shard, [])
        run = Shard(
            self.app,
            shard,
            streams,
            self._access,
            self._codec,
            self._control,
            lambda: self.may_start(shard),
            self.may_write,
        )
        self.running[shard] = run
        try:
            async with asyncio.timeout(self.settings.session_timeout + 30):
                await run.start(self._partitions, self._budget)
        except Exception as exc:  # Kafka unreachable, the shard lost meanwhile, or a bug
            expected = isinstance(exc, SinkError | KafkaAccessError | KafkaError | TimeoutError)
            self._log.warning(
                "shard did not start; retrying",
                shard=shard,
                error=repr(exc),
                exc_info=None if expected else exc,
            )
            await self._stop(shard, "lost")
            self._retry_at[shard] = time.monotonic() + RESTART_DELAY
            asyncio.get_running_loop().call_later(RESTART_DELAY, self._changed.set)
            return
        run.watch = asyncio.create_task(self._when_ended(run))
        for stream in streams:
            self._metrics.stream_owned.labels(stream.name, stream.venue).set(1)
        self._metrics.fleet_stream_starts.inc(len(streams))

    async def _when_ended(self, run: Shard) -> None:
        await run.ended.wait()
        self._changed.set()

    async def _stop(self, shard: int, reason: str) -> bool:
        run = self.running.pop(shard, None)
        if run is None:
            return True
        if run.watch is not None:
            run.watch.cancel()
        for stream in run.settings:
            self._metrics.stream_owned.labels(stream.name, stream.venue).set(0)
        self._metrics.fleet_stream_stops.labels(reason).inc(len(run.settings))
        self._log.info("stopping shard", shard=shard, reason=reason)
        # Only a shard this member may still write for can commit what it holds: one that
        # ended (fenced, failed) or whose lease expired stops at once, so that a resumed
        # member's new assignment does not wait out the grace for nothing.
        graceful = reason in ("moved", "shutdown") and self.lease.valid(time.monotonic())
        return await run.stop(self.app.settings.shutdown.grace_seconds if graceful else 0.0)

    async def _stop_all(self, reason: str) -> bool:
        results = await asyncio.gather(*(self._stop(s, reason) for s in list(self.running)))
        return all(results)

    async def _count_members(self) -> None:
        """`bridge_fleet_members`: the group's member count, as its coordinator reports it."""
        interval = max(self.settings.session_timeout / 2, 1.0)
        admin = AIOKafkaAdminClient(**self._access.consumer_options())
        try:
            await admin.start()
            while True:
                with contextlib.suppress(KafkaError, OSError, TimeoutError):
                    (response,) = await admin.describe_consumer_groups([self.settings.group])
                    group = response.to_object()["groups"][0]
                    self._metrics.fleet_members.set(len(group["members"]))
                await asyncio.sleep(interval)
        finally:
            await admin.close()

    def _report_buffers(self) -> None:
        """The producer buffer gauges, summed over the running shards' sinks."""
        m, capacity = self._metrics, self.app.settings.kafka.buffer_records
        m.buffer_records.set_function(
            lambda: sum(r.sink.ledger.in_flight for r in self.running.values())
        )
        m.buffer_capacity.set_function(lambda: capacity * len(self.running))
        m.oldest_unacked.set_function(
            lambda: max(
                (r.sink.ledger.oldest_age(time.monotonic()) for r in self.running.values()),
                default=0.0,
            )
        )

    def _control_loops(self) -> list[Coroutine[Any, Any, None]]:
        c = self.app.settings.control
        loops: list[Coroutine[Any, Any, None]] = []
        if c.enabled and c.heartbeat_interval:
            loops.append(self._control.heartbeats())
        if c.enabled and c.signals:
            topic = self.app.settings.kafka.topics.name("control")
            loops.append(self._control.signals(self._access, topic))
        return loops


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revocation is ignored (the eager protocol revokes everything before each assignment:
    bridge/ownership.py); an assignment is handed to the fleet, its partitions paused."""

    def __init__(self, fleet: Fleet, consumer: AIOKafkaConsumer) -> None:
        self._fleet = fleet
        self._consumer = consumer

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._consumer.pause(*assigned)
        self._fleet.assign({tp.partition for tp in assigned})
