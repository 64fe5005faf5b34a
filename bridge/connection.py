"""The one websocket loop: connect, sign and subscribe, receive, watch, reconnect forever.

Each frame is stamped on arrival, parsed by the venue module, and its records are handed to
the sink before the next frame is read, so sink backpressure slows the read and nothing is
dropped. Stopping closes the socket instead of cancelling the loop: a record that is waiting
for buffer room is still handed over, and the loop ends after the last received frame.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import functools
import random
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from bridge.backoff import Backoff
from bridge.diskbuffer import DiskBuffer
from bridge.disklog import Entry, Ticket
from bridge.errors import AuthRejected, ConnectionLost, ReconnectReason, SinkError
from bridge.logs import get_logger
from bridge.metrics import Metrics
from bridge.sections import ReconnectSettings, StreamBase
from bridge.stream import StreamState
from bridge.subscription import SubscriptionTracker
from bridge.venues.base import (
    Control,
    Frame,
    ParseResult,
    Subscription,
    Venue,
    build_dead_letter,
)

# Close codes that mean the venue refused our credentials (RFC 6455 policy violation, and the
# 4001/4003 "unauthorized/forbidden" codes many venues use).
AUTH_CLOSE_CODES: Final = frozenset({1008, 4001, 4003})

# Frames above `max_frame_bytes` become dead letters; only frames above this multiple of it
# (or 16 MiB) are refused by the websocket layer itself, closing the connection with 1009.
HARD_FRAME_FACTOR: Final = 16
HARD_FRAME_FLOOR: Final = 16 * 1024 * 1024

# asyncio gives every TLS connection a read buffer of 256 KiB (`SSLProtocol.max_size`),
# allocated up front: ~300 KiB per idle wss:// stream against ~21 KiB for ws://. It holds the
# ciphertext of one socket read; OpenSSL decrypts once a whole record (≤ 16 KiB) is in, so a
# smaller buffer only means more reads for large frames: 4 KiB takes a venue push (~1 KiB) in
# one and saves 12 KiB per stream against 16 KiB (tests/bench: fan-out over TLS).
TLS_READ_BUFFER: Final = 4 * 1024

# The reconnect jitter's source for every stream: a `random.Random` each held 2.5 KiB of
# Mersenne Twister state per stream, for numbers nobody needs to be independent.
_JITTER: Final = random.Random()

# Longest stretch (seconds) one stream processes frames without giving the loop a turn.
READ_SLICE: Final = 0.005

StartSnapshot = Callable[[], Coroutine[Any, Any, None]]
OnSubscribed = Callable[[StreamState], Coroutine[Any, Any, None]]


@functools.cache
def client_tls_context() -> ssl.SSLContext:
    """One TLS context for every wss:// stream. Without it, asyncio makes a default context per
    connection, each with its own copy of the system's CA store: ~800 KiB per stream
    (tests/bench, fan-out). Created at the first wss:// connection, never at import."""
    return ssl.create_default_context()


def limit_tls_read_buffers(size: int = TLS_READ_BUFFER) -> None:
    """Make asyncio's per-connection TLS read buffer `size` bytes (process-wide; affects the
    connections opened afterwards). asyncio has no per-connection option for it."""
    asyncio.sslproto.SSLProtocol.max_size = size


