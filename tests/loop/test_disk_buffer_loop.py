"""The connection loop with the disk buffer on, against the simulators: every frame is in the
log before its records reach the sink; a frame is released when the sink has acknowledged all
of its records; after a crash, the frames still owed are parsed again by a fresh venue module
and give exactly the records they gave before (same event ids, same receive times, same raw),
and nothing that was acknowledged comes back."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import pytest

from bridge.connection import StreamConnection
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
from bridge.diskbuffer import DiskBuffer
from bridge.disklog import Ticket
from bridge.metrics import Metrics
from bridge.records import Envelope
from bridge.sections import DiskBufferSettings, StreamBase
from bridge.stream import StreamState
from tests.loop.conftest import FAST, eventually, stream_settings

pytestmark = pytest.mark.loop


class AckingSink:
    """Stands in for the sink: keeps each record with its frame's ticket, and acknowledges
    (settles the ticket of) the first `acked` records handed over, never the others."""

    def __init__(self, disk: DiskBuffer, acked: int) -> None:
        self.disk = disk
        self.records: list[tuple[Envelope, int]] = []  # (record, frame seq)
        self.acked = acked

    async def publish(
        self, record: Envelope, received_mono: float | None = None, ticket: Ticket | None = None
    ) -> None:
        assert ticket is not None, "every record of a frame comes with the frame's ticket"
        ticket.hold()
        self.records.append((record, ticket.seq))
        if len(self.records) <= self.acked:
            ticket.done()


def satori(url: str) -> StreamBase:
    return stream_settings(
        venue="satori",
        url=url,
        api_key=SATORI_KEY,
        private_key=SATORI_PRIVATE_KEY,
        coins=["USD"],
        pairs=["ETH-USD"],
    )


def aquanow(url: str) -> StreamBase:
    return stream_settings(
        venue="aquanow", url=url, api_key=AQUANOW_KEY, api_secret=AQUANOW_SECRET, ack_grace=0.2
    )


@pytest.mark.parametrize("venue", ["aquanow", "satori"])
async def test_a_crash_replays_exactly_the_frames_not_acknowledged(
    venue: str, tmp_path: Path
) -> None:
    sim: VenueSimulator
    if venue == "aquanow":
        sim = AquanowSimulator(AQUANOW_KEY, AQUANOW_SECRET, rate=200, seed=7)
    else:
        sim = SatoriSimulator(SATORI_KEY, SATORI_WALLET, rate=200, seed=7)
    settings = DiskBufferSettings(enabled=True, path=tmp_path)
    async with sim:
        stream = aquanow(sim.url) if venue == "aquanow" else satori(sim.url)
        disk = DiskBuffer(settings, Metrics())
        assert disk.open() == []
        sink = AckingSink(disk, acked=60)
        state = StreamState(stream.name, venue, sink)
        connection = StreamConnection(
            stream, stream.build_venue(), state, Metrics(), FAST, disk=disk
        )
        task = asyncio.create_task(connection.run())
        await eventually(lambda: len(sink.records) >= 150, "150 records handed over")
        await connection.stop()
        await asyncio.wait_for(task, 5)
        disk.sync()  # what a running bridge writes every sync_interval
        disk._close_fds()  # SIGKILL: no close()

    by_frame: dict[int, list[Envelope]] = defaultdict(list)
    for record, seq in sink.records:
        by_frame[seq].append(record)
    acked_frames = {seq for _, seq in sink.records[:60]}
    unacked = {seq for _, seq in sink.records[60:]}
    owed = sorted(unacked)  # frames without a record (acks) were released at once
    # Frames with some record acked and some not stay owed: released only when all are.
    assert acked_frames - unacked, "some frames were released"

    again = DiskBuffer(settings, Metrics())
    entries = again.open()
    assert [e.seq for e in entries] == owed, "exactly the frames not released"
    replay_sink = AckingSink(again, acked=10**9)
    fresh = StreamConnection(
        stream,
        stream.build_venue(),
        StreamState(stream.name, venue, replay_sink),
        Metrics(),
        FAST,
        disk=again,
    )
    await again.replay(entries, {stream.name: fresh})
    replayed: dict[int, list[Envelope]] = defaultdict(list)
    for record, seq in replay_sink.records:
        replayed[seq].append(record)
    assert {seq: replayed[seq] for seq in unacked} == {seq: by_frame[seq] for seq in unacked}
    assert again.owed == 0, "every replayed record acknowledged: every frame released"
    again.close()
    assert segment_files(tmp_path) == [], "every file deleted"


def segment_files(path: Path) -> list[Path]:
    return list(path.glob("*.seg"))
