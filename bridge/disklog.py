"""Pure: the disk buffer's entries, reading a segment back, and which frames are still owed.

No files, no clock: bridge/diskbuffer.py does the I/O around this.

An entry is one websocket frame exactly as received, stamped as it was:

    u32 body length | u32 CRC-32 of the body | body
    body = u64 seq | i64 received_at (µs) | u8 kind (0 text, 1 binary) | u16 stream name length
           | stream name (UTF-8) | the frame's bytes (a text frame as UTF-8)

Reading stops at the first entry that is incomplete or whose CRC does not match: a process
killed in the middle of a write leaves a torn last entry; anything after it cannot be framed
again, so the rest of that segment is skipped and counted.

A frame is owed until it is released: every record made from it was acknowledged by Kafka
(`Ticket`). Which frames are owed after a crash is what the segments hold, minus what the
release file (`Owed`, written every `sync_interval`) says was released by then.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from bridge.venues.base import Frame

HEADER: Final = struct.Struct("<II")  # body length, CRC-32 of the body
BODY: Final = struct.Struct("<QqBH")  # seq, received_at, kind, stream name length
TEXT, BINARY = 0, 1
OVERHEAD: Final = HEADER.size + BODY.size  # bytes per entry besides the names and the frame


@dataclass(frozen=True, slots=True)
class Entry:
    """One frame read back from the log."""

    seq: int
    stream: str
    received_at: int  # as stamped when it was received (µs): records come out the same
    data: str | bytes

    def frame(self, received_mono: float) -> Frame:
        return Frame(self.data, self.received_at, received_mono)


def frame_payload(frame: Frame) -> tuple[int, bytes]:
    """(kind, bytes) of a frame as written: a text frame as UTF-8 (a lone surrogate, which no
    websocket text frame can carry, kept as its three bytes, so reading back always gives the
    same string)."""
    data = frame.data
    if isinstance(data, str):
        return TEXT, data.encode("utf-8", "surrogatepass")
    return BINARY, data


def entry_parts(
    seq: int, stream: bytes, received_at: int, kind: int, payload: bytes
) -> list[bytes]:
    """The entry as the parts to write together (os.writev: the frame is not copied); they
    add up to `OVERHEAD + len(stream) + len(payload)` bytes."""
    head = BODY.pack(seq, received_at, kind, len(stream)) + stream
    crc = zlib.crc32(payload, zlib.crc32(head))
    return [HEADER.pack(len(head) + len(payload), crc), head, payload]


@dataclass(frozen=True, slots=True)
class Segment:
    """What one segment file holds: its whole entries, and how many of its bytes they fill.
    `torn`: bytes after them that are not a whole, intact entry (skipped)."""

    entries: list[Entry]
    valid_bytes: int
    size: int

    @property
    def torn(self) -> bool:
        return self.valid_bytes < self.size


def read_segment(data: bytes) -> Segment:
    """Every whole entry of a segment file's bytes, up to the first torn or damaged one."""
    entries: list[Entry] = []
    view, at, end = memoryview(data), 0, len(data)
    while at + HEADER.size <= end:
        length, crc = HEADER.unpack_from(view, at)
        body_at = at + HEADER.size
        if length < BODY.size or body_at + length > end:
            break
        body = view[body_at : body_at + length]
        if zlib.crc32(body) != crc:
            break
        seq, received_at, kind, name_length = BODY.unpack_from(body)
        name_end = BODY.size + name_length
        if kind not in (TEXT, BINARY) or name_end > length:
            break
        payload = bytes(body[name_end:])
        stream = bytes(body[BODY.size : name_end]).decode("utf-8", "replace")
        text = payload.decode("utf-8", "surrogatepass") if kind == TEXT else payload
        entries.append(Entry(seq, stream, received_at, text))
        at = body_at + length
    return Segment(entries, at, end)


@dataclass(frozen=True, slots=True)
class Owed:
    """The release file: every frame from `next_seq` on, and those in `ranges` (half-open
    [start, end) seq ranges, ascending), were still owed when it was written."""

    next_seq: int
    ranges: tuple[tuple[int, int], ...] = ()

    def holds(self, seq: int) -> bool:
        if seq >= self.next_seq:
            return True
        return any(start <= seq < end for start, end in self.ranges)

    def dumps(self) -> bytes:
        ranges = [list(r) for r in self.ranges]
        return json.dumps({"version": 1, "next_seq": self.next_seq, "owed": ranges}).encode()


def owed_of(seqs: Iterable[int], next_seq: int) -> Owed:
    """The release file for the frames `seqs` (ascending) still owed, `next_seq` the next one."""
    ranges: list[tuple[int, int]] = []
    for seq in seqs:
        if ranges and ranges[-1][1] == seq:
            ranges[-1] = (ranges[-1][0], seq + 1)
        else:
            ranges.append((seq, seq + 1))
    return Owed(next_seq, tuple(ranges))


def parse_owed(data: bytes) -> Owed | None:
    """A release file read back; None when it cannot be trusted (then everything is owed)."""
    try:
        document = json.loads(data)
        ranges = tuple((int(a), int(b)) for a, b in document["owed"])
        owed = Owed(int(document["next_seq"]), ranges)
    except (ValueError, KeyError, TypeError):
        return None
    return owed if document.get("version") == 1 else None


class Ticket:
    """One frame in the log, owed until it is sealed (every record made from it handed to the
    sink) and each of those records was acknowledged (`done`, called once per record)."""

    __slots__ = ("_held", "_release", "_sealed", "seq")

    def __init__(self, seq: int, release: Callable[[int], None]) -> None:
        self.seq = seq
        self._release = release
        self._held = 0
        self._sealed = False

    def hold(self) -> None:
        """A record made from the frame was handed to the sink."""
        self._held += 1

    def done(self) -> None:
        """One of those records was acknowledged."""
        self._held -= 1
        if self._sealed and self._held == 0:
            self._release(self.seq)

    def seal(self) -> None:
        """Every record made from the frame has been handed over (maybe none: an ack)."""
        self._sealed = True
        if self._held == 0:
            self._release(self.seq)