class StreamConnection:
    """Runs one configured stream until `stop()`."""

    def __init__(
        self,
        settings: StreamBase,
        venue: Venue,
        state: StreamState,
        metrics: Metrics,
        reconnect: ReconnectSettings,
        snapshot: StartSnapshot | None = None,
        rng: random.Random | None = None,
        on_subscribed: OnSubscribed | None = None,
        disk: DiskBuffer | None = None,
    ) -> None:
        self.settings = settings
        self._disk = disk  # each frame is appended before it is parsed (bridge/diskbuffer.py)
        self.venue = venue
        self.state = state
        self._snapshot = snapshot
        self._on_subscribed = on_subscribed  # the gap marker (bridge/control.py)
        self._last_frame_at: int | None = None  # wall clock (µs) of this session's last frame
        self._snapshot_task: asyncio.Task[None] | None = None
        self._backoff = Backoff(reconnect, rng or _JITTER)
        self._stopping = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._slice_started = 0.0  # since when frames are handed out without a loop turn
        self._log = get_logger(stream=settings.name, venue=venue.name)
        labels = (settings.name, venue.name)
        self._m_connected = metrics.ws_connected.labels(*labels)
        self._m_subscribed = metrics.ws_subscribed.labels(*labels)
        self._m_sessions = metrics.ws_sessions.labels(*labels)
        self._m_messages = metrics.ws_messages.labels(*labels)
        self._m_last = metrics.ws_last_message.labels(*labels)
        self._m_control = metrics.control_frames.labels(*labels)
        self._m_auth = metrics.auth_failures.labels(*labels)
        self._m_reconnects = metrics.ws_reconnects
        self._labels = labels
        self._m_connected.set(0)
        self._m_subscribed.set(0)

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._session()
            except ConnectionLost as exc:
                await self._lost(exc.reason, exc.detail, auth=isinstance(exc, AuthRejected))
            except ConnectionClosed as exc:
                await self._lost(*_classify_close(exc))
            except InvalidStatus as exc:
                status = exc.response.status_code
                auth = status in (401, 403)
                reason: ReconnectReason = "auth_rejected" if auth else "server_error"
                await self._lost(reason, f"handshake refused with HTTP {status}", auth=auth)
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                await self._lost("network", f"{type(exc).__name__}: {exc}")
            except SinkError:
                raise  # delivery failed for good: the process stops (app: exit 1)
            except Exception as exc:
                # A bug. It ends this stream's session, never the process and its other streams.
                self._log.error("stream session crashed", error=repr(exc), exc_info=exc)
                await self._lost("internal_error", f"{type(exc).__name__}: {exc}")
        self._log.info(
            "stream stopped",
            frames_received=self.state.frames_received,
            control_frames=self.state.control_frames,
        )

    async def stop(self) -> None:
        """Stop reading: close the socket; `run` returns after the frames already received."""
        self._stopping.set()
        if self._ws is not None:
            await self._ws.close(1001, "bridge shutting down")

    async def _session(self) -> None:
        s = self.settings
        self._log.info("connecting", url=s.url)
        tls: dict[str, Any] = {"ssl": client_tls_context()} if s.url.startswith("wss://") else {}
        async with websockets.connect(
            s.url,
            **tls,
            ping_interval=None,  # our own keepalive: see _next_frame and bridge.subscription
            compression="deflate" if s.compression else None,
            max_size=max(s.max_frame_bytes * HARD_FRAME_FACTOR, HARD_FRAME_FLOOR),
            open_timeout=s.subscribe_timeout,
            close_timeout=5,
        ) as ws:
            self._ws = ws
            try:
                if self._stopping.is_set():
                    return
                self._m_connected.set(1)
                self.state.session_started(reconciles=self._snapshot is not None)
                self._backoff.connected(time.monotonic())
                self._log.info("connected")
                await self._read(ws, self.venue.build_subscriptions(int(time.time() * 1000)))
            finally:
                self._ws = None
                await self._cancel_snapshot()
                if self.state.subscribed:
                    # Facts may be missed from the last one this session received.
                    self.state.gap_start = self._last_frame_at or self.state.gap_end
                self._set_subscribed(False)
                self._m_connected.set(0)

    async def _read(self, ws: ClientConnection, subscriptions: list[Subscription]) -> None:
        """Subscribe, then process frames until the connection ends."""
        for sub in subscriptions:
            await ws.send(sub.message)
        s = self.settings
        tracker = SubscriptionTracker(
            (sub.id for sub in subscriptions),
            acknowledged=self.venue.acknowledges_subscriptions,
            subscribe_timeout=s.subscribe_timeout,
            ack_grace=s.ack_grace,
            silence_timeout=s.silence_timeout,
            now=time.monotonic(),
            ping_interval=s.ping_interval,
            ping_timeout=s.ping_timeout,
        )
        state, disk, name = self.state, self._disk, self.settings.name
        while (data := await self._next_frame(ws, tracker)) is not None:
            frame = Frame(data, time.time_ns() // 1000, time.monotonic())
            ticket = None if disk is None else await disk.append(name, frame)
            self._last_frame_at = frame.received_at
            state.frames_received += 1
            self._m_messages.inc()
            self._m_last.set(frame.received_at / 1e6)
            result = self._parse(frame)
            if not result.records:
                state.control_frames += 1
                self._m_control.inc()
            for event in result.events:
                if isinstance(event, Control):
                    self._log.debug("control frame", detail=event.detail)
            completed = tracker.on_frame(result)
            for record in result.records:
                await state.publish(record, frame.received_mono, ticket)
            if ticket is not None:
                ticket.seal()
            if completed:
                await self._subscribed()

    async def replay(self, entry: Entry, ticket: Ticket) -> None:
        """Publish a frame a previous run left in the disk buffer, as it was parsed then
        (the same bytes and receive time make the same records). Before the stream connects."""
        result = self._parse(entry.frame(time.monotonic()))
        for record in result.records:
            await self.state.publish(record, None, ticket)
        ticket.seal()

    async def _next_frame(
        self, ws: ClientConnection, tracker: SubscriptionTracker
    ) -> str | bytes | None:
        """The next frame (None: closed while stopping), pinging on schedule meanwhile. Only
        the time spent here, waiting to read, counts against the venue (bridge.subscription)."""
        if time.monotonic() - self._slice_started > READ_SLICE:
            # Frames already received are handed out without suspending: let pings, acks,
            # other streams and /metrics run before going on (tests/bench: loop lag).
            await asyncio.sleep(0)
            self._slice_started = time.monotonic()
        while True:
            if tracker.ping_due(time.monotonic()):
                ping = tracker.on_ping(time.monotonic())
                pong = asyncio.ensure_future(await ws.ping())
                pong.add_done_callback(functools.partial(_pong, tracker, ping))
            started = time.monotonic()
            if message_waiting(ws):
                data = await ws.recv()  # returns at once: no deadline to arm and cancel
                tracker.on_read(started, time.monotonic())
                return data
            try:
                async with asyncio.timeout(tracker.read_timeout(started)):
                    data = await ws.recv()
            except TimeoutError:
                now = time.monotonic()
                tracker.on_read(started, now)
                try:
                    if tracker.on_timeout(now):  # raises ConnectionLost unless subscribed
                        await self._subscribed()
                except ConnectionLost as lost:
                    if lost.reason == "watchdog":
                        ws.transport.abort()  # no close handshake with a peer that is gone
                    raise
                continue
            except ConnectionClosed:
                if self._stopping.is_set():
                    return None
                raise
            tracker.on_read(started, time.monotonic())
            return data

    def _parse(self, frame: Frame) -> ParseResult:
        limit = self.settings.max_frame_bytes
        data = frame.data
        # A text frame's UTF-8 size is at most 4 bytes per character: encode only when needed.
        if len(data) > limit or (isinstance(data, str) and len(data) * 4 > limit):
            size = len(data) if isinstance(data, bytes) else len(data.encode())
            if size > limit:
                detail = f"frame of {size} bytes exceeds max_frame_bytes {limit}"
                return ParseResult(
                    records=[
                        build_dead_letter(
                            self.venue.name, self.settings.name, frame, "oversized_frame", detail
                        )
                    ]
                )
        try:
            return self.venue.parse(frame)
        except Exception as exc:
            # A bug in the venue module: the frame is kept (dead letter), the session goes on.
            self._log.error("parser crashed on a frame", error=repr(exc), exc_info=exc)
            detail = f"the bridge failed on this frame: {type(exc).__name__}: {exc}"[:500]
            dead = build_dead_letter(
                self.venue.name, self.settings.name, frame, "internal_error", detail
            )
            return ParseResult(records=[dead])

    async def _subscribed(self) -> None:
        self._set_subscribed(True)
        self._m_sessions.inc()
        self._last_frame_at = None
        self.state.gap_end = time.time_ns() // 1000
        self.state.subscribed_mono = time.monotonic()
        self._log.info("subscribed")
        if self._on_subscribed is not None:
            await self._on_subscribed(self.state)
        if self._snapshot is not None:
            # Concurrent with reading: pings, pushes and backpressure go on meanwhile.
            self._snapshot_task = asyncio.create_task(self._snapshot(), name="snapshot")

    async def _cancel_snapshot(self) -> None:
        task, self._snapshot_task = self._snapshot_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        elif task is not None and not task.cancelled() and task.exception() is not None:
            self._log.error("snapshot crashed", error=repr(task.exception()))

    def _set_subscribed(self, value: bool) -> None:
        self._m_subscribed.set(1 if value else 0)
        self.state.subscribed = value

    async def _lost(self, reason: ReconnectReason, detail: str, auth: bool = False) -> None:
        if self._stopping.is_set():
            return
        self._m_reconnects.labels(*self._labels, reason).inc()
        if auth:
            self._m_auth.inc()
        delay = self._backoff.next_delay(time.monotonic(), auth=auth)
        log = self._log.error if auth else self._log.warning
        log("connection lost", reason=reason, detail=detail, retry_in=round(delay, 3))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)


