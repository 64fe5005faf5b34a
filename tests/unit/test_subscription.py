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
        t.on_timeout(200.0)
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
    assert t.on_timeout(102.0) is True
    assert t.subscribed


def test_silence_watchdog_only_after_subscribing() -> None:
    t = tracker(acknowledged=False, silence=30.0)
    assert t.read_timeout(100.0) == 2.0  # the grace, not the silence timeout
    t.on_timeout(102.0)
    assert t.read_timeout(500.0) == 30.0
    t.on_read(102.0, 132.0)
    with pytest.raises(ConnectionLost) as lost:
        t.on_timeout(132.0)
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
    subscribed.on_timeout(102.0)
    for t in (tracker(acknowledged=True), subscribed):  # while subscribing, and later
        with pytest.raises(error) as lost:
            t.on_frame(events(rejected))
        assert lost.value.reason == reason


def keepalive(silence: float = 0.0) -> SubscriptionTracker:
    t = SubscriptionTracker(
        ["a"],
        acknowledged=False,
        subscribe_timeout=10.0,
        ack_grace=0.0,
        silence_timeout=silence,
        now=100.0,
        ping_interval=20.0,
        ping_timeout=10.0,
    )
    t.on_timeout(100.0)  # subscribed
    return t


def test_pings_go_out_on_schedule_one_at_a_time() -> None:
    t = keepalive()
    assert t.read_timeout(105.0) == 15.0  # until the first ping is due
    assert not t.ping_due(119.9)
    assert t.ping_due(120.0)
    first = t.on_ping(120.0)
    assert not t.ping_due(150.0), "never two pings awaiting their pongs"
    assert t.read_timeout(120.0) == 10.0  # the pong deadline
    t.on_pong(first)
    assert t.ping_due(140.0)
    second = t.on_ping(140.0)
    t.on_pong(first)  # a late answer to an older ping settles nothing
    assert not t.ping_due(170.0)
    t.on_pong(second)
    assert t.ping_due(170.0)


def test_only_time_spent_reading_counts_against_the_pong() -> None:
    t = keepalive()
    t.on_ping(120.0)
    t.on_read(120.0, 126.0)  # waited 6 s for a frame: nothing
    # 60 s not reading (the sink had no room): frames and the pong queue up unread
    t.on_read(186.0, 189.0)
    assert t.read_timeout(189.0) == 1.0
    assert t.on_timeout(189.0) is False
    t.on_read(189.0, 190.0)
    with pytest.raises(ConnectionLost) as lost:
        t.on_timeout(190.0)
    assert (lost.value.reason, lost.value.detail) == (
        "watchdog",
        "no pong and no frame for 10.0 s of reading",
    )


def test_any_frame_proves_the_peer_alive() -> None:
    t = keepalive()
    t.on_ping(120.0)
    t.on_read(120.0, 129.0)
    assert t.on_frame(ParseResult(records=[make.balance()])) is False
    t.on_read(129.0, 135.0)
    assert t.on_timeout(135.0) is False
    assert t.ping_due(140.0), "the next ping goes out on schedule"


def test_reading_time_before_the_ping_does_not_count() -> None:
    t = keepalive()
    t.on_ping(125.0)
    t.on_read(120.0, 134.0)  # a read that began before the ping
    assert t.read_timeout(134.0) == 1.0


def test_silence_counts_reading_time_since_the_last_frame_and_pongs_do_not_reset_it() -> None:
    t = keepalive(silence=30.0)
    ping = t.on_ping(110.0)
    t.on_read(110.0, 115.0)
    t.on_pong(ping)
    t.on_read(115.0, 130.0)
    assert t.on_timeout(130.0) is False  # 20 s quiet
    t.on_read(130.0, 140.0)
    with pytest.raises(ConnectionLost) as lost:
        t.on_timeout(140.0)
    assert lost.value.reason == "silence"


def test_a_ping_waking_the_read_during_the_handshake_is_not_a_timeout() -> None:
    t = SubscriptionTracker(
        ["a"],
        acknowledged=True,
        subscribe_timeout=10.0,
        ack_grace=2.0,
        silence_timeout=0.0,
        now=100.0,
        ping_interval=1.0,
    )
    assert t.read_timeout(100.0) == 1.0
    assert t.on_timeout(101.0) is False
    with pytest.raises(ConnectionLost):
        t.on_timeout(110.0)
