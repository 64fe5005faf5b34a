"""The handshake and watchdog decisions (bridge.subscription), without a socket or a clock."""

from __future__ import annotations

import pytest

from bridge.errors import AuthRejected, ConnectionLost
from bridge.subscription import SubscriptionTracker
from bridge.venues.base import Control, ParseResult, Rejected, Subscribed
from tests import records as make

pytestmark = pytest.mark.unit

NOTHING = ParseResult()


def tracker(acknowledged: bool, silence: float = 0.0) -> SubscriptionTracker:
    return SubscriptionTracker(
        ["a", "b"],
        acknowledged=acknowledged,
        subscribe_timeout=10.0,
        ack_grace=2.0,
        silence_timeout=silence,
        now=100.0,
    )


def events(*items: Subscribed | Rejected | Control) -> ParseResult:
    return ParseResult(events=list(items))


def test_acked_venue_waits_for_every_id_then_reads_without_deadline() -> None:
    t = tracker(acknowledged=True)
    assert t.read_timeout(103.0) == 7.0  # the subscribe deadline counts from the send
    assert t.on_frame(events(Subscribed("a"))) is False
    assert t.on_frame(events(Control("noise"))) is False
    assert t.on_frame(events(Subscribed("b"))) is True
    assert t.subscribed
    assert t.read_timeout(200.0) is None  # no silence watchdog configured
    assert t.on_frame(events(Subscribed("b"))) is False  # completes only once


def test_acked_venue_times_out_naming_the_missing_ids() -> None:
    t = tracker(acknowledged=True)
    t.on_frame(events(Subscribed("a")))
    assert t.read_timeout(111.0) == 0.0
    with pytest.raises(ConnectionLost) as lost:
        t.on_timeout()
    assert (lost.value.reason, lost.value.detail) == (
        "subscribe_timeout",
        "no ack for ['b'] in 10.0 s",
    )


def test_records_do_not_replace_acks() -> None:
    t = tracker(acknowledged=True)
    pushed = ParseResult(records=[make.balance()])
    assert t.on_frame(pushed) is False
    assert not t.subscribed


def test_silent_venue_is_subscribed_at_its_first_record() -> None:
    t = tracker(acknowledged=False)
    assert t.read_timeout(100.5) == 1.5  # ack_grace
    assert t.on_frame(events(Control("pong"))) is False
    assert t.on_frame(ParseResult(records=[make.balance()])) is True


def test_silent_venue_is_subscribed_when_the_grace_passes_quietly() -> None:
    t = tracker(acknowledged=False)
    assert t.on_timeout() is True
    assert t.subscribed


def test_silence_watchdog_only_after_subscribing() -> None:
    t = tracker(acknowledged=False, silence=30.0)
    assert t.read_timeout(100.0) == 2.0  # the grace, not the silence timeout
    t.on_timeout()
    assert t.read_timeout(500.0) == 30.0
    with pytest.raises(ConnectionLost) as lost:
        t.on_timeout()
    assert lost.value.reason == "silence"


@pytest.mark.parametrize(
    ("rejected", "error", "reason"),
    [
        (Rejected("bad signature", auth=True, id="a"), AuthRejected, "auth_rejected"),
        (Rejected("pair unknown", auth=False, id="a"), ConnectionLost, "subscribe_rejected"),
        (Rejected("internal error", auth=False), ConnectionLost, "server_error"),
    ],
)
def test_refusals_end_the_session_with_their_reason(
    rejected: Rejected, error: type[ConnectionLost], reason: str
) -> None:
    subscribed = tracker(acknowledged=False)
    subscribed.on_timeout()
    for t in (tracker(acknowledged=True), subscribed):  # while subscribing, and later
        with pytest.raises(error) as lost:
            t.on_frame(events(rejected))
        assert lost.value.reason == reason