def message_waiting(ws: ClientConnection) -> bool:
    """websockets already holds a whole message, so `recv()` returns it without waiting. A
    stream behind the venue then reads without a read deadline: arming and cancelling
    `asyncio.timeout` for every frame was ~6 % of a record's CPU at full rate (tests/bench).
    Reads websockets' frame queue (13.0-17.x); anything else: False, the deadline is armed."""
    frames = getattr(getattr(ws, "recv_messages", None), "frames", None)
    queue: Any = getattr(frames, "queue", None)
    # The first message is whole once any of its frames is final (most often the first).
    return queue is not None and any(getattr(frame, "fin", False) is True for frame in queue)


def _pong(tracker: SubscriptionTracker, ping: int, pong: asyncio.Future[float]) -> None:
    if not pong.cancelled() and pong.exception() is None:
        tracker.on_pong(ping)


def _classify_close(exc: ConnectionClosed) -> tuple[ReconnectReason, str, bool]:
    """(reason label, detail, is auth) for a closed connection."""
    close = exc.rcvd or exc.sent
    code = close.code if close else 1006
    detail = f"closed with code {code}" + (f" ({close.reason})" if close and close.reason else "")
    if exc.rcvd and code in AUTH_CLOSE_CODES:
        return "auth_rejected", detail, True
    if code == 1006:
        return "network", detail, False
    return "close", detail, False
