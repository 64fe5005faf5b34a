"""Hostile frames through the running loop (issue 12): each one becomes a dead letter with its
exact bytes, the session goes on, and the event loop every stream shares (and /healthz) keeps
answering: the chart's liveness probe allows 5 s (the test allows 2), and one frame with
`1e1000000` in an integer field used to block the loop for 47 s (~30 s here)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.base import VenueSimulator
from bridge.dev.simulator.credentials import (
    AQUANOW_KEY,
    AQUANOW_SECRET,
    SATORI_KEY,
    SATORI_PRIVATE_KEY,
    SATORI_WALLET,
)
from bridge.dev.simulator.satori import SatoriSimulator
from tests.loop.conftest import Running, eventually, running, stream_settings

pytestmark = pytest.mark.loop

MIB = 1024 * 1024
HOSTILE: list[str | bytes] = [
    '{"type":"balance","payload":{"symbol":"BTC","updatedAt":1e1000000}}',
    '{"event":"api_account","data":{"symbol":"USD","logId":1e1000000},"success":true}',
    '{"type":"balance","payload":{"symbol":"BTC","totalBalance":1e9999999999999999999}}',
    '{"event":"api_account","data":{"symbol":"US\\ud800D","logId":1},"success":true}',
    "[" * (MIB // 2 - 10) + "]" * (MIB // 2 - 10),
    "[" + ",".join(["1e99999"] * (MIB // 8 - 1)) + "]",
    "{" + ",".join(f'"k{i}":0' for i in range(MIB // 12)) + "}",
    '{"event":"api_trade","data":[' + ",".join(["{}"] * (MIB // 3 - 20)) + "]}",
    b'{"type":"balance","payload":{"symbol":"\xed\xa0\x80"}}',
]


class Heartbeat:
    """Ticks every 10 ms; `gap` is the longest the event loop kept it waiting (wall clock),
    `busy` the most CPU the loop's thread spent between two ticks. `busy` is what a blocking
    parse shows, and it does not grow when other processes load the machine."""

    def __init__(self) -> None:
        self.gap = 0.0
        self.busy = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        last, last_cpu = time.monotonic(), time.thread_time()
        while True:
            await asyncio.sleep(0.01)
            now, cpu = time.monotonic(), time.thread_time()
            self.gap = max(self.gap, now - last)
            self.busy = max(self.busy, cpu - last_cpu)
            last, last_cpu = now, cpu

    async def __aenter__(self) -> Heartbeat:
        self._task = asyncio.create_task(self._beat())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


@pytest.fixture
async def sims() -> AsyncIterator[dict[str, VenueSimulator]]:
    aquanow = AquanowSimulator(AQUANOW_KEY, AQUANOW_SECRET, rate=50, seed=8)
    satori = SatoriSimulator(SATORI_KEY, SATORI_WALLET, rate=50, seed=8)
    async with aquanow, satori:
        yield {"aquanow": aquanow, "satori": satori}


def settings(venue: str, url: str) -> object:
    if venue == "aquanow":
        return stream_settings(
            venue="aquanow", url=url, api_key=AQUANOW_KEY, api_secret=AQUANOW_SECRET, ack_grace=0.2
        )
    return stream_settings(
        venue="satori",
        url=url,
        api_key=SATORI_KEY,
        private_key=SATORI_PRIVATE_KEY,
        coins=["USD"],
        pairs=["ETH-USD"],
    )


@pytest.mark.parametrize("venue", ["aquanow", "satori"])
async def test_hostile_frames_are_dead_letters_and_the_loop_keeps_answering(
    sims: dict[str, VenueSimulator], venue: str
) -> None:
    sim = sims[venue]
    async with running(settings(venue, sim.url)) as run, Heartbeat() as heartbeat:  # type: ignore[arg-type]
        await eventually(lambda: run.state.subscribed, "subscribed")
        for frame in HOSTILE:
            await sim.send_raw(frame)
        await eventually(lambda: len(run.sink.dead_letters()) >= len(HOSTILE), "dead letters")
        count = len(run.sink.records)
        await eventually(lambda: len(run.sink.records) > count + 3, "records after them")
    print(f"FIGURES {venue} longest_loop_gap_s={heartbeat.gap:.3f} busy_s={heartbeat.busy:.3f}")
    assert heartbeat.busy < 2.0, f"the event loop was blocked for {heartbeat.busy:.1f} s of CPU"
    raws = [d.raw for d in run.sink.dead_letters()]
    for frame in HOSTILE:
        data = frame if isinstance(frame, bytes) else frame.encode()
        assert data[: 512 * 1024] in raws
    assert no_reconnects(run)
    assert run.metric("bridge_ws_sessions_total") == 1


def no_reconnects(run: Running) -> bool:
    return all(run.reconnects(r) == 0 for r in ("network", "close", "watchdog", "internal_error"))
