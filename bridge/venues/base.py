"""What every venue module provides, and the control events it reports to the connection loop.

Venue modules are pure: no I/O and no clock. Time arrives as arguments (`now_ms`, `Frame`
stamps), so every behaviour is testable from the venues' documented frames alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from bridge.errors import RETRIABLE_REST_ERRORS, DeadLetterReason, ParseError, RestErrorKind
from bridge.records import SOURCE_STREAM, DeadLetter, Order, Position, Record
from bridge.records import build_dead_letter as build_record
from bridge.venues.fields import loads_exact


@dataclass(frozen=True, slots=True)
class Frame:
    """One inbound websocket message as received, stamped on arrival."""

    data: str | bytes
    received_at: int  # wall clock, epoch microseconds
    received_mono: float  # time.monotonic() seconds, for frame → ack latency


@dataclass(frozen=True, slots=True)
class Subscription:
    """A signed subscribe message and the id its acknowledgement will carry."""

    id: str
    message: str


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The venue confirmed the subscription `id`."""

    id: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """The venue refused a subscription or the session. `auth` marks a credentials problem."""

    detail: str
    auth: bool
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Control:
    """A frame that carries no fact and no failure (e.g. an unsubscribe ack): counted, logged."""

    detail: str


ControlEvent = Subscribed | Rejected | Control


@dataclass(slots=True)
class ParseResult:
    """Everything one frame produced. A frame yields records, control events, or both."""

    records: list[Record] = field(default_factory=list)
    events: list[ControlEvent] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RestCall:
    """One unsigned REST request of a snapshot; `kind` says which parser reads the answer."""

    kind: str
    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    carry: str = ""  # not sent: what the venue module passes from one page to the next


@dataclass(frozen=True, slots=True)
class SignedCall:
    """A `RestCall` ready to send: the path with its query string, and the auth headers."""

    target: str
    headers: dict[str, str]


@dataclass(slots=True)
class SnapshotPage:
    """What one REST answer produced: records, follow-up calls (next pages), or an error."""

    records: list[Record] = field(default_factory=list)
    more: list[RestCall] = field(default_factory=list)
    error: RestError | None = None


@dataclass(frozen=True, slots=True)
class RestError:
    """A REST answer that is not data; `kind` says what it means (bridge.errors.RestErrorKind)."""

    kind: RestErrorKind
    detail: str

    @property
    def retriable(self) -> bool:
        return self.kind in RETRIABLE_REST_ERRORS


def http_error(status: int, body: bytes, message_key: str) -> RestError | None:
    """The error of an HTTP answer whose status alone decides it, the same at every venue:
    401/403 credentials (auth), 429 slow down (rate_limited), 5xx server fault (retry).
    None for other statuses: the venue module reads those itself. `message_key` names the
    field of a JSON error body that explains it ("message" at Aquanow, "msg" at Satori)."""
    statuses: dict[int, RestErrorKind] = {401: "auth", 403: "auth", 429: "rate_limited"}
    kind = statuses.get(status)
    if kind is None and status >= 500:
        kind = "retry"
    return None if kind is None else RestError(kind, http_detail(status, body, message_key))


def http_detail(status: int, body: bytes, message_key: str) -> str:
    """`HTTP <status>: <the body's message>` (at most 200 characters of it)."""
    try:
        document = loads_exact(body)
    except ParseError:
        document = None
    if isinstance(document, dict):
        message = str(document.get(message_key, ""))
    else:
        message = body.decode("utf-8", "replace")
    return f"HTTP {status}: {message[:200]}".strip()


class Venue(Protocol):
    """A venue's wire protocol for one stream (one account connection)."""

    name: str
    stream: str
    # True when the venue acknowledges each subscription (then the connection waits for one
    # `Subscribed` per subscription id); False when it is silent on success.
    acknowledges_subscriptions: bool

    def build_subscriptions(self, now_ms: int) -> list[Subscription]:
        """Freshly signed subscribe messages for everything this stream is configured for."""
        ...

    def parse(self, frame: Frame) -> ParseResult:
        """Turn one frame into records and control events. Never raises for bad input: a frame
        that cannot be understood becomes a `DeadLetter` record with the reason."""
        ...

    def snapshot_calls(self, until_ms: int, since_ms: int | None) -> list[RestCall]:
        """The REST calls that rebuild this stream's state; finished orders updated between
        `since_ms` and `until_ms` (venue time) are fetched too (`since_ms` None: the venue's
        default lookback)."""
        ...

    def sign_call(self, call: RestCall, now_ms: int) -> SignedCall:
        """Freshly signed at send time (nonces and timestamps must be fresh)."""
        ...

    def parse_snapshot(self, call: RestCall, status: int, body: bytes, at: Frame) -> SnapshotPage:
        """One REST answer → records (source=snapshot), next pages, or an error. Never raises
        for bad input: malformed items become dead letters."""
        ...

    def reconcile_missing(
        self, orders: list[Order], positions: list[Position], at: Frame
    ) -> tuple[list[RestCall], list[Record]]:
        """Orders and positions last published as open that the snapshot no longer lists:
        calls that fetch their final state, and/or records stating it."""
        ...

    def snapshot_ready(self) -> bool:
        """True when the REST calls can be made as they must be (Aquanow: once the account
        they are scoped to is known, from the config, a push or a restored checkpoint)."""
        ...

    def relisting_calls(self) -> list[RestCall]:
        """The listings to read again before concluding that an order or position missing
        from the first reading has ended: paged lists shift when items end between two page
        reads, hiding live ones. Empty when the venue's lists cannot shift (one page)."""
        ...

    def restore(self, versions: Mapping[str, int], facts: Mapping[str, str]) -> None:
        """Seed what the venue module keeps across sessions from a restored checkpoint:
        monotonic counters (`balance:<coin>`, `fill:<pair>`) and `checkpoint_facts`."""
        ...

    def checkpoint_facts(self) -> dict[str, str]:
        """What this venue module needs to know again after a restart (kept in the
        checkpoint's meta entry)."""
        ...


class Nonces:
    """Strictly increasing millisecond values for nonces and signed timestamps: two requests
    in the same millisecond must not share one (venues refuse reused or outdated values)."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def next(self, now_ms: int) -> int:
        self._last = max(now_ms, self._last + 1)
        return self._last


def build_dead_letter(
    venue: str,
    stream: str,
    frame: Frame,
    reason: DeadLetterReason,
    detail: str,
    raw: bytes | None = None,
    source: str = SOURCE_STREAM,
) -> DeadLetter:
    """A dead-letter record for a frame (or one item of it, when `raw` is given)."""
    return build_record(
        venue=venue,
        stream=stream,
        received_at=frame.received_at,
        source=source,
        reason=reason,
        detail=detail,
        raw=raw if raw is not None else frame_bytes(frame),
    )


def frame_text(frame: Frame) -> str:
    """The frame as text, for a record's `raw`. Only called on frames that `loads_exact`
    accepted, so binary frames are valid in one of JSON's encodings."""
    data = frame.data
    return data if isinstance(data, str) else data.decode(json.detect_encoding(data))


def frame_bytes(frame: Frame) -> bytes:
    """The frame exactly as received, as bytes (text frames are UTF-8 on the wire). Never
    raises: a string holding a lone surrogate (which no websocket text frame can carry) keeps
    it as its three UTF-8-style bytes rather than losing it."""
    data = frame.data
    return data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
