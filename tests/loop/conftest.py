"""The loop layer: `StreamConnection` and `Snapshotter` run in-process against the simulators
(real websockets and REST on loopback) with a recording sink instead of Kafka. No broker, each
test well under a second or two: the place to pin down reconnect and snapshot behaviour."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientSession, web

from bridge.connection import StreamConnection
from bridge.metrics import Metrics
from bridge.records import DeadLetter, Envelope
from bridge.sections import ReconnectSettings, StreamBase
from bridge.settings import validate_settings
from bridge.snapshot import Reconciliation, Snapshotter
from bridge.stream import StreamState
from tests.helpers import wait_until

pytestmark = pytest.mark.loop

# Fast and exact: no jitter, so the delays are the series itself.
FAST = ReconnectSettings(
    initial_delay=0.02,
    multiplier=2.0,
    max_delay=0.5,
    jitter=0.0,
    auth_initial_delay=0.05,
    auth_max_delay=1.0,
)


class Recorder:
    """Stands in for the sink: keeps every record handed over, in order."""

    def __init__(self) -> None:
        self.records: list[Envelope] = []

    async def publish(self, record: Envelope, received_mono: float | None = None) -> None:
        self.records.append(record)

    def dead_letters(self) -> list[DeadLetter]:
        return [r for r in self.records if isinstance(r, DeadLetter)]


def stream_settings(**stream: Any) -> StreamBase:
    """One stream's section, validated exactly as the config file's would be."""
    return validate_settings({"streams": [{"name": "loop", **stream}]}).streams[0]


class Running:
    """A stream running in-process; stopped (and its task awaited) when the block ends.
    `reconciliations` keeps what each completed snapshot run reported."""

    def __init__(self, stream: StreamBase, snapshots: bool) -> None:
        self.sink = Recorder()
        self.metrics = Metrics()
        self.metrics.add_stream(stream.name, stream.venue)
        venue = stream.build_venue()
        self.venue = venue
        self.state = StreamState(stream.name, venue.name, self.sink)
        self.reconciliations: list[Reconciliation] = []
        self.snapshotter: Snapshotter | None = None
        if snapshots:
            assert stream.rest_url is not None
            self.snapshotter = Snapshotter(
                venue,
                stream.rest_url,
                self.state,
                self.metrics,
                stream.snapshot,
                FAST,
                announce=self._reconciled,
            )
        snapshot = self.snapshotter.run if self.snapshotter else None
        self.connection = StreamConnection(
            stream, venue, self.state, self.metrics, FAST, snapshot=snapshot
        )
        self.labels = (stream.name, venue.name)

    async def _reconciled(self, state: StreamState, result: Reconciliation) -> None:
        self.reconciliations.append(result)

    def reconnects(self, reason: str) -> float:
        return self.metric("bridge_ws_reconnects_total", reason=reason)

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(
            name, {"stream": self.labels[0], "venue": self.labels[1], **labels}
        )
        return 0.0 if value is None else value


@contextlib.asynccontextmanager
async def running(stream: StreamBase, *, snapshots: bool = False) -> AsyncIterator[Running]:
    run = Running(stream, snapshots)
    task = asyncio.create_task(run.connection.run())
    try:
        yield run
    finally:
        await run.connection.stop()
        await asyncio.wait_for(task, 5)


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """The tests' one polling helper (tests/helpers.wait_until), at the pace of in-process
    servers: checked every 5 ms, failing after `timeout` seconds naming `what`."""
    await wait_until(condition, what, timeout, interval=0.005)


class GatedProxy:
    """A REST proxy in front of a simulator that holds every request until `open()`: a
    snapshot caught mid-flight, deterministically."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.gate = asyncio.Event()
        self.waiting = 0  # requests held at the gate right now
        self.cancelled = 0  # requests whose client went away while held
        self._runner: web.AppRunner | None = None
        self.url = ""

    def open(self) -> None:
        self.gate.set()

    async def _forward(self, request: web.Request) -> web.Response:
        self.waiting += 1
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.waiting -= 1
        async with (
            ClientSession() as session,
            session.request(
                request.method,
                self.upstream + request.path_qs,
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
                data=await request.read(),
            ) as answer,
        ):
            return web.Response(
                status=answer.status,
                body=await answer.read(),
                content_type=answer.content_type,
            )

    async def __aenter__(self) -> GatedProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        self.gate.set()
        if self._runner is not None:
            await self._runner.cleanup()


Check = Callable[[], Awaitable[None]]
