"""The harness every venue simulator shares: a websocket server on loopback, subscriptions per
connection, an emitter that generates venue events at a chosen rate, and the ground truth.

A venue simulator subclasses `VenueSimulator` and implements `handle_request` (verify and
answer a client message, the venue's way) and `next_event` (the next state change as the
venue would push it). Everything the simulator sends is recorded in `sent`, so tests compare
what reached Kafka with exactly what the venue said.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import ssl as ssl_module
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bridge.backoff import TokenBucket


@dataclass(frozen=True, slots=True)
class Event:
    """One venue fact to push: `kind` names the push type, `payload` holds the ground-truth
    values (decimals as `Decimal`), `text` is the exact frame, `keys` are the subscription
    keys through which it is delivered."""

    kind: str
    payload: Any
    text: str
    keys: frozenset[str]


@dataclass(frozen=True, slots=True)
class Sent:
    """A frame as delivered to one connection."""

    connection: int
    kind: str
    payload: Any
    text: str
    key: str
    at: float = field(default_factory=time.time)


@dataclass(eq=False)
class Session:
    """One client connection and what it subscribed to."""

    id: int
    ws: ServerConnection
    subscriptions: set[str] = field(default_factory=set)
    stalled: bool = False


# A venue's outbound buffer per connection (websockets' write limit and SO_SNDBUF).
SEND_BUFFER_BYTES = 64 * 1024


class VenueSimulator:
    """Base class; see the module docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate: float = 10.0,
        count: int | None = None,
        rest_port: int = 0,
        rest_rate: float | None = None,
        emit_while_disconnected: bool = False,
        ssl: ssl_module.SSLContext | None = None,
        send_buffer_bytes: int = SEND_BUFFER_BYTES,
        slow_consumer_timeout: float | None = None,
        spread: bool = False,
    ) -> None:
        self.host = host
        # wss:// with this server context (the client must trust its CA).
        self.ssl = ssl
        # Each connection's outbound buffer is bounded, as at a venue: websockets' write buffer
        # and the kernel's socket send buffer (otherwise autotuned to megabytes on loopback, in
        # which pushes queue up far ahead of what the client has read, pongs behind them).
        self.send_buffer_bytes = send_buffer_bytes
        # A client that reads nothing for this long while a push waits for room is cut off
        # (the connection is dropped), as venues do; None: the push waits however long.
        self.slow_consumer_timeout = slow_consumer_timeout
        self.slow_consumers = 0
        self.port = port
        self.rest_port = rest_port
        self.rate = rate  # events per second while anyone is subscribed; 0 = as fast as possible
        # True: an event reaches the subscribed connections spread evenly over 1 / rate, as
        # independent accounts' events do; False: every connection at once (a burst).
        self.spread = spread
        self.count = count  # stop generating after this many events
        # True: the venue's state keeps changing while nobody is connected (gaps lose pushes,
        # only the REST snapshot can tell); False: events wait for a subscriber.
        self.emit_while_disconnected = emit_while_disconnected
        self.rest_requests = 0
        self.rest_rejected = 0  # REST calls refused (auth or rate limit)
        self.refusing = False  # fault: refuse websocket handshakes with HTTP 503
        self.refused = 0
        self.last_connected_at = 0.0  # wall clock of the last accepted websocket connection
        self._rest_bucket = TokenBucket(rest_rate, rest_rate) if rest_rate else None
        self._rest_runner: web.AppRunner | None = None
        self.sent: list[Sent] = []
        self.events: list[Event] = []  # every event generated, delivered or not
        self.auth_failures = 0
        self.subscriptions_accepted = 0
        self.connections_total = 0
        self.sessions: dict[int, Session] = {}
        self.finished = asyncio.Event()  # set once `count` events were generated
        self.subscribed = asyncio.Event()  # set while at least one session is subscribed
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._emitter: asyncio.Task[None] | None = None
        self._paused = False
        self._emitting = 0  # events being delivered right now (see `quiesce`)
        self._preloaded: deque[Event] = deque()
        # Fault: events generated (the venue's state changes) but never pushed, on a
        # connection that stays healthy. See `drop_next`.
        self.dropped: list[Event] = []
        self._drop = 0
        self._drop_kinds: frozenset[str] | None = None
        self._pause_after_drop = False
        # Fault: each push leaves this many seconds after the state changed (REST answers
        # show the change at once): a slow path between the venue's engine and its feed.
        self.push_delay = 0.0

    @property
    def url(self) -> str:
        return f"{'wss' if self.ssl else 'ws'}://{self.host}:{self.port}/"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            max_size=2**25,
            ping_interval=None,
            process_request=self._process_request,
            ssl=self.ssl,
            write_limit=self.send_buffer_bytes,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        app = web.Application()
        self.add_rest_routes(app)
        app.middlewares.append(self._count_rest)
        self._rest_runner = web.AppRunner(app, access_log=None)
        await self._rest_runner.setup()
        site = web.TCPSite(self._rest_runner, self.host, self.rest_port)
        await site.start()
        self.rest_port = self._rest_runner.addresses[0][1]
        self._emitter = asyncio.create_task(self._emit_forever())

    async def stop(self) -> None:
        if self._emitter is not None:
            self._emitter.cancel()
            await asyncio.gather(self._emitter, return_exceptions=True)
        for session in self.sessions.values():
            if session.stalled and session.ws.transport is not None:
                session.ws.transport.abort()  # a stalled session would never finish a close
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._rest_runner is not None:
            await self._rest_runner.cleanup()

    async def __aenter__(self) -> VenueSimulator:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # -- venue-specific parts -------------------------------------------------------------
    async def handle_request(self, session: Session, text: str) -> None:
        raise NotImplementedError

    def next_event(self) -> Event:
        raise NotImplementedError

    def add_rest_routes(self, app: web.Application) -> None:
        """The venue's REST endpoints (snapshot queries), each verifying signatures."""

    def rest_rate_limited(self) -> web.Response:
        """How the venue answers a caller over its REST rate limit."""
        return web.json_response({"message": "Too many requests"}, status=429)

    # -- controls used by tests, the demo and fault injection ---------------------------
    def preload(self, count: int) -> None:
        """Generate `count` events now, so that emitting them later costs only the sends
        (benchmarks measure the bridge, not the simulator's event generation)."""
        self._preloaded.extend(self.next_event() for _ in range(count))

    def pause(self, paused: bool = True) -> None:
        """Stop (or resume) generating events; connections stay open."""
        self._paused = paused

    async def quiesce(self) -> None:
        """Pause, and return once no event is being delivered: from then on `sent` is final
        (an event whose delivery was waiting for a full socket when `pause` was called still
        reaches its connections, and the bridge publishes it)."""
        self.pause()
        while self._emitting:
            await asyncio.sleep(0.01)

    def drop_next(
        self, count: int, kinds: frozenset[str] | None = None, then_pause: bool = False
    ) -> None:
        """Fault: the next `count` events (of `kinds`, default any) change the venue's state
        but are pushed to nobody, while every connection stays healthy; kept in `dropped`.
        `then_pause`: stop generating right after the last of them, so that no later push
        can repair what was dropped."""
        self._drop, self._drop_kinds, self._pause_after_drop = count, kinds, then_pause

    async def emit(self, event: Event) -> None:
        """Push one event now to every session subscribed to it (or drop it, see above)."""
        self._emitting += 1
        try:
            await self._emit(event)
        finally:
            self._emitting -= 1

    async def _emit(self, event: Event) -> None:
        self.events.append(event)
        if self._drop > 0 and (self._drop_kinds is None or event.kind in self._drop_kinds):
            self.dropped.append(event)
            self._drop -= 1
            self._paused = self._paused or (self._drop == 0 and self._pause_after_drop)
            return
        if self.push_delay:
            await asyncio.sleep(self.push_delay)
        sessions = list(self.sessions.values())
        gap = 1 / self.rate / len(sessions) if self.spread and self.rate > 0 and sessions else 0
        started = time.monotonic()
        for i, session in enumerate(sessions):
            if gap and (wait := started + i * gap - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if session.stalled:
                continue
            for key in sorted(session.subscriptions & event.keys):
                await self._deliver(session, event.kind, event.payload, event.text, key)

    async def send_raw(self, text: str | bytes, kind: str = "raw") -> None:
        """Send a frame as is to every subscribed session (e.g. a malformed one)."""
        for session in list(self.sessions.values()):
            if session.subscriptions:
                await self._deliver(session, kind, None, text, "*")

    def stall(self) -> None:
        """Hang every current connection: read nothing (pings go unanswered), send nothing,
        close nothing — as a frozen venue or a black-holed route would."""
        for session in self.sessions.values():
            session.stalled = True
            if session.ws.transport is not None:
                session.ws.transport.pause_reading()

    async def drop_connections(self) -> None:
        """Cut every connection without a close handshake, as a network failure would."""
        for session in list(self.sessions.values()):
            transport = session.ws.transport
            if transport is not None:
                transport.abort()

    def accept(self, session: Session, key: str) -> None:
        session.subscriptions.add(key)
        self.subscriptions_accepted += 1
        self.subscribed.set()

    async def reject(
        self, session: Session, frame: str, close: tuple[int, str] | None = None
    ) -> None:
        """Refuse a request: send the venue's error frame, then close if the venue would."""
        self.auth_failures += 1
        await session.ws.send(frame)
        if close is not None:
            await session.ws.close(*close)

    # -- internals ----------------------------------------------------------------------
    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if not self.refusing:
            return None
        self.refused += 1
        return Response(503, "Service Unavailable", Headers(), b"refused by fault injection\n")

    @web.middleware
    async def _count_rest(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.rest_requests += 1
        if self._rest_bucket is not None and self._rest_bucket.reserve(time.monotonic()) > 0:
            self.rest_rejected += 1
            return self.rest_rate_limited()
        response: web.StreamResponse = await handler(request)
        return response

    async def _handle(self, ws: ServerConnection) -> None:
        session = Session(next(self._ids), ws)
        sock = ws.transport.get_extra_info("socket") if ws.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)
        self.last_connected_at = time.time()
        self.sessions[session.id] = session
        self.connections_total += 1
        try:
            async for message in ws:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                await self.handle_request(session, text)
        except ConnectionClosed:
            pass
        finally:
            del self.sessions[session.id]
            if not any(s.subscriptions for s in self.sessions.values()):
                self.subscribed.clear()

    async def _deliver(
        self, session: Session, kind: str, payload: Any, text: str | bytes, key: str
    ) -> None:
        try:
            async with asyncio.timeout(self.slow_consumer_timeout):
                await session.ws.send(text)
        except ConnectionClosed:
            return
        except TimeoutError:
            self.slow_consumers += 1
            if session.ws.transport is not None:
                session.ws.transport.abort()  # its buffer is full: no room for a close frame
            return
        shown = text if isinstance(text, str) else text.decode("utf-8", "replace")
        self.sent.append(Sent(session.id, kind, payload, shown, key))

    async def _emit_forever(self) -> None:
        interval = 1 / self.rate if self.rate > 0 else 0.0
        next_at = time.monotonic()
        while self.count is None or len(self.events) < self.count:
            idle = not self.subscribed.is_set() and not self.emit_while_disconnected
            if self._paused or idle:
                await self.subscribed.wait() if not self._paused else await asyncio.sleep(0.05)
                next_at = time.monotonic()
                continue
            await self.emit(self._preloaded.popleft() if self._preloaded else self.next_event())
            if interval:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif len(self.events) % 100 == 0:
                await asyncio.sleep(0)
        self.finished.set()
