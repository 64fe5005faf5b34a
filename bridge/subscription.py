"""Pure: when a session counts as subscribed, and when waiting — for the acks, or for any frame
at all — has gone on too long. No I/O and no clock of its own.

The connection loop asks `read_timeout(now)` before each read and reports what happened: a
frame (`on_frame`) or a read that timed out (`on_timeout`). The tracker answers with a decision:
"now subscribed", nothing, or a `ConnectionLost` naming the reconnect reason. Two handshakes
(venues.md): a venue that acknowledges each subscription (Satori, §2.3) is subscribed once every
id is acked within `subscribe_timeout`; a venue that acknowledges nothing (Aquanow, §1.3) is
subscribed at its first record, or when `ack_grace` passed without an error frame or a close.
"""

from __future__ import annotations

from collections.abc import Iterable

from bridge.errors import AuthRejected, ConnectionLost, ReconnectReason
from bridge.venues.base import ParseResult, Rejected, Subscribed


class SubscriptionTracker:
    """The handshake and watchdog state of one websocket session."""

    def __init__(
        self,
        ids: Iterable[str],
        *,
        acknowledged: bool,
        subscribe_timeout: float,
        ack_grace: float,
        silence_timeout: float,
        now: float,
    ) -> None:
        self._acknowledged = acknowledged
        self._pending = set(ids) if acknowledged else set()
        self._wait = subscribe_timeout if acknowledged else ack_grace
        self._deadline: float | None = now + self._wait  # None once subscribed
        self._silence = silence_timeout or None  # 0 disables the silence watchdog

    @property
    def subscribed(self) -> bool:
        return self._deadline is None

    def read_timeout(self, now: float) -> float | None:
        """How long the next read may wait for a frame; None: as long as it takes."""
        if self._deadline is None:
            return self._silence
        return max(self._deadline - now, 0.0)

    def on_timeout(self) -> bool:
        """No frame came within `read_timeout`. True: the session is now subscribed (a venue
        that acknowledges nothing and sent no error in time). Raises `ConnectionLost` when the
        acks did not come (`subscribe_timeout`) or the feed went silent (`silence`)."""
        if self._deadline is None:
            raise ConnectionLost("silence", f"no frame for {self._silence} s")
        if self._acknowledged:
            raise ConnectionLost(
                "subscribe_timeout", f"no ack for {sorted(self._pending)} in {self._wait} s"
            )
        self._deadline = None
        return True

    def on_frame(self, result: ParseResult) -> bool:
        """A frame arrived and was parsed. True when it completes the subscription (its last
        ack, or — for a venue that acknowledges nothing — its first record). Raises for a
        refusal: `AuthRejected` for credentials, else `subscribe_rejected` (a refused
        subscription) or `server_error` (an error frame about the session)."""
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
