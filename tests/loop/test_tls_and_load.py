"""Under TLS and under load: wss:// with asyncio's TLS read buffer cut to 32 KiB (frames far
larger than it arrive whole), the simulators' bounded send buffers (a consumer that stops
reading is cut off), and a burst of costly frames that must leave the loop its turns."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from websockets.asyncio.client import connect

from bridge.connection import TLS_READ_BUFFER, client_tls_context, limit_tls_read_buffers
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.credentials import AQUANOW_KEY, AQUANOW_SECRET
from bridge.records import Balance
from bridge.venues.aquanow import AquanowVenue
from tests.loop.conftest import eventually, running, stream_settings
from tests.loop.test_connection import aquanow

pytestmark = pytest.mark.loop


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ssl.SSLContext]:
    """A CA made now, trusted through SSL_CERT_FILE (as the bench does for the bridge), and
    the server context of a certificate it issued for 127.0.0.1; the read buffer restored."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    default = asyncio.sslproto.SSLProtocol.max_size
    limit_tls_read_buffers()
    client_tls_context.cache_clear()  # made again, trusting this CA
    yield server
    asyncio.sslproto.SSLProtocol.max_size = default
    client_tls_context.cache_clear()


async def test_frames_larger_than_the_tls_read_buffer_arrive_whole(tls: ssl.SSLContext) -> None:
    assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER
    pad = "x" * (8 * TLS_READ_BUFFER)
    big = '{"type":"balance","payload":{"symbol":"BTC","availableBalance":1.5,"p":"' + pad + '"}}'
    async with AquanowSimulator(AQUANOW_KEY, AQUANOW_SECRET, rate=20, seed=3, ssl=tls) as sim:
        assert sim.url.startswith("wss://")
        async with running(aquanow(sim.url)) as run:  # type: ignore[arg-type]
            await eventually(lambda: run.state.subscribed, "subscribed over TLS")
            await sim.send_raw(big)
            await eventually(
                lambda: any(isinstance(r, Balance) and pad in r.raw for r in run.sink.records),
                "the large frame as one record",
            )
            assert not run.sink.dead_letters()
            await eventually(lambda: sim.connections_total == 1, "one connection")
        async with running(aquanow(sim.url, name="second")) as other:  # type: ignore[arg-type]
            await eventually(lambda: other.state.subscribed, "a second stream subscribed")
    assert client_tls_context.cache_info().misses == 1, "every stream shares one TLS context"


async def test_a_consumer_that_stops_reading_is_cut_off() -> None:
    sim = AquanowSimulator(AQUANOW_KEY, AQUANOW_SECRET, rate=0, seed=4, slow_consumer_timeout=0.5)
    async with sim:
        # A client that subscribes, then reads nothing: the venue's buffer for it fills up.
        ws = await connect(sim.url, max_queue=1)
        venue = AquanowVenue("x", AQUANOW_KEY, AQUANOW_SECRET)
        (subscription,) = venue.build_subscriptions(int(time.time() * 1000))
        await ws.send(subscription.message)
        assert ws.transport is not None
        ws.transport.pause_reading()
        await eventually(lambda: sim.slow_consumers == 1, "the slow consumer cut off", 20)
        # Bounded: far fewer pushes went out than an unbounded buffer would have taken.
        assert len(sim.sent) < 5_000
        ws.transport.abort()


async def test_a_burst_of_frames_leaves_the_loop_its_turns() -> None:
    """Frames already received are handed out without the read suspending; a stream whose
    records cost CPU must still let the loop run (pings, other streams, /metrics) every few
    milliseconds, never for the length of a whole burst."""
    sim = AquanowSimulator(AQUANOW_KEY, AQUANOW_SECRET, rate=0, count=400, seed=5)
    sim.preload(400)
    sim.pause()
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with sim, running(aquanow(sim.url)) as run:  # type: ignore[arg-type]
        await eventually(lambda: run.state.subscribed, "subscribed")
        slow_publish = run.sink.publish

        async def costly(record: object, received_mono: float | None = None) -> None:
            spin_until = time.perf_counter() + 0.002  # 2 ms of CPU per record
            while time.perf_counter() < spin_until:
                pass
            await slow_publish(record, received_mono)  # type: ignore[arg-type]

        run.state.sink = type("Costly", (), {"publish": staticmethod(costly)})()
        task = asyncio.create_task(ticker())
        sim.pause(False)
        await eventually(lambda: len(run.sink.records) >= 400, "the burst published", 20)
        task.cancel()
    # 0.8 s of work: without turns in between, it comes in stretches of ~100 frames (0.2 s);
    # one long gap is allowed for the machine's own scheduling.
    long_gaps = sorted(g for g in gaps if g > 0.05)
    assert len(long_gaps) <= 1, f"the loop waited {[round(g * 1000) for g in long_gaps]} ms"


@pytest.mark.parametrize("spread", [True, False])
async def test_spread_pushes_reach_the_accounts_over_the_interval(spread: bool) -> None:
    """The fan-out bench's load: one event reaches N accounts spread over 1 / rate (as
    independent accounts' events do), or, without `spread`, all at once (a burst)."""
    keys = {f"spread-key-{i}": f"spread-secret-{i}" for i in range(4)}
    sim = AquanowSimulator(
        AQUANOW_KEY, AQUANOW_SECRET, rate=2, seed=6, extra_credentials=keys, spread=spread
    )
    async with sim, contextlib.AsyncExitStack() as streams:
        runs = [
            await streams.enter_async_context(
                running(
                    stream_settings(
                        venue="aquanow",
                        url=sim.url,
                        name=f"acct-{i}",
                        api_key=key,
                        api_secret=secret,
                    )
                )
            )
            for i, (key, secret) in enumerate(keys.items())
        ]
        await eventually(lambda: all(r.state.subscribed for r in runs), "every account subscribed")
        sim.pause()
        await sim.quiesce()
        first = len(sim.sent)
        sim.pause(False)
        await eventually(lambda: len(sim.sent) >= first + 4, "one event to the four accounts")
    times = [s.at for s in sim.sent[first : first + 4]]
    assert len({s.connection for s in sim.sent[first : first + 4]}) == 4
    span = times[-1] - times[0]
    if spread:  # three gaps of 0.5 s / 4
        assert span >= 0.3, f"delivered within {span:.3f} s"
    else:
        assert span < 0.2, f"a burst took {span:.3f} s"
