"""Wiring: streams + codec + sink + metrics server; signals; graceful shutdown.

Start order: Kafka (sign-in, topics: bridge/kafka_check.py), the schema registry, the producer,
then the streams. Shutdown order (SIGTERM or SIGINT): readiness goes false, every stream stops
reading (frames already received are still published), the producer flushes everything in
flight, the process exits 0 — or 3 if the grace period ran out with records still
unacknowledged (`ExitCode`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from bridge.backoff import Backoff, retry_until
from bridge.codec import Codec, SchemaStore
from bridge.connection import StreamConnection
from bridge.errors import ExitCode, RegistryError, SinkError
from bridge.kafka import KafkaAccess
from bridge.kafka_check import KafkaWatch, prepare
from bridge.logs import get_logger
from bridge.metrics import Health, Metrics, bound_port, start_http_server
from bridge.registry import Registration, register_schemas, registry_client
from bridge.settings import Settings, StreamSettings
from bridge.sink import FATAL_DELIVERY_ERRORS, Sink
from bridge.snapshot import Snapshotter
from bridge.stream import StreamState


@dataclass
class App:
    """One bridge process. `run()` returns the exit code."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    health: Health = field(default_factory=Health)
    config_path: Path | None = None  # named in messages (`bridge topics create --config …`)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _http: web.AppRunner | None = None

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        log = get_logger(component="app")
        for stream in self.settings.streams:
            self.metrics.add_stream(stream.name, stream.venue)
        self._http = await start_http_server(
            self.metrics, self.health, self.settings.metrics.host, self.settings.metrics.port
        )
        log.info("metrics server listening", port=bound_port(self._http))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)
        watch: asyncio.Task[None] | None = None
        try:
            access = KafkaAccess(self.settings.kafka)
            kafka = self.settings.kafka
            if not await prepare(
                access, self.metrics, self.settings.reconnect, self._stop, self.config_path
            ):
                return ExitCode.OK
            watch = asyncio.create_task(
                KafkaWatch(access, self.metrics, kafka.check_interval).run(), name="kafka-watch"
            )
            # Ready only after the schemas are registered: the producer starts after the codec.
            codec = await self._build_codec()
            if codec is None:
                return ExitCode.OK
            sink = Sink(kafka, codec, self.metrics, access=access)
            if not await self._start_sink(sink):
                return ExitCode.OK
            self.health.producer_started = True
            connections = [self._connection(stream, sink) for stream in self.settings.streams]
            tasks = [
                asyncio.create_task(c.run(), name=f"stream:{c.settings.name}") for c in connections
            ]
            stop_waiter = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait({stop_waiter, *tasks}, return_when="FIRST_COMPLETED")
            failed = [t.exception() for t in done - {stop_waiter} if not t.cancelled()]
            code = await self._shutdown(connections, tasks, sink)
            for exc in failed:  # a stream loop only ends on its own by raising
                if isinstance(exc, SinkError):
                    get_logger(component="app").error("cannot deliver to Kafka", error=str(exc))
                    refused = isinstance(exc.__cause__, FATAL_DELIVERY_ERRORS)
                    return ExitCode.CONFIG if refused else ExitCode.CRASH
                if exc is not None:
                    raise exc
            return code
        finally:
            if watch is not None:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            await self._http.cleanup()

    def _connection(self, stream: StreamSettings, sink: Sink) -> StreamConnection:
        venue = stream.build_venue()
        state = StreamState(stream.name, venue.name, sink)
        self.health.streams.append(state)
        snapshot = None
        if stream.rest_url and stream.snapshot.enabled:
            snapshot = Snapshotter(
                venue,
                stream.rest_url,
                state,
                self.metrics,
                stream.snapshot,
                self.settings.reconnect,
            ).run
        return StreamConnection(
            stream, venue, state, self.metrics, self.settings.reconnect, snapshot=snapshot
        )

    def _on_signal(self, sig: signal.Signals) -> None:
        get_logger(component="app").info("shutdown requested", signal=sig.name)
        self._stop.set()

    async def _build_codec(self) -> Codec | None:
        """The codec for the configured framing; in registry mode only once every schema
        version is registered (or found). None when a stop was requested first."""
        store = SchemaStore.load()
        if self.settings.serialization.mode != "registry":
            return Codec(store)
        registration = await self._register_schemas(store)
        if registration is None:
            return None
        return Codec(store, prefix_for=registration.prefix_for)

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
        self, connections: list[StreamConnection], tasks: list[asyncio.Task[None]], sink: Sink
    ) -> int:
        log = get_logger(component="app")
        grace = self.settings.shutdown.grace_seconds
        deadline = time.monotonic() + grace
        self.health.stopping = True
        log.info("shutting down", grace_seconds=grace)
        await asyncio.gather(*(c.stop() for c in connections), return_exceptions=True)
        _, pending = await asyncio.wait(tasks, timeout=max(deadline - time.monotonic(), 0.1))
        for task in pending:
            task.cancel()
        flushed = await sink.stop(max(deadline - time.monotonic(), 0.1))
        log.info("shutdown complete", flushed=flushed)
        return ExitCode.OK if flushed else ExitCode.UNACKED
