"""The disk buffer (`disk_buffer`, off by default): nothing received is lost to a crash.

Every frame is appended to a local log before it is parsed (`append`, from the connection
loop), and released once every record made from it is acknowledged by Kafka (the sink settles
the frame's `Ticket` per record). At start, what the log still owes is parsed again by the
stream's venue module and published before any stream connects (`replay`): records and their
`event_id`s are deterministic, so a consumer deduplicates a replayed record it already has.

`disk_buffer.path` holds:
    lock                flock'd by the running process (a second process is refused, exit 2)
    <first seq>.seg     the log, in files of about `segment_bytes`; a new file at every start,
                        never appended to after a restart; deleted once every frame in it is
                        released (bridge/disklog.py: the entry format)
    released.json       which frames were still owed at the last sync (`sync_interval`): a
                        restart publishes again only those and the ones appended after it

One log per process, not per stream: one file descriptor and one fsync for all streams (a
thousand streams would need a thousand of each), one size limit that is the volume's, and the
same scope as the buffer it backs (`kafka.buffer_records` is per process too). A frame names its
stream; at start every frame still owed must belong to a configured stream.

Full (`max_bytes` of files): appending waits, so the reading stream pauses (backpressure, as
when Kafka's buffer is full), never a silent drop. A failed write is retried (the read waits,
`bridge_disk_buffer_write_errors_total` counts); a failed fsync stops the process
(`DiskBufferError`): after one, the kernel may have dropped pages it had accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from bridge.disklog import (
    OVERHEAD,
    Entry,
    Owed,
    Ticket,
    entry_parts,
    frame_payload,
    owed_of,
    parse_owed,
    read_segment,
)
from bridge.errors import ConfigError, DiskBufferError
from bridge.logs import get_logger
from bridge.metrics import Metrics
from bridge.sections import DiskBufferSettings
from bridge.venues.base import Frame

RELEASED: Final = "released.json"
SUFFIX: Final = ".seg"
# Between attempts to write after a failed write (ENOSPC, EIO): doubling up to the last.
WRITE_RETRY_DELAYS: Final = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(eq=False, slots=True)
class _Segment:
    base: int  # the seq of its first entry: its file name
    path: Path
    size: int = 0  # bytes of whole entries
    owed: int = 0  # its frames not released yet
    fd: int | None = None  # open while it is the one appended to


class Replayer(Protocol):
    """Publishes one frame read back from the log (bridge.connection.StreamConnection)."""

    async def replay(self, entry: Entry, ticket: Ticket) -> None: ...


class DiskBuffer:
    """The process's frame log. `open()` before the streams connect, `close()` at the end."""

    def __init__(self, settings: DiskBufferSettings, metrics: Metrics) -> None:
        self._s = settings
        self._dir = settings.path
        self._always = settings.fsync == "always"
        self._segments: dict[int, _Segment] = {}  # base seq → segment, oldest first
        self._active: _Segment | None = None
        self._owed: dict[int, _Segment] = {}  # seq → its segment, ascending
        self._next_seq = 0
        self.used = 0  # bytes of the segment files
        self._names: dict[str, bytes] = {}
        self._room = asyncio.Event()
        self._gate = asyncio.Lock()  # appenders waiting for room go in call order
        self._unsynced = False  # data written since the last fsync
        self._dirty = True  # the owed frames changed since the release file was written
        self._lock_fd: int | None = None
        self._dir_fd: int | None = None
        self._log = get_logger(component="disk_buffer")
        self._m_torn = metrics.disk_buffer_torn
        self._m_write_errors = metrics.disk_buffer_write_errors
        self._m_replayed = metrics.disk_buffer_replayed
        metrics.disk_buffer_capacity.set(settings.max_bytes)
        metrics.disk_buffer_bytes.set_function(lambda: self.used)
        metrics.disk_buffer_frames.set_function(lambda: len(self._owed))

    @property
    def owed(self) -> int:
        """Frames not released yet."""
        return len(self._owed)

    def open(self) -> list[Entry]:
        """Lock the directory and read back every frame still owed, in log order. A directory
        the bridge cannot use is a `ConfigError` naming `disk_buffer.path`."""
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self._dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            self._dir_fd = os.open(self._dir, os.O_RDONLY)
        except OSError as exc:
            self._close_fds()
            raise ConfigError(f"disk_buffer.path: cannot use {self._dir}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._close_fds()
            raise ConfigError(
                f"disk_buffer.path: {self._dir} is in use by another bridge process"
            ) from None
        released = self._read_released()
        entries: list[Entry] = []
        for path in sorted(self._dir.glob("*" + SUFFIX)):  # zero-padded names: in seq order
            entries.extend(self._load(path, released))
        self._log.info(
            "disk buffer opened",
            path=str(self._dir),
            frames_owed=len(entries),
            bytes=self.used,
            fsync=self._s.fsync,
        )
        return entries

    def _read_released(self) -> Owed | None:
        try:
            data = (self._dir / RELEASED).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"disk_buffer.path: cannot read {RELEASED}: {exc.strerror}") from None
        owed = parse_owed(data)
        if owed is None:
            self._log.warning("release file unreadable; every frame in the log is owed")
        else:
            self._next_seq = owed.next_seq
        return owed

    def _load(self, path: Path, released: Owed | None) -> list[Entry]:
        """The owed frames of one segment file; the file is deleted when it owes none."""
        try:
            base = int(path.stem)
            read = read_segment(path.read_bytes())
        except (ValueError, OSError) as exc:
            raise ConfigError(f"disk_buffer.path: cannot read {path.name}: {exc}") from None
        if read.torn:
            self._m_torn.inc()
            self._log.warning(
                "torn entry skipped",
                file=path.name,
                at_byte=read.valid_bytes,
                bytes_skipped=read.size - read.valid_bytes,
            )
        segment = _Segment(base, path, read.size)
        entries = []
        for entry in read.entries:
            self._next_seq = max(self._next_seq, entry.seq + 1)
            if released is None or released.holds(entry.seq):
                entries.append(entry)
                self._owed[entry.seq] = segment
                segment.owed += 1
        if segment.owed:
            self._segments[base] = segment
            self.used += segment.size
        else:
            path.unlink()
        return entries

    def ticket(self, seq: int) -> Ticket:
        """The ticket of a frame read back by `open()` (its replay settles it)."""
        return Ticket(seq, self._release)

    async def replay(self, entries: list[Entry], streams: Mapping[str, Replayer]) -> None:
        """Publish every frame `open()` read back, in log order, through its stream (before
        any stream connects)."""
        started, counts = time.monotonic(), dict.fromkeys(streams, 0)
        for entry in entries:
            await streams[entry.stream].replay(entry, self.ticket(entry.seq))
            counts[entry.stream] += 1
            self._m_replayed.inc()
        if entries:
            self._log.info(
                "disk buffer replayed",
                frames={s: n for s, n in counts.items() if n},
                seconds=round(time.monotonic() - started, 3),
            )

    async def append(self, stream: str, frame: Frame) -> Ticket:
        """Write `frame` (of `stream`) to the log; its ticket releases it. Waits while the log
        is full (backpressure) and while writing fails (retried)."""
        name = self._names.get(stream)
        if name is None:
            name = self._names[stream] = stream.encode()
        kind, payload = frame_payload(frame)
        size = OVERHEAD + len(name) + len(payload)
        if self._gate.locked() or not self._fits(size):
            async with self._gate:
                await self._wait_room(size)
        failures = 0
        while True:
            try:
                return self._write(name, frame.received_at, kind, payload, size)
            except OSError as exc:
                await self._write_failed(exc, failures)
                failures += 1

    def _fits(self, size: int) -> bool:
        # With nothing owed, a frame always fits: a frame larger than the log must not wait
        # forever.
        return self.used + size <= self._s.max_bytes or not self._owed

    async def _wait_room(self, size: int) -> None:
        if self._fits(size):
            return
        self._log.warning(
            "disk buffer full; reading paused", bytes=self.used, frames_owed=len(self._owed)
        )
        while not self._fits(size):
            self._room.clear()
            await self._room.wait()
        self._log.info("disk buffer has room again", bytes=self.used)

    def _write(self, name: bytes, received_at: int, kind: int, payload: bytes, size: int) -> Ticket:
        segment = self._active
        if segment is None or (segment.size and segment.size + size > self._s.segment_bytes):
            segment = self._roll()
        assert segment.fd is not None
        seq = self._next_seq
        try:
            written = os.writev(segment.fd, entry_parts(seq, name, received_at, kind, payload))
            if written != size:
                raise OSError(errno.EIO, f"short write: {written} of {size} bytes")
        except OSError:
            self._retire(segment)  # what it holds after its last whole entry is skipped later
            raise
        if self._always:
            self._fsync(segment.fd)
        self._next_seq = seq + 1
        segment.size += size
        segment.owed += 1
        self.used += size
        self._owed[seq] = segment
        self._unsynced = self._dirty = True
        return Ticket(seq, self._release)

    def _roll(self) -> _Segment:
        """Start a new segment file (the next seq is its name)."""
        if self._active is not None:
            self._retire(self._active)
        path = self._dir / f"{self._next_seq:020d}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        segment = _Segment(self._next_seq, path, fd=fd)
        self._segments[segment.base] = segment
        self._active = segment
        if self._always and self._dir_fd is not None:
            self._fsync(self._dir_fd)  # the new file's name survives a power loss too
        return segment

    def _retire(self, segment: _Segment) -> None:
        """Stop appending to `segment`: synced (unless fsync is never), closed, and deleted if
        it owes nothing."""
        if segment is self._active:
            self._active = None
        fd, segment.fd = segment.fd, None
        if fd is not None:
            try:
                if self._unsynced and self._s.fsync == "interval":
                    self._fsync(fd)
                    self._unsynced = False
            finally:
                os.close(fd)
        if segment.owed == 0:
            self._delete(segment)

    async def _write_failed(self, exc: OSError, failures: int) -> None:
        self._m_write_errors.inc()
        delay = WRITE_RETRY_DELAYS[min(failures, len(WRITE_RETRY_DELAYS) - 1)]
        if failures == 0 or delay == WRITE_RETRY_DELAYS[-1]:
            self._log.error(
                "disk buffer write failed; reading paused, retrying",
                path=str(self._dir),
                error=exc.strerror or str(exc),
                retry_in=delay,
            )
        await asyncio.sleep(delay)

    def _fsync(self, fd: int) -> None:
        try:
            os.fsync(fd)
        except OSError as exc:
            self._m_write_errors.inc()
            raise DiskBufferError(f"disk buffer: fsync failed in {self._dir}: {exc}") from exc

    def _release(self, seq: int) -> None:
        segment = self._owed.pop(seq, None)
        if segment is None:
            return
        self._dirty = True
        segment.owed -= 1
        if segment.owed == 0 and segment is not self._active:
            self._delete(segment)
        elif not self._owed:
            self._room.set()  # nothing owed: any frame fits (`_fits`)

    def _delete(self, segment: _Segment) -> None:
        if self._segments.pop(segment.base, None) is None:
            return
        self.used -= segment.size
        self._room.set()
        try:
            segment.path.unlink()
        except OSError as exc:
            self._log.warning(
                "cannot delete a released segment", file=segment.path.name, error=str(exc)
            )

    async def run(self) -> None:
        """Every `sync_interval`: fsync (fsync: interval) and write the release file."""
        while True:
            await asyncio.sleep(self._s.sync_interval)
            self.sync()

    def sync(self) -> None:
        active = self._active
        if self._unsynced and self._s.fsync == "interval" and active and active.fd is not None:
            self._fsync(active.fd)
        self._unsynced = False
        if self._dirty:
            self._write_released()

    def _write_released(self) -> None:
        """Which frames are owed now. Only ever behind the truth (a frame released after it was
        written is published again after a crash, never one missing): safe to lose."""
        data = owed_of(self._owed, self._next_seq).dumps()
        temporary = self._dir / (RELEASED + ".tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
                if self._s.fsync != "never":
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self._dir / RELEASED)
        except OSError as exc:
            self._m_write_errors.inc()
            self._log.warning("cannot write the release file", error=exc.strerror or str(exc))
            return
        self._dirty = False

    def close(self) -> None:
        """Sync, stop appending, unlock. Frames still owed stay for the next start."""
        if self._lock_fd is None:
            return
        try:
            if self._active is not None:
                self._retire(self._active)
            self._write_released()
        finally:
            self._log.info("disk buffer closed", frames_owed=len(self._owed), bytes=self.used)
            self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._dir_fd, self._lock_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._dir_fd = self._lock_fd = None


def check_streams(entries: list[Entry], configured: set[str], path: Path) -> None:
    """Every owed frame must have its stream configured: only its venue module can parse it,
    and dropping the frames would be a silent loss."""
    counts: dict[str, int] = {}
    for entry in entries:
        if entry.stream not in configured:
            counts[entry.stream] = counts.get(entry.stream, 0) + 1
    if counts:
        named = ", ".join(f"{stream!r} ({n} frames)" for stream, n in sorted(counts.items()))
        raise ConfigError(
            f"disk_buffer.path: {path} holds frames not yet delivered of streams that are not "
            f"configured: {named}. Configure them again (their frames are published first), or "
            "delete the directory to give those frames up"
        )
