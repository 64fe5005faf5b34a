"""The websocket loop against the simulators: handshakes, refusals, watchdogs, oversized
frames. Each test runs one `StreamConnection` in-process with a recording sink."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import structlog
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from bridge.connection import message_waiting
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.credentials import (
    AQUANOW_KEY,
    AQUANOW_SECRET,
    SATORI_KEY,
    SATORI_PRIVATE_KEY,
    SATORI_WALLET,
)
from bridge.dev.simulator.satori import SatoriSimulator
from bridge.records import DeadLetter
from tests.loop.conftest import FAST, eventually, running, stream_settings

pytestmark = pytest.mark.loop


def aquanow(url: str, **extra: object) -> object:
    return stream_settings(
        venue="aquanow",
        url=url,
        api_key=AQUANOW_KEY,
        api_secret=AQUANOW_SECRET,
        ack_grace=0.2,
        **extra,
    )


def satori(url: str, **extra: object) -> object:
    return stream_settings(
        venue="satori",
        url=url,
        api_key=SATORI_KEY,
        private_key=SATORI_PRIVATE_KEY,
        coins=["USD"],
        pairs=["ETH-USD"],
        **extra,
    )


@pytest.fixture
async def aquanow_sim() -> AsyncIterator[AquanowSimulator]:
    async with AquanowSimulator(AQUANOW_KEY, AQUANOW_SECRET, rate=50, seed=1) as sim:
        yield sim  # type: ignore[misc]


@pytest.fixture
async def satori_sim() -> AsyncIterator[SatoriSimulator]:
    async with SatoriSimulator(SATORI_KEY, SATORI_WALLET, rate=50, seed=1) as sim:
        yield sim  # type: ignore[misc]


async def test_pushes_become_records_once_subscribed(aquanow_sim: AquanowSimulator) -> None:
    async with running(aquanow(aquanow_sim.url)) as run:  # type: ignore[arg-type]
        await eventually(lambda: run.state.subscribed, "subscribed")
        await eventually(lambda: len(run.sink.records) >= 20, "20 records")
        assert run.state.frames_received >= 20
        assert run.metric("bridge_ws_subscribed") == 1
    assert run.metric("bridge_ws_subscribed") == 0  # stopping ends the session
    assert not run.state.subscribed


async def test_refused_credentials_back_off_on_the_auth_series(
    satori_sim: SatoriSimulator,
) -> None:
    """Three refused signatures: three reconnects labelled auth_rejected, each delay twice the
    last from auth_initial_delay (not the network series), then a normal subscription."""
    satori_sim.reject_next = 3  # refused requests: one subscription per session here
    stream = satori(satori_sim.url, events=["api_account"])
    with structlog.testing.capture_logs() as logs:
        async with running(stream) as run:  # type: ignore[arg-type]
            await eventually(lambda: run.state.subscribed, "subscribed after the refusals")
    lost = [e for e in logs if e["event"] == "connection lost"]
    assert [e["retry_in"] for e in lost] == [0.05, 0.1, 0.2]
    assert {e["reason"] for e in lost} == {"auth_rejected"}
    assert run.reconnects("auth_rejected") == 3
    assert run.metric("bridge_auth_failures_total") == 3
    assert run.reconnects("network") == 0


async def test_refused_handshakes_are_server_errors(aquanow_sim: AquanowSimulator) -> None:
    aquanow_sim.refusing = True
    async with running(aquanow(aquanow_sim.url)) as run:  # type: ignore[arg-type]
        await eventually(lambda: run.reconnects("server_error") >= 3, "three refusals")
        aquanow_sim.refusing = False
        await eventually(lambda: run.state.subscribed, "subscribed once accepted")
    assert aquanow_sim.refused >= 3


async def test_no_ack_within_subscribe_timeout_reconnects() -> None:
    """A venue that accepts the connection and never answers: the subscribe deadline fires."""
    received: list[str] = []

    async def deaf(ws: ServerConnection) -> None:
        async for message in ws:
            received.append(str(message))

    async with serve(deaf, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        stream = satori(f"ws://127.0.0.1:{port}/", subscribe_timeout=0.2)
        with structlog.testing.capture_logs() as logs:
            async with running(stream) as run:  # type: ignore[arg-type]
                await eventually(lambda: run.reconnects("subscribe_timeout") >= 2, "timeouts")
                assert not run.state.subscribed
    details = {e["detail"] for e in logs if e["event"] == "connection lost"}
    assert details == {
        "no ack for ['api_account:USD', 'api_entrust:ETH-USD', 'api_position:ETH-USD', "
        "'api_trade:ETH-USD'] in 0.2 s"
    }
    assert len(received) >= 8  # every subscription was sent, on each attempt


async def test_a_silent_feed_trips_the_silence_watchdog(aquanow_sim: AquanowSimulator) -> None:
    async with running(aquanow(aquanow_sim.url, silence_timeout=0.3)) as run:  # type: ignore[arg-type]
        await eventually(lambda: len(run.sink.records) >= 5, "records")
        aquanow_sim.pause()  # the socket stays open, nothing is sent
        await eventually(lambda: run.reconnects("silence") >= 1, "a silence reconnect")
        assert run.reconnects("watchdog") == 0


async def test_an_oversized_frame_is_a_dead_letter_and_the_session_goes_on(
    aquanow_sim: AquanowSimulator,
) -> None:
    big = '{"type":"balance","payload":{"symbol":"BTC","note":"' + "x" * 3000 + '"}}'
    async with running(aquanow(aquanow_sim.url, max_frame_bytes=1024)) as run:  # type: ignore[arg-type]
        await eventually(lambda: run.state.subscribed, "subscribed")
        await aquanow_sim.send_raw(big)
        await eventually(lambda: bool(run.sink.dead_letters()), "the dead letter")
        count = len(run.sink.records)
        await eventually(lambda: len(run.sink.records) > count + 3, "more records after it")
    (dead,) = run.sink.dead_letters()
    assert isinstance(dead, DeadLetter)
    assert (dead.reason, dead.raw) == ("oversized_frame", big.encode())
    assert "exceeds max_frame_bytes 1024" in dead.detail
    assert sum(run.reconnects(r) for r in ("network", "close", "server_error")) == 0


def test_fast_series_is_what_the_tests_assume() -> None:
    assert (FAST.auth_initial_delay, FAST.multiplier, FAST.jitter) == (0.05, 2.0, 0.0)


@pytest.mark.parametrize("compression", [False, True])
async def test_permessage_deflate_is_offered_only_when_configured(
    aquanow_sim: AquanowSimulator, compression: bool
) -> None:
    """Off by default (issue 17 phase 3): inflating costs CPU per frame and zlib state per
    connection; `compression: true` offers it, and the frames read the same."""
    stream = aquanow(aquanow_sim.url, compression=compression)
    async with running(stream) as run:  # type: ignore[arg-type]
        await eventually(lambda: len(run.sink.records) >= 5, "5 records")
        (session,) = aquanow_sim.sessions.values()
        names = [extension.name for extension in session.ws.protocol.extensions]
    assert names == (["permessage-deflate"] if compression else [])


async def test_a_whole_queued_message_is_read_without_arming_a_deadline() -> None:
    """`message_waiting` reads websockets' own frame queue (the loop skips the per-frame read
    deadline when a whole message is already there): true for whole messages, false for an
    empty queue and for a message whose last fragment has not come. A websockets release that
    moves the queue makes the first wait fail instead of silently costing CPU again."""
    release, finish = asyncio.Event(), asyncio.Event()

    async def venue(ws: ServerConnection) -> None:
        for i in range(3):
            await ws.send(f"m{i}")
        await release.wait()

        async def fragments() -> AsyncIterator[str]:
            yield "first half, "
            await finish.wait()  # the last fragment comes when the test says
            yield "second half"

        await ws.send(fragments())

    async with serve(venue, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            await eventually(lambda: message_waiting(ws), "a whole message queued")
            assert [await ws.recv() for _ in range(3)] == ["m0", "m1", "m2"]
            assert not message_waiting(ws)
            release.set()
            await eventually(lambda: len(ws.recv_messages.frames) == 1, "the first fragment")
            assert not message_waiting(ws)
            finish.set()
            await eventually(lambda: message_waiting(ws), "the whole fragmented message")
            assert await ws.recv() == "first half, second half"
