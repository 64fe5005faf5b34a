"""Keepalive tells "the venue is dead" from "the bridge is busy" (issue 12): while the bridge
is not reading (its sink has no room), frames and pongs queue up unread behind each other, and
their absence must not count against the venue; any frame proves the venue alive. A venue that
really stops answering is still detected (reason `watchdog`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.credentials import AQUANOW_KEY, AQUANOW_SECRET
from bridge.records import Envelope
from tests.loop.conftest import Running, eventually, running, stream_settings

pytestmark = pytest.mark.loop

PING_INTERVAL, PING_TIMEOUT = 0.05, 0.1


@pytest.fixture
async def sim() -> AsyncIterator[AquanowSimulator]:
    async with AquanowSimulator(AQUANOW_KEY, AQUANOW_SECRET, rate=400, seed=5) as simulator:
        yield simulator  # type: ignore[misc]


def aquanow(url: str) -> object:
    return stream_settings(
        venue="aquanow",
        url=url,
        api_key=AQUANOW_KEY,
        api_secret=AQUANOW_SECRET,
        ack_grace=0.2,
        ping_interval=PING_INTERVAL,
        ping_timeout=PING_TIMEOUT,
    )


async def drained(run: Running, sim: AquanowSimulator) -> None:
    """Stop the venue and wait until every frame it sent became a record, in order."""
    sim.pause()
    await eventually(lambda: len(run.sink.records) == len(sim.sent), "every frame", timeout=20)
    assert [getattr(r, "raw", None) for r in run.sink.records] == [s.text for s in sim.sent]


def reconnects(run: Running) -> dict[str, float]:
    return {r: run.reconnects(r) for r in ("watchdog", "network", "close", "silence")}


async def test_a_bridge_that_stops_reading_keeps_a_live_connection(sim: AquanowSimulator) -> None:
    """The sink has no room for 8 pong deadlines while the venue keeps pushing (a broker
    outage): the connection stays up and every frame pushed meanwhile is published after."""
    async with running(aquanow(sim.url)) as run:  # type: ignore[arg-type]
        gate = asyncio.Event()
        publish = run.sink.publish

        async def full(record: Envelope, received_mono: float | None = None) -> None:
            await gate.wait()
            await publish(record, received_mono)

        await eventually(lambda: len(run.sink.records) >= 20, "records")
        run.state.sink.publish = full  # type: ignore[method-assign]
        blocked_at, sent = time.monotonic(), len(sim.sent)
        # The outage: 8 ping deadlines long, with frames piling up behind the pongs.
        stall = 8 * (PING_INTERVAL + PING_TIMEOUT)
        await eventually(
            lambda: len(sim.sent) >= sent + 200 or not sim.sessions, "pushes during the stall"
        )
        assert sim.sessions, "the bridge closed a live connection while it was not reading"
        await asyncio.sleep(max(stall - (time.monotonic() - blocked_at), 0))
        gate.set()
        await drained(run, sim)
    assert reconnects(run) == {"watchdog": 0, "network": 0, "close": 0, "silence": 0}
    assert run.metric("bridge_ws_sessions_total") == 1
    assert sim.connections_total == 1


async def test_pushes_queued_ahead_of_the_pong_prove_the_venue_alive(
    sim: AquanowSimulator,
) -> None:
    """A slow consumer under load: the backlog in front of every pong takes longer to read
    than the pong deadline, yet each frame read shows the venue is alive."""
    async with running(aquanow(sim.url)) as run:  # type: ignore[arg-type]
        publish = run.sink.publish

        async def slow(record: Envelope, received_mono: float | None = None) -> None:
            await asyncio.sleep(0.004)  # 250 records/s against 400 pushes/s: a growing backlog
            await publish(record, received_mono)

        await eventually(lambda: run.state.subscribed, "subscribed")
        run.state.sink.publish = slow  # type: ignore[method-assign]
        sent = len(sim.sent)
        await eventually(
            lambda: len(sim.sent) >= sent + 400 or not sim.sessions, "a backlog", timeout=20
        )
        assert sim.sessions, "the bridge closed a live connection behind its backlog"
        backlog = len(sim.sent) - len(run.sink.records)
        assert backlog * 0.004 > 5 * PING_TIMEOUT, f"backlog {backlog} too short to prove it"
        await drained(run, sim)
    assert reconnects(run) == {"watchdog": 0, "network": 0, "close": 0, "silence": 0}
    assert sim.connections_total == 1


async def test_a_venue_that_stops_answering_is_still_detected(sim: AquanowSimulator) -> None:
    async with running(aquanow(sim.url)) as run:  # type: ignore[arg-type]
        await eventually(lambda: len(run.sink.records) >= 10, "records")
        sim.stall()  # reads nothing (pings unanswered), sends nothing, closes nothing
        await eventually(lambda: run.reconnects("watchdog") == 1, "a watchdog reconnect")
        await eventually(lambda: run.metric("bridge_ws_sessions_total") == 2, "resubscribed")
    assert sim.connections_total == 2
