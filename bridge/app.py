"""Wiring: streams + codec + sink + metrics server; signals; graceful shutdown.

Shutdown order (SIGTERM or SIGINT): readiness goes false, every stream stops reading (frames
already received are still published), the producer flushes everything in flight, the process
exits 0 — or 1 if the grace period ran out with records still unacknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from dataclasses import dataclass, field

from aiohttp import web
from aiokafka.errors import KafkaError

from bridge.backoff import Backoff
from bridge.codec import Codec, SchemaStore
from bridge.connection import StreamConnection
from bridge.errors import ConfigError, SinkError
from bridge.logs import get_logger
from bridge.metrics import Health, Metrics, bound_port, start_http_server
from bridge.settings import Settings, StreamSettings
from bridge.sink import Sink
from bridge.snapshot import Snapshotter, StreamPublisher
from bridge.venues import build_venue


@dataclass
class App:
    """One bridge process. `run()` returns the exit code."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    health: Health = field(default_factory=Health)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _http: web.AppRunner | None = None
    metrics_port: int | None = None

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        log = get_logger(component="app")
        for stream in self.settings.streams:
            self.metrics.add_stream(stream.name, stream.venue)
        codec = self._build_codec()
        sink = Sink(self.settings.kafka, codec, self.metrics)
        self._http = await start_http_server(
            self.metrics, self.health, self.settings.metrics.host, self.settings.metrics.port
        )
        self.metrics_port = bound_port(self._http)
        log.info("metrics server listening", port=self.metrics_port)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            if not await self._start_sink(sink):
                return 0
            self.health.producer_started = True
            connections = [self._connection(stream, sink) for stream in self.settings.streams]
            tasks = [
                asyncio.create_task(c.run(), name=f"stream:{c.settings.name}") for c in connections
            ]
            self.started.set()
            stop_waiter = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait({stop_waiter, *tasks}, return_when="FIRST_COMPLETED")
            failed = [t.exception() for t in done - {stop_waiter} if not t.cancelled()]
            code = await self._shutdown(connections, tasks, sink)
            for exc in failed:  # a stream loop only ends on its own by raising
                if isinstance(exc, SinkError):
                    get_logger(component="app").error("cannot deliver to Kafka", error=str(exc))
                    return 1
                if exc is not None:
                    raise exc
            return code
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            await self._http.cleanup()

    def _connection(self, stream: StreamSettings, sink: Sink) -> StreamConnection:
        venue = build_venue(stream)
        publisher = StreamPublisher(sink)
        snapshot = None
        if stream.rest_url and stream.snapshot.enabled:
            snapshot = Snapshotter(
                venue,
                stream.rest_url,
                publisher,
                self.metrics,
                stream.snapshot,
                self.settings.reconnect,
            ).run
        return StreamConnection(
            stream,
            venue,
            publisher,
            self.metrics,
            self.health,
            self.settings.reconnect,
            snapshot=snapshot,
        )

    def _on_signal(self, sig: signal.Signals) -> None:
        get_logger(component="app").info("shutdown requested", signal=sig.name)
        self._stop.set()

    def _build_codec(self) -> Codec:
        if self.settings.serialization.mode == "registry":
            raise ConfigError("serialization.mode: registry mode is not available in this build")
        return Codec(SchemaStore.load())

    async def _start_sink(self, sink: Sink) -> bool:
        """Start the producer, retrying with backoff while the brokers are unreachable.
        False when a stop was requested first."""
        log = get_logger(component="sink")
        backoff = Backoff(self.settings.reconnect, random.Random())
        while not self._stop.is_set():
            try:
                await sink.start()
                return True
            except KafkaError as exc:
                delay = backoff.next_delay(time.monotonic())
                log.warning(
                    "kafka unreachable; retrying", error=repr(exc), retry_in=round(delay, 2)
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
        return False

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
        return 0 if flushed else 1
