"""Snapshots in-process: published after subscribing, cancelled with their session, and never
overwriting a push that arrived while they ran (the ordering guard of bridge/stream.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from bridge.dev.simulator.credentials import SATORI_KEY, SATORI_PRIVATE_KEY, SATORI_WALLET
from bridge.dev.simulator.satori import SatoriSimulator
from bridge.records import SOURCE_SNAPSHOT, SOURCE_STREAM, Balance, Envelope
from tests.loop.conftest import (
    GatedProxy,
    Recorder,
    Running,
    eventually,
    running,
    stream_settings,
)

pytestmark = pytest.mark.loop


@pytest.fixture
async def sim() -> AsyncIterator[SatoriSimulator]:
    async with SatoriSimulator(SATORI_KEY, SATORI_WALLET, rate=100, seed=3) as simulator:
        yield simulator  # type: ignore[misc]


def satori(url: str, rest_url: str) -> object:
    return stream_settings(
        venue="satori",
        url=url,
        rest_url=rest_url,
        api_key=SATORI_KEY,
        private_key=SATORI_PRIVATE_KEY,
        coins=["USD"],
        pairs=["ETH-USD"],
    )


def snapshot_done(run: Running) -> bool:
    return bool(run.metric("bridge_snapshot_last_success_timestamp_seconds") > 0)


async def test_the_snapshot_publishes_the_venue_state(sim: SatoriSimulator) -> None:
    sim.pause()  # no pushes: nothing can supersede a snapshot record
    async with running(satori(sim.url, sim.rest_url), snapshots=True) as run:  # type: ignore[arg-type]
        await eventually(lambda: snapshot_done(run), "the snapshot")
    assert run.state.superseded == 0
    snapshot = [r for r in run.sink.records if r.source == SOURCE_SNAPSHOT]
    assert any(isinstance(r, Balance) and r.asset == "USD" for r in snapshot)
    assert sim.rest_requests >= 4  # balance, orders, fills, positions


async def test_a_push_during_the_snapshot_wins_over_the_snapshot_record(
    sim: SatoriSimulator,
) -> None:
    """The REST answers are held until a USD balance push arrived after the snapshot began:
    the snapshot's (older) USD balance must then be skipped, never published over it."""
    async with GatedProxy(sim.rest_url) as proxy:
        stream = satori(sim.url, proxy.url)
        async with running(stream, snapshots=True) as run:  # type: ignore[arg-type]
            await eventually(lambda: proxy.waiting >= 1, "the snapshot's first request")
            began = len(run.sink.records)

            def pushed_usd() -> bool:
                return any(
                    isinstance(r, Balance) and r.source == SOURCE_STREAM
                    for r in run.sink.records[began:]
                )

            await eventually(pushed_usd, "a USD balance push during the snapshot")
            proxy.open()
            await eventually(lambda: snapshot_done(run), "the snapshot")
    assert run.state.superseded >= 1
    balances = [r for r in run.sink.records[began:] if isinstance(r, Balance)]
    assert balances
    assert all(r.source == SOURCE_STREAM for r in balances)


async def test_a_lost_connection_cancels_its_snapshot(sim: SatoriSimulator) -> None:
    async with GatedProxy(sim.rest_url) as proxy:
        stream = satori(sim.url, proxy.url)
        async with running(stream, snapshots=True) as run:  # type: ignore[arg-type]
            await eventually(lambda: proxy.waiting >= 1, "the snapshot's first request")
            await sim.drop_connections()
            await eventually(lambda: proxy.cancelled >= 1, "the held request cancelled")
            assert not any(r.source == SOURCE_SNAPSHOT for r in run.sink.records)
            # The next session starts its own snapshot, which completes once answered.
            await eventually(lambda: run.reconnects("network") >= 1, "the reconnect")
            await eventually(lambda: run.state.subscribed, "subscribed again")
            held = sim.rest_requests
            proxy.open()
            await eventually(lambda: snapshot_done(run), "the second session's snapshot")
    assert sim.rest_requests > held  # the second session's snapshot read the venue itself


class HeldSnapshots(Recorder):
    """A sink with no room for snapshot records until `room` is set (pushes pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.room = asyncio.Event()
        self.waiting = 0

    async def publish(self, record: Envelope, received_mono: float | None = None) -> None:
        if record.source == SOURCE_SNAPSHOT:
            self.waiting += 1
            try:
                await self.room.wait()
            finally:
                self.waiting -= 1
        await super().publish(record, received_mono)


async def test_a_session_lost_while_its_snapshot_waits_for_the_sink_forgets_that_record(
    sim: SatoriSimulator,
) -> None:
    """The snapshot is cancelled while its USD balance waits for buffer room: that record never
    reaches Kafka, so the next session's snapshot must publish the same venue state again
    rather than skip it as already published (issue 14: a stale balance after a reconnect)."""
    sim.pause()  # no pushes: the snapshot's records are the only ones
    async with running(satori(sim.url, sim.rest_url), snapshots=True) as run:  # type: ignore[arg-type]
        sink = run.state.sink = HeldSnapshots()
        await eventually(lambda: sink.waiting >= 1, "a snapshot record waiting for room")
        await sim.drop_connections()
        await eventually(lambda: run.reconnects("network") >= 1, "the reconnect")
        sink.room.set()
        await eventually(lambda: snapshot_done(run), "the second session's snapshot")
    usd = [r for r in sink.records if isinstance(r, Balance) and r.asset == "USD"]
    assert len(usd) == 1, sink.records
    assert usd[0].available == Decimal(sim.balances["USD"]["availableAmount"])
