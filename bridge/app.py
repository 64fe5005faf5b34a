"""Wiring: streams + codec + sink + checkpoint + control + metrics server; signals; shutdown.

Start order: Kafka (sign-in, topics: bridge/kafka_check.py), the schema registry, the producer,
then each stream's state is restored from the checkpoint topic (bridge/changelog.py) before any
stream connects, so its first reconciliation starts where the last run left it.

Shutdown order (SIGTERM or SIGINT): readiness goes false, every stream stops reading (frames
already received are still published), the producer flushes everything in flight, the
checkpoint records what was acknowledged, the process exits 0 — or 3 if the grace period ran
out with records still unacknowledged (`ExitCode`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from bridge.backoff import Backoff, TokenBucket, retry_until
from bridge.changelog import Changelog, catch_up, restore, state_partitions
from bridge.checkpoint import Checkpoint
from bridge.codec import Codec, SchemaStore
from bridge.connection import StreamConnection, limit_tls_read_buffers
from bridge.control import Control
from bridge.diskbuffer import DiskBuffer, check_streams
from bridge.disklog import Entry
from bridge.errors import ConfigError, ExitCode, KafkaAccessError, RegistryError, SinkError
from bridge.kafka import KafkaAccess
from bridge.kafka_check import KafkaWatch, prepare
from bridge.logs import get_logger
from bridge.metrics import Health, Metrics, bound_port, start_http_server
from bridge.registry import Registration, register_schemas, registry_client
from bridge.settings import Settings, StreamSettings
from bridge.shards import shard_of
from bridge.sink import FATAL_DELIVERY_ERRORS, Sink
from bridge.snapshot import Snapshotter
from bridge.stream import StreamState, forget_after_ms
from bridge.venues.base import Venue


@dataclass
class Stream:
    settings: StreamSettings
    venue: Venue
    state: StreamState


@dataclass
class App:
    """One bridge process. `run()` returns the exit code."""

    settings: Settings
    config_path: Path | None = None  # named in messages (`bridge topics create --config …`)
    metrics: Metrics = field(init=False)
    health: Health = field(default_factory=Health)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _http: web.AppRunner | None = None
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)
    _disk: DiskBuffer | None = None
    _owed: list[Entry] = field(default_factory=list)  # what the disk buffer replays first

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.settings.metrics.stream_histograms)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        log = get_logger(component="app")
        limit_tls_read_buffers()
        for stream in self.settings.streams:
            self.metrics.add_stream(stream.name, stream.venue)
        self._open_disk()
        self._http = await self._serve_metrics()
        log.info("metrics server listening", port=bound_port(self._http))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)
        watch: asyncio.Task[None] | None = None
        try:
            access = KafkaAccess(self.settings.kafka)
            if not await prepare(
                access, self.metrics, self.settings.reconnect, self._stop, self.config_path
            ):
                return ExitCode.OK
            watch = asyncio.create_task(
                KafkaWatch(access, self.metrics, self.settings.kafka.check_interval).run(),
                name="kafka-watch",
            )
            return await self._serve(access)
        finally:
            if watch is not None:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            await self._http.cleanup()
            if self._disk is not None:
                self._disk.close()

    def _open_disk(self) -> None:
        """The disk buffer, locked and read back (`ConfigError` naming the key: exit 2)."""
        settings = self.settings.disk_buffer
        if not settings.enabled:
            return
        disk = DiskBuffer(settings, self.metrics)
        owed = disk.open()
        try:
            check_streams(owed, {s.name for s in self.settings.streams}, settings.path)
        except ConfigError:
            disk.close()
            raise
        self._disk, self._owed = disk, owed

    async def _serve_metrics(self) -> web.AppRunner:
        """The HTTP server; a port it cannot have is a config error naming the key (exit 2)."""
        host, port = self.settings.metrics.host, self.settings.metrics.port
        try:
            return await start_http_server(self.metrics, self.health, host, port)
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise ConfigError(f"metrics.port: cannot listen on {host}:{port}: {reason}") from None

    async def _serve(self, access: KafkaAccess) -> int:
        """Codec, producer, restored streams, background helpers; until a stop or a failure."""
        # Ready only after the schemas are registered: the producer starts after the codec.
        codec = await self.build_codec()
        if codec is None:
            return ExitCode.OK
        if self.settings.fleet.enabled:
            from bridge.fleet import Fleet  # only a fleet member needs it

            return await Fleet(self, access, codec).run(self._stop)
        sink = Sink(self.settings.kafka, codec, self.metrics, access=access)
        if not await self._start_sink(sink):
            return ExitCode.OK
        streams = [self.build_stream(s, sink) for s in self.settings.streams]
        changelog = await self._restore(access, sink, codec, streams)
        if self._stop.is_set():
            await sink.stop(self.settings.shutdown.grace_seconds)
            return ExitCode.OK
        self.health.producer_started = True
        control = Control(self.settings.control, [s.state for s in streams])
        for s in streams:  # without fleet mode this process owns every stream it runs
            self.metrics.stream_owned.labels(s.settings.name, s.venue.name).set(1)
        connections = [self.build_connection(s, control) for s in streams]
        helpers = self._helpers(access, changelog, control)
        gc.freeze()  # start-up's objects live as long as the process (bridge/cli.py tune_gc)
        if not await self._replay(connections):
            await self._shutdown([], [], helpers, sink, changelog)
            return ExitCode.OK
        tasks = [
            asyncio.create_task(c.run(), name=f"stream:{c.settings.name}") for c in connections
        ]
        stop_waiter = asyncio.create_task(self._stop.wait())
        watched = {stop_waiter, *tasks, *(h for h in helpers if h.get_name() == "disk-buffer")}
        done, _ = await asyncio.wait(watched, return_when="FIRST_COMPLETED")
        failed = [t.exception() for t in done - {stop_waiter} if not t.cancelled()]
        code = await self._shutdown(connections, tasks, helpers, sink, changelog)
        for exc in failed:  # a stream loop only ends on its own by raising
            if isinstance(exc, SinkError):
                get_logger(component="app").error("cannot deliver to Kafka", error=str(exc))
                refused = isinstance(exc.__cause__, FATAL_DELIVERY_ERRORS)
                return ExitCode.CONFIG if refused else ExitCode.CRASH
            if exc is not None:
                raise exc
        return code

    async def _replay(self, connections: list[StreamConnection]) -> bool:
        """What the disk buffer still owes, published before any stream connects (its
        records are queued ahead of every new one). False when a stop came first."""
        if self._disk is None or not self._owed:
            return True
        owed, self._owed = self._owed, []
        replaying = asyncio.create_task(
            self._disk.replay(owed, {c.settings.name: c for c in connections})
        )
        stop_waiter = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait({replaying, stop_waiter}, return_when="FIRST_COMPLETED")
        loser = stop_waiter if replaying in done else replaying
        loser.cancel()
        await asyncio.gather(loser, return_exceptions=True)
        if replaying in done:
            replaying.result()  # a delivery that failed for good stops the process
            return True
        return False

    def build_stream(self, stream: StreamSettings, sink: Sink) -> Stream:
        venue = stream.build_venue(self.settings.serialization.decoder)
        snapshot = stream.snapshot
        forget = forget_after_ms(snapshot.lookback, snapshot.interval, snapshot.since_margin)
        state = StreamState(stream.name, venue.name, sink, forget_after_ms=forget)
        self.health.streams.append(state)
        self.metrics.state_keys.labels(stream.name, venue.name).set_function(lambda: state.keys)
        return Stream(stream, venue, state)

    async def _restore(
        self, access: KafkaAccess, sink: Sink, codec: Codec, streams: list[Stream]
    ) -> Changelog | None:
        """Seed every stream from its checkpoint, caught up with the orders and positions
        published after it (`catch_up`), and start writing it (None when `state.enabled` is
        off). Retried while Kafka cannot be read; None on a stop."""
        settings, log = self.settings.state, get_logger(component="state")
        if not settings.enabled:
            return None
        options, names = access.consumer_options(), self.settings.kafka.topics
        topic, store = names.name("state"), codec.store

        async def attempt() -> tuple[int, dict[str, Checkpoint]]:
            partitions = await state_partitions(access, topic)
            shards = {
                s.settings.name: shard_of(s.settings.shard_key(), partitions) for s in streams
            }
            async with asyncio.timeout(settings.restore_timeout):
                checkpoints = await restore(options, topic, shards, store)
                data = await access.topics([names.name("orders"), names.name("positions")])
                counts = {t.name: t.partitions for t in data if t.exists}
                caught = await catch_up(options, counts, checkpoints, codec.decode)
            log.info("checkpoint caught up with the data topics", records=caught)
            return partitions, checkpoints

        def unreadable(exc: Exception, delay: float) -> None:
            log.warning("cannot restore state; retrying", error=str(exc), retry_in=round(delay, 2))

        started = time.monotonic()
        found = await retry_until(
            attempt,
            Backoff(self.settings.reconnect),
            retry_on=(SinkError, KafkaAccessError, TimeoutError),  # type: ignore[arg-type]
            on_retry=unreadable,
            stop=self._stop,
        )
        if found is None:
            return None
        partitions, checkpoints = found
        changelog = Changelog(settings, sink, store, partitions)
        for s in streams:
            self.seed(s, checkpoints[s.settings.name], changelog)
        sink.on_acked, sink.partition_of = changelog.acked, changelog.partition_of
        self.metrics.restore_seconds.set(time.monotonic() - started)
        log.info("state restored", seconds=round(time.monotonic() - started, 3), topic=topic)
        return changelog

    def seed(self, stream: Stream, cp: Checkpoint, changelog: Changelog) -> None:
        stream.state.restore(cp)
        stream.venue.restore(cp.versions, cp.facts)
        forgotten = changelog.add(stream.settings.shard_key(), stream.venue, stream.state, cp)
        # What the stream kept: the checkpoint's keys (caught up with the data topics) less
        # the finished ones already behind the horizon, forgotten at once (`Changelog.add`).
        kept = stream.state.keys
        self.metrics.restored_keys.labels(stream.settings.name, stream.venue.name).set(kept)
        get_logger(stream=stream.settings.name, component="state").info(
            "stream state restored",
            keys=kept,
            forgotten=forgotten,
            open_orders=len(cp.open_orders),
            open_positions=len(cp.open_positions),
            entries=cp.entries,
        )

    def build_connection(self, stream: Stream, control: Control) -> StreamConnection:
        s, enabled = stream.settings, self.settings.control.enabled
        snapshot = None
        if s.rest_url and s.snapshot.enabled:
            snapshot = Snapshotter(
                stream.venue,
                s.rest_url,
                stream.state,
                self.metrics,
                s.snapshot,
                self.settings.reconnect,
                bucket=self._bucket(s),
                announce=control.reconciled if enabled else None,
            ).run
        return StreamConnection(
            s,
            stream.venue,
            stream.state,
            self.metrics,
            self.settings.reconnect,
            snapshot=snapshot,
            on_subscribed=control.subscribed if enabled else None,
            disk=self._disk,
        )

    def _bucket(self, stream: StreamSettings) -> TokenBucket:
        """One REST limiter per API key: the venues' limits are per key (venues.md §1.7); the
        first stream of a key sets its rate."""
        key = stream.shard_key()
        if key not in self._buckets:
            self._buckets[key] = TokenBucket(stream.snapshot.rate_per_second, stream.snapshot.burst)
        return self._buckets[key]

    def _helpers(
        self, access: KafkaAccess, changelog: Changelog | None, control: Control
    ) -> list[asyncio.Task[None]]:
        """Background tasks beside the streams: checkpoint flushes, heartbeats, signals."""
        c = self.settings.control
        work = [changelog.run()] if changelog is not None else []
        if c.enabled and c.heartbeat_interval:
            work.append(control.heartbeats())
        if c.enabled and c.signals:
            topic = self.settings.kafka.topics.name("control")
            work.append(control.signals(access, topic))
        tasks = [asyncio.create_task(w) for w in work]
        if self._disk is not None:  # watched: a failed fsync stops the process
            tasks.append(asyncio.create_task(self._disk.run(), name="disk-buffer"))
        return tasks

    def _on_signal(self, sig: signal.Signals) -> None:
        get_logger(component="app").info("shutdown requested", signal=sig.name)
        self._stop.set()

    async def build_codec(self) -> Codec | None:
        """The codec for the configured framing; in registry mode only once every schema
        version is registered (or found). None when a stop was requested first."""
        store = SchemaStore.load()
        encoder = self.settings.serialization.encoder
        fleet = self.settings.fleet
        member = fleet.member_id if fleet.enabled else None  # the `member` header
        if self.settings.serialization.mode != "registry":
            return Codec(store, encoder=encoder, member=member)
        registration = await self._register_schemas(store)
        if registration is None:
            return None
        return Codec(store, prefix_for=registration.prefix_for, encoder=encoder, member=member)

    async def _register_schemas(self, store: SchemaStore) -> Registration | None:
        """Register the schemas, retrying with backoff while the registry is unreachable or
        answers 5xx. A refusal (incompatible schema, bad credentials) is raised: retrying
        cannot change it, and publishing without it would break consumers."""
        log = get_logger(component="registry")
        ser = self.settings.serialization
        topics = {t: self.settings.kafka.topics.name(t) for t in store.topics()}
        registry_client(ser)  # a CA or key that cannot be loaded: ConfigError before retrying

        async def attempt() -> Registration:
            async with registry_client(ser) as client:
                return await register_schemas(
                    client,
                    store,
                    topics,
                    compatibility=ser.compatibility,
                    auto_register=ser.auto_register,
                )

        def unavailable(exc: RegistryError, delay: float) -> None:
            log.warning(
                "schema registry unavailable; retrying", error=str(exc), retry_in=round(delay, 2)
            )

        try:
            return await retry_until(
                attempt,
                Backoff(self.settings.reconnect),
                retry_on=RegistryError,
                retriable=lambda exc: exc.retriable,
                on_retry=unavailable,
                stop=self._stop,
            )
        except RegistryError as exc:
            log.error("schema registry refused the bridge's schemas", error=str(exc))
            raise

    async def _start_sink(self, sink: Sink) -> bool:
        """Start the producer, retrying with backoff while the brokers are unreachable.
        False when a stop was requested first."""
        log = get_logger(component="sink")

        async def start() -> bool:
            await sink.start()
            return True

        def unreachable(exc: SinkError, delay: float) -> None:
            log.warning("kafka unreachable; retrying", error=str(exc), retry_in=round(delay, 2))

        started = await retry_until(
            start,
            Backoff(self.settings.reconnect),
            retry_on=SinkError,
            retriable=lambda exc: exc.retriable,
            on_retry=unreachable,
            stop=self._stop,
        )
        return started is not None

    async def _shutdown(
        self,
        connections: list[StreamConnection],
        tasks: list[asyncio.Task[None]],
        helpers: list[asyncio.Task[None]],
        sink: Sink,
        changelog: Changelog | None,
    ) -> int:
        log = get_logger(component="app")
        grace = self.settings.shutdown.grace_seconds
        deadline = time.monotonic() + grace
        self.health.stopping = True
        log.info("shutting down", grace_seconds=grace)
        await asyncio.gather(*(c.stop() for c in connections), return_exceptions=True)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(deadline - time.monotonic(), 0.1))
            for task in pending:
                task.cancel()
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        if changelog is not None and await sink.flush(max(deadline - time.monotonic(), 0.1)):
            with contextlib.suppress(SinkError):
                await changelog.flush(final=True)  # the checkpoint catches up with the last acks
        flushed = await sink.stop(max(deadline - time.monotonic(), 0.1))
        log.info("shutdown complete", flushed=flushed)
        return ExitCode.OK if flushed else ExitCode.UNACKED
