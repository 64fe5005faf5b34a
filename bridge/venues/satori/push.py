"""Satori websocket frames (venues.md §2.3, §2.4): subscription acks, error frames, pushes."""

from __future__ import annotations

from typing import Final

from bridge.errors import ParseError
from bridge.records import SOURCE_STREAM
from bridge.venues.base import (
    Control,
    Frame,
    ParseResult,
    Rejected,
    Subscribed,
    build_dead_letter,
)
from bridge.venues.fields import Fields
from bridge.venues.satori import NAME, SCOPE
from bridge.venues.satori.items import Build, SatoriItems

# Words in a refusal that mark a credentials problem rather than a request we got wrong. Whole
# words of the venue's messages: a bare "key" would class any refusal naming a key as auth.
_AUTH_WORDS: Final = (
    "sign",
    "auth",
    "apikey",
    "api key",
    "unauthor",
    "expired",
    "timestamp",
)


def parse_frame(items: SatoriItems, frame: Frame) -> ParseResult:
    """One frame → records and control events; never raises: what cannot be read becomes a
    dead letter."""
    try:
        return _dispatch(items, Fields(items.json.loads(frame.data), "frame"), frame)
    except ParseError as exc:
        dead = build_dead_letter(NAME, items.stream, frame, exc.reason, exc.detail)
        return ParseResult(records=[dead])


def _dispatch(items: SatoriItems, envelope: Fields, frame: Frame) -> ParseResult:
    event = envelope.opt_str("event")
    success = envelope.opt_bool("success")
    if event is not None and event.endswith("_res"):
        return ParseResult(events=[_ack(envelope, event.removesuffix("_res"), success)])
    if success is False:
        # An error frame (shape undocumented, §2.8.2): fail the session, never ignore it.
        detail = envelope.opt_str("msg") or envelope.opt_str("message") or "success:false"
        return ParseResult(events=[Rejected(detail=detail, auth=is_auth(detail))])
    pushes: dict[str, tuple[Build, bool]] = {
        "api_account": (items.balance, False),
        "api_entrust": (items.entrust, False),
        "api_position": (items.position, False),
        "api_trade": (items.trade, True),  # an array of prints (§2.4.4)
    }
    if event not in pushes:
        if event is None:
            raise ParseError("missing_field", "frame.event is required")
        raise ParseError("unknown_event", f"frame.event {event!r} is not a known push")
    build, many = pushes[event]
    records = items.items(envelope.obj.get("data"), frame, SOURCE_STREAM, event, build, many)
    if not records:  # e.g. an empty trade array: nothing to publish, but counted
        return ParseResult(events=[Control(f"{event} push with no items")])
    return ParseResult(records=records)


def _ack(envelope: Fields, event: str, success: bool | None) -> Subscribed | Rejected:
    scope = envelope.opt_str(SCOPE.get(event, "pair")) or ""
    ack_id = f"{event}:{scope}"
    if success:
        return Subscribed(ack_id)
    detail = f"{ack_id} refused: {envelope.opt_str('msg') or 'no message'}"
    return Rejected(detail=detail, auth=is_auth(detail), id=ack_id)


def is_auth(detail: str) -> bool:
    lowered = detail.lower()
    return any(word in lowered for word in _AUTH_WORDS)
