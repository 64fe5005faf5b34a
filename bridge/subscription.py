"""Pure: when a session counts as subscribed, and when waiting — for the acks, for any frame at
all, or for a pong — has gone on too long. No I/O and no clock of its own.

The connection loop asks `read_timeout(now)` before each read, reports the time it spent
waiting for a frame (`on_read`), and reports what happened: a frame (`on_frame`) or a read that
timed out (`on_timeout`). The tracker answers with a decision: "now subscribed", nothing, or a
`ConnectionLost` naming the reconnect reason. Two handshakes (venues.md): a venue that
acknowledges each subscription (Satori, §2.3) is subscribed once every id is acked within
`subscribe_timeout`; a venue that acknowledges nothing (Aquanow, §1.3) is subscribed at its
first record, or when `ack_grace` passed without an error frame or a close.

Keepalive tells "the peer is dead" from "we are busy". The loop sends a ping every
`ping_interval` (`ping_due`, `on_ping`) and reports its pong (`on_pong`). Any frame proves the
peer alive too. The pong deadline (`ping_timeout`) and the silence watchdog count only the time
the loop spent *waiting to read*: while it is not reading (its records wait for buffer room in
the sink), frames and pongs queue up unread in the socket behind each other, so their absence
says nothing about the venue. websockets' own keepalive cannot tell the two apart: it closed
healthy connections during a broker outage (issue 12), discarding what the venue had pushed.
"""

from __future__ import annotations

from collections.abc import Iterable

from bridge.errors import AuthRejected, ConnectionLost, ReconnectReason
from bridge.venues.base import ParseResult, Rejected, Subscribed


class SubscriptionTracker:
    """The handshake, keepalive and watchdog state of one websocket session."""

    def __init__(
        self,
        ids: Iterable[str],
        *,
        acknowledged: bool,
        subscribe_timeout: float,
        ack_grace: float,
        silence_timeout: float,
        now: float,
        ping_interval: float | None = None,
        ping_timeout: float = 20.0,
    ) -> None:
        self._acknowledged = acknowledged
        self._pending = set(ids) if acknowledged else set()
        self._wait = subscribe_timeout if acknowledged else ack_grace
        self._deadline: float | None = now + self._wait  # None once subscribed
        self._silence = silence_timeout or None  # 0 disables the silence watchdog
        self._quiet = 0.0  # seconds spent reading since the last frame
        self._ping_interval = ping_interval  # None: no keepalive
        self._ping_timeout = ping_timeout
        self._next_ping = now + (ping_interval or 0.0)
        self._ping: int | None = None  # the ping awaiting its pong (or any frame)
        self._ping_at = 0.0
        self._unanswered = 0.0  # seconds spent reading since that ping
        self._pings = 0

    @property
    def subscribed(self) -> bool:
        return self._deadline is None

    def read_timeout(self, now: float) -> float | None:
        """How long the next read may wait for a frame; None: as long as it takes."""
        waits: list[float] = []
        if self._deadline is not None:
            waits.append(self._deadline - now)
        elif self._silence is not None:
            waits.append(self._silence - self._quiet)
        if self._ping is not None:
            waits.append(self._ping_timeout - self._unanswered)
        elif self._ping_interval is not None:
            waits.append(self._next_ping - now)
        return max(min(waits), 0.0) if waits else None

    def on_read(self, started: float, ended: float) -> None:
        """The loop waited for a frame from `started` to `ended` (it got one, or timed out)."""
        self._quiet += ended - started
        if self._ping is not None:
            self._unanswered += max(ended - max(started, self._ping_at), 0.0)

    # -- keepalive -----------------------------------------------------------------------------
    def ping_due(self, now: float) -> bool:
        return self._ping_interval is not None and self._ping is None and now >= self._next_ping

    def on_ping(self, now: float) -> int:
        """A ping went out; returns its number, for `on_pong`."""
        self._pings += 1
        self._ping, self._ping_at, self._unanswered = self._pings, now, 0.0
        self._next_ping = now + (self._ping_interval or 0.0)
        return self._pings

    def on_pong(self, ping: int) -> None:
        if ping == self._ping:
            self._ping = None

    # -- decisions -----------------------------------------------------------------------------
    def on_timeout(self, now: float) -> bool:
        """The read ended without a frame. True: the session is now subscribed (a venue that
        acknowledges nothing and sent no error in time). Raises `ConnectionLost` when the acks
        did not come (`subscribe_timeout`), the feed went silent (`silence`) or a ping got
        neither a pong nor a frame (`watchdog`) within the reading time allowed."""
        if self._ping is not None and self._unanswered >= self._ping_timeout:
            raise ConnectionLost(
                "watchdog", f"no pong and no frame for {self._ping_timeout} s of reading"
            )
        if self._deadline is not None:
            if now < self._deadline:
                return False  # woken for a ping
            if self._acknowledged:
                raise ConnectionLost(
                    "subscribe_timeout", f"no ack for {sorted(self._pending)} in {self._wait} s"
                )
            self._deadline, self._quiet = None, 0.0
            return True
        if self._silence is not None and self._quiet >= self._silence:
            raise ConnectionLost("silence", f"no frame for {self._silence} s")
        return False

    def on_frame(self, result: ParseResult) -> bool:
        """A frame arrived and was parsed: the peer is alive. True when it completes the
        subscription (its last ack, or — for a venue that acknowledges nothing — its first
        record). Raises for a refusal: `AuthRejected` for credentials, else
        `subscribe_rejected` (a refused subscription) or `server_error` (an error frame about
        the session)."""
        self._quiet, self._ping = 0.0, None
        for event in result.events:
            if isinstance(event, Subscribed):
                self._pending.discard(event.id)
            elif isinstance(event, Rejected):
                if event.auth:
                    raise AuthRejected(event.detail)
                reason: ReconnectReason = "subscribe_rejected" if event.id else "server_error"
                raise ConnectionLost(reason, event.detail)
        if self._deadline is None or self._pending:
            return False
        if self._acknowledged or result.records:
            self._deadline = None
            return True
        return False
