"""The disk buffer's log (bridge/disklog.py, bridge/diskbuffer.py) in a temporary directory:
append and read back exactly, release only once every record of a frame is acknowledged,
replay what a crash left (and only that), a torn last entry skipped and counted, full means
waiting (never dropping), one process per directory; and the sink settling a frame's ticket
once per record, through a failed delivery and its resend."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from bridge.codec import Codec, SchemaStore
from bridge.diskbuffer import RELEASED, DiskBuffer, check_streams
from bridge.disklog import Owed, Ticket, owed_of, parse_owed, read_segment
from bridge.errors import ConfigError
from bridge.metrics import Metrics
from bridge.sections import DiskBufferSettings
from bridge.settings import KafkaSettings, validate_settings
from bridge.sink import Sink
from bridge.venues.base import Frame
from tests.fakes import PendingProducer
from tests.loop.conftest import eventually
from tests.records import live_balance as balance
from tests.unit.test_sink_recovery import Producers, next_send

pytestmark = pytest.mark.unit

FRAMES: list[str | bytes] = [
    '{"type":"x","n":1}',
    "ünïcödé ✓ 𝄞",
    "\ud800 a lone surrogate",  # no websocket carries it; the log keeps it anyway
    b"\x00\xffbinary",
]


def settings(path: Path, **extra: Any) -> DiskBufferSettings:
    return DiskBufferSettings(enabled=True, path=path, **extra)


def frame(data: str | bytes, at: int = 1_700_000_000_000_000) -> Frame:
    return Frame(data, at, 0.0)


def opened(path: Path, metrics: Metrics | None = None, **extra: Any) -> DiskBuffer:
    disk = DiskBuffer(settings(path, **extra), metrics or Metrics())
    assert disk.open() == []
    return disk


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


async def test_frames_read_back_exactly_as_received(tmp_path: Path) -> None:
    disk = opened(tmp_path)
    for i, data in enumerate(FRAMES):
        await disk.append("aq" if i % 2 else "sat", frame(data, 1_000 + i))
    disk.close()  # nothing released: everything is owed at the next start
    again = DiskBuffer(settings(tmp_path), Metrics())
    entries = again.open()
    assert [(e.stream, e.received_at, e.data) for e in entries] == [
        ("aq" if i % 2 else "sat", 1_000 + i, data) for i, data in enumerate(FRAMES)
    ]
    assert [e.seq for e in entries] == [0, 1, 2, 3]
    again.close()


async def test_a_frame_is_released_only_when_sealed_and_every_record_is_acked(
    tmp_path: Path,
) -> None:
    disk = opened(tmp_path)
    ticket = await disk.append("aq", frame("a"))
    ticket.hold()
    ticket.hold()
    ticket.done()
    assert disk.owed == 1, "one of two records acknowledged"
    ticket.done()
    assert disk.owed == 1, "not sealed: more records may come from this frame"
    ticket.seal()
    assert disk.owed == 0
    control = await disk.append("aq", frame("an ack: no record"))
    control.seal()
    assert disk.owed == 0
    disk.close()
    assert segments(tmp_path) == [], "a clean stop with everything released leaves no data"


async def test_a_restart_replays_exactly_what_was_not_released(tmp_path: Path) -> None:
    disk = opened(tmp_path)
    tickets = [await disk.append("aq", frame(f"f{i}")) for i in range(6)]
    for i in (0, 2, 3):
        tickets[i].seal()
    disk.sync()  # the release file as a running bridge writes it every sync_interval
    tickets[5].seal()  # released after the last sync: published again after a crash
    # SIGKILL: no close(). The lock dies with the process; here, the descriptor does.
    disk._close_fds()
    metrics = Metrics()
    again = DiskBuffer(settings(tmp_path), metrics)
    entries = again.open()
    assert [e.data for e in entries] == ["f1", "f4", "f5"]
    new = await again.append("aq", frame("after"))
    assert new.seq == 6, "sequence numbers go on, never reused"

    class Stream:
        def __init__(self) -> None:
            self.replayed: list[Ticket] = []

        async def replay(self, entry: Any, ticket: Ticket) -> None:
            ticket.hold()
            self.replayed.append(ticket)
            ticket.seal()

    stream = Stream()
    await again.replay(entries, {"aq": stream})
    assert metrics.registry.get_sample_value("bridge_disk_buffer_replayed_frames_total") == 3
    assert again.owed == 4
    for ticket in stream.replayed:
        ticket.done()
    new.seal()
    assert again.owed == 0
    again.close()
    third = DiskBuffer(settings(tmp_path), Metrics())
    assert third.open() == [], "replayed and acknowledged: owed no more"
    third.close()


async def test_a_torn_last_entry_is_skipped_and_counted(tmp_path: Path) -> None:
    disk = opened(tmp_path)
    for i in range(3):
        await disk.append("aq", frame(f"frame {i} " + "x" * 100))
    disk._close_fds()
    (segment,) = segments(tmp_path)
    data = segment.read_bytes()
    segment.write_bytes(data[:-40])  # killed in the middle of writing the last entry
    metrics = Metrics()
    again = DiskBuffer(settings(tmp_path), metrics)
    entries = again.open()
    assert [e.data[:7] for e in entries] == ["frame 0", "frame 1"]
    assert metrics.registry.get_sample_value("bridge_disk_buffer_torn_entries_total") == 1
    assert (await again.append("aq", frame("next"))).seq == 2, "the torn entry's seq is free"
    again.close()


def test_a_damaged_entry_ends_the_segment_where_it_is() -> None:
    """A flipped bit fails the CRC: that entry and everything after it in its file are
    skipped (nothing after it can be framed again with confidence)."""
    from bridge.disklog import entry_parts

    entries = [b"".join(entry_parts(i, b"aq", 1, 0, f"f{i}".encode())) for i in range(3)]
    damaged = bytearray(b"".join(entries))
    damaged[len(entries[0]) + 20] ^= 0x01
    read = read_segment(bytes(damaged))
    assert [e.data for e in read.entries] == ["f0"]
    assert read.torn
    assert read.valid_bytes == len(entries[0])
    assert not read_segment(b"".join(entries)).torn


async def test_full_means_waiting_for_room_never_dropping(tmp_path: Path) -> None:
    """max_bytes reached: the next append waits (the reading stream pauses) until frames are
    released and their file deleted; nothing is refused or dropped."""
    metrics = Metrics()
    disk = opened(tmp_path, metrics, max_bytes=1024 * 1024, segment_bytes=64 * 1024)
    body = "y" * 4000
    tickets = []
    while disk.used + 4100 <= 1024 * 1024:
        tickets.append(await disk.append("aq", frame(body)))
    waiting = asyncio.create_task(disk.append("aq", frame("one more " + body)))
    await asyncio.sleep(0.01)
    assert not waiting.done(), "full: the append waits"
    assert metrics.registry.get_sample_value("bridge_disk_buffer_bytes") == disk.used
    tickets[-1].seal()  # in the active file: frees nothing yet
    await asyncio.sleep(0.01)
    assert not waiting.done()
    for ticket in tickets[:20]:  # the first file's frames (16 of 4 KiB per 64 KiB file)
        ticket.seal()
    last = await asyncio.wait_for(waiting, 5)
    assert last.seq == len(tickets)
    disk.close()
    assert len(DiskBuffer(settings(tmp_path), Metrics()).open()) == len(tickets) + 1 - 21


async def test_a_frame_larger_than_the_log_waits_until_nothing_is_owed(tmp_path: Path) -> None:
    disk = opened(tmp_path, max_bytes=1024 * 1024, segment_bytes=64 * 1024)
    small = await disk.append("aq", frame("small"))
    huge = asyncio.create_task(disk.append("aq", frame("z" * (2 * 1024 * 1024))))
    await asyncio.sleep(0.01)
    assert not huge.done()
    small.seal()
    (await asyncio.wait_for(huge, 5)).seal()
    disk.close()


async def test_files_roll_and_released_files_are_deleted(tmp_path: Path) -> None:
    disk = opened(tmp_path, max_bytes=1024 * 1024, segment_bytes=64 * 1024)
    tickets = [await disk.append("aq", frame("w" * 10_000)) for _ in range(20)]
    assert len(segments(tmp_path)) == 4  # 6 entries of ~10 KB per 64 KiB file
    for ticket in tickets[:12]:
        ticket.seal()
    assert len(segments(tmp_path)) == 2
    disk.close()


def test_one_process_per_directory(tmp_path: Path) -> None:
    first = opened(tmp_path)
    with pytest.raises(ConfigError, match=r"^disk_buffer.path: .* in use by another bridge"):
        DiskBuffer(settings(tmp_path), Metrics()).open()
    first.close()
    opened(tmp_path).close()


def test_a_directory_that_cannot_be_used_names_the_key(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"^disk_buffer.path: cannot use"):
        DiskBuffer(settings(blocker / "buffer"), Metrics()).open()


async def test_frames_of_a_stream_no_longer_configured_stop_the_start(tmp_path: Path) -> None:
    disk = opened(tmp_path)
    await disk.append("gone", frame("x"))
    disk.close()
    entries = DiskBuffer(settings(tmp_path), Metrics()).open()
    with pytest.raises(ConfigError, match=r"'gone' \(1 frames\)"):
        check_streams(entries, {"aq"}, tmp_path)


async def test_an_unreadable_release_file_makes_every_frame_owed(tmp_path: Path) -> None:
    disk = opened(tmp_path)
    (await disk.append("aq", frame("a"))).seal()
    await disk.append("aq", frame("b"))
    disk.sync()
    disk._close_fds()
    (tmp_path / RELEASED).write_text("{not json")
    entries = DiskBuffer(settings(tmp_path), Metrics()).open()
    assert [e.data for e in entries] == ["a", "b"], "a duplicate, never a loss"


def test_owed_ranges() -> None:
    owed = owed_of([3, 4, 5, 9, 11, 12], next_seq=20)
    assert owed.ranges == ((3, 6), (9, 10), (11, 13))
    assert [s for s in range(25) if owed.holds(s)] == [3, 4, 5, 9, 11, 12, *range(20, 25)]
    assert parse_owed(owed.dumps()) == owed
    assert parse_owed(Owed(1).dumps().replace(b'"version": 1', b'"version": 2')) is None


def test_settings() -> None:
    assert not validate_settings({"streams": [_stream()]}).disk_buffer.enabled
    with pytest.raises(ConfigError, match=r"^disk_buffer.segment_bytes: must be at most a quarter"):
        validate_settings(
            {
                "disk_buffer": {"max_bytes": 4 * 1024 * 1024, "segment_bytes": 2 * 1024 * 1024},
                "streams": [_stream()],
            }
        )
    with pytest.raises(ConfigError, match=r"^disk_buffer.fsync: "):
        validate_settings({"disk_buffer": {"fsync": "sometimes"}, "streams": [_stream()]})


def _stream() -> dict[str, Any]:
    return {"name": "aq", "venue": "aquanow", "url": "wss://x", "api_key": "k", "api_secret": "s"}


async def test_the_sink_releases_a_frame_once_each_of_its_records_is_acked(
    tmp_path: Path,
) -> None:
    """A frame made two records: released when both are acknowledged, not at the first. A
    record whose batch failed keeps its frame owed until its resend is acknowledged; a frame
    whose records were all acknowledged meanwhile is released at once, and the duplicate of
    it republished after the resend does not settle its ticket a second time."""
    producers = Producers(max_records=1)  # one future per record
    sink = Sink(KafkaSettings(), Codec(SchemaStore.load()), Metrics(), producers)
    await sink.start()
    producer = producers.new.get_nowait()
    disk = opened(tmp_path)
    two = await disk.append("s1", frame("two balances"))
    for record in (balance("A", "1"), balance("B", "1")):
        await sink.publish(record, None, two)
    two.seal()
    newer = await disk.append("s1", frame("B again"))
    await sink.publish(balance("B", "2"), None, newer)
    newer.seal()
    (_, a1), (_, b1), (_, b2) = [await next_send(producer) for _ in range(3)]
    a1.set_result(None)
    await eventually(lambda: sink.ledger.in_flight == 2, "A1 acknowledged")
    assert disk.owed == 2, "B1 is not acknowledged yet"
    b1.set_exception(KafkaTimeoutError("Batch for TopicPartition expired"))
    b2.set_result(None)
    await eventually(lambda: disk.owed == 1, "B2's frame released")
    fresh: PendingProducer = await asyncio.wait_for(producers.new.get(), 5)
    _, resent = await next_send(fresh)
    assert disk.owed == 1, "B1 failed: its frame is owed until the resend is acknowledged"
    resent.set_result(None)
    await eventually(lambda: disk.owed == 0, "released at the resend's ack")
    _, republished = await next_send(fresh)  # B2 again: B's newest must be last
    republished.set_result(None)
    assert await sink.stop(1)
    assert newer._held == 0, "the duplicate's ack did not settle the ticket again"
    disk.close()
    assert set(os.listdir(tmp_path)) == {"lock", RELEASED}
