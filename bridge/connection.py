"""The one websocket loop: connect, sign and subscribe, receive, watch, reconnect forever.

Each frame is stamped on arrival, parsed by the venue module, and its records are handed to
the sink before the next frame is read, so sink backpressure slows the read and nothing is
dropped. Stopping closes the socket instead of cancelling the loop: a record that is waiting
for buffer room is still handed over, and the loop ends after the last received frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from bridge.backoff import Backoff
from bridge.errors import AuthRejected, ConnectionLost, ReconnectReason
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
KEEPALIVE_TIMEOUT_CODE: Final = 1011

# Frames above `max_frame_bytes` become dead letters; only frames above this multiple of it
# (or 16 MiB) are refused by the websocket layer itself, closing the connection with 1009.
HARD_FRAME_FACTOR: Final = 16
HARD_FRAME_FLOOR: Final = 16 * 1024 * 1024

StartSnapshot = Callable[[], Coroutine[Any, Any, None]]
OnSubscribed = Callable[[StreamState], Coroutine[Any, Any, None]]


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
    ) -> None:
        self.settings = settings
        self.venue = venue
        self.state = state
        self._snapshot = snapshot
        self._on_subscribed = on_subscribed  # the gap marker (bridge/control.py)
        self._last_frame_at: int | None = None  # wall clock (µs) of this session's last frame
        self._snapshot_task: asyncio.Task[None] | None = None
        self._backoff = Backoff(reconnect, rng or random.Random())
        self._stopping = asyncio.Event()
        self._ws: ClientConnection | None = None
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
        async with websockets.connect(
            s.url,
            ping_interval=s.ping_interval,
            ping_timeout=s.ping_timeout,
            max_size=max(s.max_frame_bytes * HARD_FRAME_FACTOR, HARD_FRAME_FLOOR),
            open_timeout=s.subscribe_timeout,
            close_timeout=5,
        ) as ws:
            self._ws = ws
            try:
                if self._stopping.is_set():
                    return
                self._m_connected.set(1)
                self.state.session_started()
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
        )
        state = self.state
        while True:
            try:
                async with asyncio.timeout(tracker.read_timeout(time.monotonic())):
                    data = await ws.recv()
            except TimeoutError:
                if tracker.on_timeout():  # raises ConnectionLost unless now subscribed
                    await self._subscribed()
                continue
            except ConnectionClosed:
                if self._stopping.is_set():
                    return
                raise
            frame = Frame(data, time.time_ns() // 1000, time.monotonic())
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
                await state.publish(record, frame.received_mono)
            if completed:
                await self._subscribed()

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
        return self.venue.parse(frame)

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


def _classify_close(exc: ConnectionClosed) -> tuple[ReconnectReason, str, bool]:
    """(reason label, detail, is auth) for a closed connection."""
    close = exc.rcvd or exc.sent
    code = close.code if close else 1006
    detail = f"closed with code {code}" + (f" ({close.reason})" if close and close.reason else "")
    if exc.rcvd and code in AUTH_CLOSE_CODES:
        return "auth_rejected", detail, True
    if exc.sent and exc.sent.code == KEEPALIVE_TIMEOUT_CODE:
        return "watchdog", detail, False
    if code == 1006:
        return "network", detail, False
    return "close", detail, False
