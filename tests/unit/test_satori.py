"""Satori venue module: the published signing vectors, subscriptions, acks and every documented
push frame (golden tests), staleness by logId, and malformed input (property tests)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.records import Balance, DeadLetter, Order, Position, Trade
from bridge.venues.base import Control, Frame, Rejected, Subscribed
from bridge.venues.satori.items import order_status
from bridge.venues.satori.signing import (
    build_query_string,
    build_rest_headers,
    build_subscribe,
    recover_address,
    sign,
    wallet_address,
)
from bridge.venues.satori.venue import SatoriVenue
from tests.data.satori import (
    API_KEY,
    DOC_ACCOUNT,
    DOC_ACKS,
    DOC_ENTRUST,
    DOC_POSITION,
    DOC_TRADES,
    PRIVATE_KEY,
    VECTORS,
    WALLET,
)

pytestmark = pytest.mark.unit


def venue(**kwargs: object) -> SatoriVenue:
    options: dict[str, object] = {"coins": ("USD",), "pairs": ("ETH-USD",)} | kwargs
    return SatoriVenue("sat-test", API_KEY, PRIVATE_KEY, **options)  # type: ignore[arg-type]


def frame(text: str | bytes) -> Frame:
    return Frame(text, received_at=1_725_871_107_500_000, received_mono=2.0)


@pytest.mark.parametrize(("message", "signature"), VECTORS)
def test_published_vectors_reproduce_byte_for_byte(message: str, signature: str) -> None:
    assert sign(PRIVATE_KEY, message) == signature
    assert recover_address(message, signature) == WALLET
    assert signature[-2:] in ("1b", "1c")  # v = 27 / 28


def test_the_private_key_belongs_to_the_documented_wallet() -> None:
    assert wallet_address(PRIVATE_KEY) == WALLET


def test_rest_signing_sorts_and_signs_the_exact_query_string() -> None:
    params = {"timestamp": 1725867599415, "symbol": "USD"}
    assert build_query_string(params) == VECTORS[3][0]
    headers = build_rest_headers(API_KEY, PRIVATE_KEY, build_query_string(params))
    assert headers == {"APIKEY": API_KEY, "X-SAPI-SIGN-TYPE": "2", "signature": VECTORS[3][1]}
    order = {
        "timestamp": 1725693490018,
        "quantity": "0.02",
        "price": 3100,
        "positionType": 3,
        "pairName": "ETH-USD",
        "matchType": 2,
        "lever": 20,
        "isMarket": True,
        "isLong": True,
        "clientOrderId": 1725693490018,
    }
    assert build_query_string(order) == VECTORS[2][0]


def test_subscribe_matches_the_docs_worked_example() -> None:
    message = json.loads(build_subscribe(API_KEY, PRIVATE_KEY, "api_account", "USD", 1725870284179))
    assert message == {
        "symbol": "USD",
        "method": "SUBSCRIBE",
        "event": "api_account",
        "apiKey": API_KEY,
        "signature": VECTORS[0][1],
        "timestamp": 1725870284179,
        "signType": "2",
    }
    trade = json.loads(build_subscribe(API_KEY, PRIVATE_KEY, "api_trade", "ETH-USD", 1, "5MIN"))
    assert (trade["pair"], trade["period"], trade["event"]) == ("ETH-USD", "5MIN", "api_trade")


def test_every_subscription_is_freshly_signed_on_one_connection() -> None:
    v = venue(coins=("USD", "ETH"), pairs=("ETH-USD", "BTC-USD"))
    subs = v.build_subscriptions(now_ms=1725870284179)
    assert [s.id for s in subs] == [
        "api_account:USD",
        "api_account:ETH",
        "api_entrust:ETH-USD",
        "api_entrust:BTC-USD",
        "api_position:ETH-USD",
        "api_position:BTC-USD",
        "api_trade:ETH-USD",
        "api_trade:BTC-USD",
    ]
    stamps = [json.loads(s.message)["timestamp"] for s in subs]
    assert stamps == sorted(set(stamps))
    for sub in subs:
        message = json.loads(sub.message)
        assert recover_address(str(message["timestamp"]), message["signature"]) == WALLET
    assert json.loads(subs[0].message)["signature"] == VECTORS[0][1]


@pytest.mark.parametrize(("text", "ack_id"), DOC_ACKS)
def test_documented_acks_are_recognised(text: str, ack_id: str) -> None:
    assert venue().parse(frame(text)).events == [Subscribed(ack_id)]


def test_a_refused_subscription_is_a_rejection_never_ignored() -> None:
    text = '{"event":"api_entrust_res","method":"SUBSCRIBE","msg":"signature verification failed","pair":"ETH-USD","success":false}'
    (event,) = venue().parse(frame(text)).events
    assert event == Rejected(
        detail="api_entrust:ETH-USD refused: signature verification failed",
        auth=True,
        id="api_entrust:ETH-USD",
    )
    other = '{"event":"api_trade_res","msg":"pair not found","pair":"X-Y","success":false}'
    assert venue().parse(frame(other)).events[0] == Rejected(
        detail="api_trade:X-Y refused: pair not found", auth=False, id="api_trade:X-Y"
    )
    error = '{"code":1001,"msg":"system error","success":false}'
    assert venue().parse(frame(error)).events == [Rejected(detail="system error", auth=False)]


def test_doc_account_push() -> None:
    (record,) = venue().parse(frame(DOC_ACCOUNT)).records
    assert isinstance(record, Balance)
    assert record.key() == f"satori|{WALLET}|USD"
    assert record.available == Decimal("999757.863799")
    assert record.frozen == Decimal("241.506568")
    assert record.total == Decimal("999999.370367")  # available + frozen
    assert record.change == Decimal("0.00")
    assert record.version == 0
    assert (record.event_time, record.source) == (None, "stream")
    assert record.raw == json.dumps(json.loads(DOC_ACCOUNT)["data"], separators=(",", ":"))


def test_doc_entrust_push() -> None:
    (record,) = venue().parse(frame(DOC_ENTRUST)).records
    assert isinstance(record, Order)
    assert record.key() == f"satori|{WALLET}|180632923"
    assert (record.order_id, record.client_order_id) == ("180632923", "1725870680532")
    assert (record.symbol, record.base_asset, record.quote_asset) == ("ETH-USD", "ETH", "USD")
    assert (record.side, record.side_raw, record.order_type) == ("buy", "LONG", "LIMIT")
    assert (record.status, record.status_raw, record.change_type, record.is_final) == (
        "new",
        "NEW",
        "NEW",
        False,
    )
    assert (record.quantity, record.price) == (Decimal("0.02"), Decimal(2000))
    assert (record.filled_quantity, record.filled_quote) == (Decimal(0), Decimal("0.00"))
    assert (record.last_fill_quantity, record.fee, record.fee_asset, record.is_taker) == (None,) * 4
    assert (record.reduce_only, record.leverage) == (False, 1)


def test_entrust_trade_fill_with_fee_and_taker_flag() -> None:
    data = json.loads(DOC_ENTRUST)
    data["data"].update(
        changeType="TRADE",
        dealQuantity="0.02",
        dealAmount="40.00",
        nowDealQuantity="0.015",
        feeCoin="USD",
        feeAmt="0.02",
        isTaker=True,
    )
    (record,) = venue().parse(frame(json.dumps(data))).records
    assert isinstance(record, Order)
    assert (record.status, record.is_final) == ("filled", True)
    assert record.last_fill_quantity == Decimal("0.015")
    assert (record.fee, record.fee_asset, record.is_taker) == (Decimal("0.02"), "USD", True)


@pytest.mark.parametrize(
    ("change", "quantity", "filled", "expected"),
    [
        ("NEW", "1", "0", ("new", False)),
        ("ENTRUST", "1", "0", ("new", False)),
        ("TRADE", "1", "0.4", ("partially_filled", False)),
        ("TRADE", "1", "1", ("filled", True)),
        ("CANCELED", "1", "0.4", ("canceled", True)),
        ("CANCELED", "1", "1", ("canceled", True)),
        ("SOMETHING", "1", "0", ("unknown", False)),
    ],
)
def test_terminal_status_is_derived(
    change: str, quantity: str, filled: str, expected: tuple[str, bool]
) -> None:
    assert order_status(change, Decimal(quantity), Decimal(filled)) == expected


def test_doc_position_push() -> None:
    (record,) = venue().parse(frame(DOC_POSITION)).records
    assert isinstance(record, Position)
    assert record.key() == f"satori|{WALLET}|4796701"
    assert (record.side, record.side_raw, record.change_type, record.is_open) == (
        "long",
        "LONG",
        "NEW",
        True,
    )
    assert record.quantity == Decimal("0.06")
    assert record.change_quantity == Decimal(0)
    assert record.closable_quantity == Decimal("0.06")
    assert record.entry_price == Decimal("2300.045")
    assert record.margin == Decimal("39.890168")
    assert record.margin_call_amount == Decimal("7.5")
    assert record.margin_mode == "isolated"
    closed = json.loads(DOC_POSITION)
    closed["data"].update(changeType="CLOSE", currentQuantity="0", positionType=4)
    (record,) = venue().parse(frame(json.dumps(closed))).records
    assert isinstance(record, Position)
    assert (record.is_open, record.margin_mode) == (False, "cross")


def test_doc_trade_push_is_one_record_per_element_with_exact_prices() -> None:
    records = venue().parse(frame(DOC_TRADES)).records
    assert [type(r) for r in records] == [Trade, Trade]
    first, second = records
    assert isinstance(first, Trade)
    assert isinstance(second, Trade)
    assert first.key() == second.key() == "satori|ETH-USD"
    assert (first.trade_id, first.price, first.quantity, first.amount) == (
        "19868095",
        Decimal("2318.83"),
        Decimal("1.111"),
        Decimal("2576.22013"),
    )
    assert (first.side, first.side_raw, first.event_time) == ("sell", "SHORT", 1725871107000)
    assert (second.side, second.trade_id, second.price) == ("buy", "19868087", Decimal("2318.45"))
    assert first.account is None  # the public tape, not the account's own fills
    assert (
        first.raw
        == '{"amount":2576.22013,"contractMatchPairId":19868095,"contractPairId":1,"isLong":false,"pair":"ETH-USD","price":2318.83,"quantity":1.111,"time":"08:38:27","timestamp":1725871107000}'
    )
    assert first.event_id != second.event_id


def test_a_malformed_trade_item_is_a_dead_letter_and_the_rest_still_publish() -> None:
    bad_first = '{"data":[{"contractMatchPairId":7,"pair":"ETH-USD","quantity":1},' + DOC_TRADES[9:]
    records = venue().parse(frame(bad_first)).records
    assert [type(r) for r in records] == [DeadLetter, Trade, Trade]
    dead = records[0]
    assert isinstance(dead, DeadLetter)
    assert dead.reason == "missing_field"
    assert dead.detail == "api_trade: frame.data[0].price is required"
    assert dead.raw == b'{"contractMatchPairId":7,"pair":"ETH-USD","quantity":1}'


def test_a_push_with_an_older_log_id_is_stale_and_not_published_as_state() -> None:
    v = venue()
    account = json.loads(DOC_ACCOUNT)

    def push(log_id: int, available: str) -> list[object]:
        account["data"].update(logId=log_id, availableAmount=available)
        return list(v.parse(frame(json.dumps(account))).records)

    assert isinstance(push(10, "5")[0], Balance)
    assert isinstance(push(12, "6")[0], Balance)
    (stale,) = push(11, "5.5")
    assert isinstance(stale, DeadLetter)
    assert stale.reason == "stale_version"
    assert stale.detail == "api_account: USD logId 11 is older than 12 already published"
    assert isinstance(push(12, "6")[0], Balance), "the same version again is not stale"
    assert v.max_log_id == {"USD": 12}


def test_an_empty_trade_array_is_counted_not_dropped() -> None:
    result = venue().parse(frame('{"data":[],"event":"api_trade","pair":"ETH-USD","success":true}'))
    assert result.records == []
    assert result.events == [Control("api_trade push with no items")]


def test_unknown_events_and_bad_envelopes_are_dead_letters() -> None:
    cases = {
        '{"event":"api_kline","data":{},"success":true}': "unknown_event",
        '{"data":{}}': "missing_field",
        '{"event":"api_trade","data":{"price":1},"success":true}': "invalid_field",
        '{"event":"api_account","data":[],"success":true}': "invalid_field",
        '{"event":"api_entrust","data":null,"success":true}': "invalid_field",
        "[]": "invalid_field",
        "}": "invalid_json",
    }
    for text, reason in cases.items():
        (record,) = venue().parse(frame(text)).records
        assert isinstance(record, DeadLetter), text
        assert record.reason == reason, text


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=16,
)
KEYS = st.sampled_from(
    [
        "symbol",
        "availableAmount",
        "frozenAmount",
        "logId",
        "currentEntrustId",
        "changeType",
        "quantity",
        "dealQuantity",
        "positionId",
        "direction",
        "contractMatchPairId",
        "pair",
        "price",
        "isLong",
        "timestamp",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    event=st.sampled_from(
        [
            "api_account",
            "api_entrust",
            "api_position",
            "api_trade",
            "api_account_res",
            "other",
            None,
        ]
    ),
    data=JSON
    | st.dictionaries(KEYS, JSON, max_size=6)
    | st.lists(st.dictionaries(KEYS, JSON, max_size=6), max_size=3),
    success=st.none() | st.booleans(),
)
def test_parse_returns_records_or_dead_letters_never_raises(
    event: str | None, data: object, success: bool | None
) -> None:
    result = venue().parse(frame(json.dumps({"event": event, "data": data, "success": success})))
    assert result.records or result.events
    for record in result.records:
        assert isinstance(record, Balance | Order | Position | Trade | DeadLetter)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=48) | st.text(max_size=48))
def test_parse_survives_arbitrary_frames(data: bytes | str) -> None:
    result = venue().parse(frame(data))
    assert result.records or result.events
