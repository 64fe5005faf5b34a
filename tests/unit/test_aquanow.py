"""Aquanow venue module: signing vectors, subscribe messages and every documented frame."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.records import Balance, CreditBalance, DeadLetter, Order
from bridge.venues.aquanow import (
    AquanowVenue,
    build_rest_headers,
    build_rest_signed_payload,
    build_signed_payload,
    build_subscribe,
    sign,
)
from bridge.venues.base import Frame, Rejected
from tests.data.aquanow import (
    DOC_BALANCE,
    DOC_CREDIT_AS_PUBLISHED,
    DOC_CREDIT_REPAIRED,
    DOC_LEGACY_ORDER,
    DOC_ORDER_WITHOUT_ORDER_ID,
    DOC_REST_BALANCE,
    SECRET,
    VECTORS,
)

pytestmark = pytest.mark.unit


def venue(**kwargs: object) -> AquanowVenue:
    return AquanowVenue("aq-test", "my-key", SECRET, **kwargs)  # type: ignore[arg-type]


def frame(text: str | bytes) -> Frame:
    return Frame(text, received_at=1_700_000_000_123_456, received_mono=1.0)


@pytest.mark.parametrize(("message", "signature"), VECTORS)
def test_signing_vectors(message: str, signature: str) -> None:
    assert sign(SECRET, message) == signature


def test_signed_payloads_are_byte_exact() -> None:
    assert build_signed_payload("subscribe", "executionReport", "1700000000000") == VECTORS[0][0]
    assert (
        build_rest_signed_payload("GET", "/users/v1/userbalance", "1700000000000") == VECTORS[3][0]
    )
    headers = build_rest_headers("k", SECRET, "GET", "/trades/v2/order", "1700000000000")
    assert headers == {"x-api-key": "k", "x-nonce": "1700000000000", "x-signature": VECTORS[4][1]}


def test_subscribe_message_is_payload_plus_key_and_signature() -> None:
    message = build_subscribe("my-key", SECRET, "balanceReport", "1700000000000")
    assert message == (
        '{"type":"subscribe","channel":"balanceReport","nonce":"1700000000000",'
        f'"apiKey":"my-key","apiSignature":"{VECTORS[2][1]}"}}'
    )
    unsubscribe = json.loads(build_subscribe("my-key", SECRET, "balanceReport", "1", "unsubscribe"))
    assert unsubscribe["type"] == "unsubscribe"
    assert unsubscribe["apiSignature"] == sign(
        SECRET, build_signed_payload("unsubscribe", "balanceReport", "1")
    )


def test_subscriptions_are_freshly_signed_with_strictly_increasing_nonces() -> None:
    v = venue(channels=("executionReport", "balanceReport"))
    first = [json.loads(s.message) for s in v.build_subscriptions(now_ms=1_700_000_000_000)]
    again = [json.loads(s.message) for s in v.build_subscriptions(now_ms=1_700_000_000_000)]
    nonces = [int(m["nonce"]) for m in first + again]
    assert nonces == sorted(set(nonces)), "nonces must never repeat, even within one millisecond"
    for message in first + again:
        payload = build_signed_payload("subscribe", message["channel"], message["nonce"])
        assert message["apiSignature"] == sign(SECRET, payload)
        assert message["apiKey"] == "my-key"
    assert [m["channel"] for m in first] == ["executionReport", "balanceReport"]


def test_doc_balance_example() -> None:
    result = venue().parse(frame(DOC_BALANCE))
    assert result.events == []
    (record,) = result.records
    assert isinstance(record, Balance)
    assert record.key() == "aquanow|CA1000051R|BTC"
    assert (record.venue, record.stream, record.account, record.asset) == (
        "aquanow",
        "aq-test",
        "CA1000051R",
        "BTC",
    )
    assert record.total == Decimal("2.30044886")
    assert record.available == Decimal("2.24044886")
    assert record.pending_transfer == Decimal(0)
    assert (record.pending, record.credit, record.frozen, record.version) == (None,) * 4
    assert record.event_time == 1554400262916  # updatedAt wins over itemDateTime (§1.5)
    assert record.received_at == 1_700_000_000_123_456
    assert record.source == "stream"
    assert record.raw == DOC_BALANCE


def test_doc_order_example_without_order_id_is_a_dead_letter() -> None:
    (record,) = venue().parse(frame(DOC_ORDER_WITHOUT_ORDER_ID)).records
    assert isinstance(record, DeadLetter)
    assert record.reason == "missing_field"
    assert record.detail == "frame.payload.orderId is required"
    assert record.raw == DOC_ORDER_WITHOUT_ORDER_ID.encode()
    assert record.key() == "aquanow|aq-test"


def test_doc_credit_example_as_published_is_invalid_json() -> None:
    (record,) = venue().parse(frame(DOC_CREDIT_AS_PUBLISHED)).records
    assert isinstance(record, DeadLetter)
    assert record.reason == "invalid_json"
    assert "delimiter" in record.detail


def test_doc_credit_example_repaired() -> None:
    (record,) = venue().parse(frame(DOC_CREDIT_REPAIRED)).records
    assert isinstance(record, CreditBalance)
    assert record.key() == "aquanow|CA1000051R|USD"
    assert record.adjusted_mtm == Decimal("49215.15490545314")
    assert record.ltv == Decimal("167.79987870494583")
    assert record.unutilized_credit == Decimal("950489.7899944618")
    assert record.credit_limit is None
    assert (record.event_time, record.created_at) == (1712857675713, 1701366866377)


def test_doc_legacy_order_example() -> None:
    (record,) = venue(account="legacy-user").parse(frame(DOC_LEGACY_ORDER)).records
    assert isinstance(record, Order)
    assert record.account == "legacy-user"  # Legacy payloads name no account: config fallback
    assert record.order_id == record.parent_order_id == "460b8bb8-a223-4d80-a5b5-56a288db77f6"
    assert (record.symbol, record.base_asset, record.quote_asset) == ("XRP-CAD", "XRP", "CAD")
    assert (record.side, record.side_raw, record.order_type) == ("sell", "sell", "TWAP")
    assert (record.status, record.status_raw, record.is_final) == ("filled", "COMPLETE", True)
    assert record.quantity == Decimal("143.2")
    assert record.filled_quantity == Decimal("143.2")
    assert record.filled_quote == Decimal("50.330504")
    assert record.average_price == Decimal("0.35147")
    assert record.price == Decimal("0.3491")
    assert record.remaining_quantity == Decimal(0)
    assert (record.fee, record.fee_asset) == (Decimal(0), "CAD")  # legacy fillFeeQuote
    assert record.event_time == 1566429580839  # no updatedAt in Legacy: itemDateTime
    assert record.created_at == 1566429580174


def test_placeholders_become_null() -> None:
    payload = json.loads(DOC_LEGACY_ORDER)
    payload["payload"]["tradePriceAvg"] = "-"
    payload["payload"]["tradeStatus"] = "AWAITING"
    payload["payload"]["fillQtyBase"] = 0
    (record,) = venue().parse(frame(json.dumps(payload))).records
    assert isinstance(record, Order)
    assert record.average_price is None
    assert record.status == "open"


@pytest.mark.parametrize(
    ("status", "filled", "expected"),
    [
        ("CREATE", 0, ("new", False)),
        ("AWAITING", 0, ("open", False)),
        ("AWAITING", 1, ("partially_filled", False)),
        ("RFQ_EXECUTE", 0, ("open", False)),
        ("CANCEL_PENDING", 1, ("cancel_pending", False)),
        ("COMPLETE", 1, ("filled", True)),
        ("PARTIAL_COMPLETE", 1, ("partially_filled", True)),
        ("EXPIRED", 0, ("expired", True)),
        ("CANCELLED", 1, ("canceled", True)),
        ("ERROR", 0, ("rejected", True)),
        ("SOMETHING_NEW", 0, ("unknown", False)),
    ],
)
def test_status_mapping(status: str, filled: int, expected: tuple[str, bool]) -> None:
    payload = {"orderId": "o1", "symbol": "BTC-USD", "tradeStatus": status, "fillQtyBase": filled}
    (record,) = venue().parse(frame(json.dumps({"type": "order", "payload": payload}))).records
    assert isinstance(record, Order)
    assert (record.status, record.is_final) == expected
    assert record.status_raw == status


def test_rest_balance_item_keeps_every_digit() -> None:
    record = venue(account="CA1").parse_item(
        "balance", json.loads(DOC_REST_BALANCE, parse_float=Decimal), frame(""), "snapshot"
    )
    assert isinstance(record, Balance)
    assert record.available == Decimal("2.4643104026041307")
    assert record.total == Decimal("2.785710402604131")
    assert record.pending == Decimal("0.3214000000000003")
    assert record.source == "snapshot"
    assert record.account == "CA1"
    assert json.loads(record.raw, parse_float=Decimal) == json.loads(
        DOC_REST_BALANCE, parse_float=Decimal
    )


def test_same_fact_from_push_and_snapshot_has_the_same_event_id() -> None:
    pushed = venue().parse(frame(DOC_BALANCE)).records[0]
    item = json.loads(DOC_BALANCE, parse_float=Decimal)["payload"]
    item["totalBalance"] = Decimal("2.300448860")  # same value, different digits
    snap = venue().parse_item("balance", item, frame(""), "snapshot")
    assert pushed.event_id == snap.event_id
    item["totalBalance"] = Decimal("2.30044887")
    assert venue().parse_item("balance", item, frame(""), "snapshot").event_id != pushed.event_id


@pytest.mark.parametrize(
    ("text", "reason", "detail"),
    [
        ("not json", "invalid_json", "Expecting value"),
        ("[1,2]", "invalid_field", "frame: expected an object, got an array"),
        ('{"payload":{}}', "missing_field", "frame.type is required"),
        ('{"type":"trade","payload":{}}', "unknown_type", "frame.type 'trade'"),
        ('{"type":"balance"}', "invalid_field", "frame.payload: expected an object, got null"),
        ('{"type":"balance","payload":{"symbol":"BTC","totalBalance":NaN}}', "invalid_json", "NaN"),
        (
            '{"type":"balance","payload":{"symbol":"BTC","totalBalance":"lots"}}',
            "invalid_field",
            "frame.payload.totalBalance: expected a decimal string, got the string 'lots'",
        ),
        (
            '{"type":"balance","payload":{"symbol":"BTC","totalBalance":1e-19}}',
            "invalid_field",
            "frame.payload.totalBalance: 1E-19 has more than 18 decimal places",
        ),
        (
            '{"type":"balance","payload":{"symbol":"BTC","totalBalance":123456789012345678901}}',
            "invalid_field",
            "more than 20 integer digits",
        ),
        (
            '{"type":"order","payload":{"orderId":"o","symbol":"X","tradeStatus":true}}',
            "invalid_field",
            "frame.payload.tradeStatus: expected a string, got a boolean",
        ),
        (b"\xff\xfe", "invalid_json", ""),
    ],
)
def test_malformed_frames_become_dead_letters(text: str | bytes, reason: str, detail: str) -> None:
    (record,) = venue().parse(frame(text)).records
    assert isinstance(record, DeadLetter)
    assert record.reason == reason
    assert detail in record.detail
    assert record.raw == (text if isinstance(text, bytes) else text.encode())


def test_error_frame_is_an_auth_rejection() -> None:
    result = venue().parse(frame('{"type":"error","message":"Unauthorized: invalid signature"}'))
    assert result.records == []
    assert result.events == [Rejected(detail="Unauthorized: invalid signature", auth=True)]
    other = venue().parse(frame('{"type":"error","message":"internal failure"}'))
    assert other.events == [Rejected(detail="internal failure", auth=False)]


def test_amounts_never_pass_through_float() -> None:
    text = '{"type":"balance","payload":{"symbol":"ETH","totalBalance":0.1000000000000000055511151231257827}}'
    (record,) = venue().parse(frame(text)).records
    assert isinstance(record, DeadLetter), "34 decimal places cannot be stored exactly"
    text = '{"type":"balance","payload":{"symbol":"ETH","totalBalance":0.100000000000000005}}'
    (record,) = venue().parse(frame(text)).records
    assert isinstance(record, Balance)
    assert record.total == Decimal("0.100000000000000005")  # a float would give 0.1


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
FIELD_NAMES = st.sampled_from(
    [
        "orderId",
        "symbol",
        "tradeStatus",
        "fillQtyBase",
        "tradeSize",
        "totalBalance",
        "availableBalance",
        "updatedAt",
        "accountId",
        "ltv",
        "tradeSide",
        "priceLimit",
        "x",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["balance", "order", "tradeCreditBalance", "error", "other", None]),
    payload=st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=8) | JSON_VALUES,
)
def test_parse_never_raises_on_structured_garbage(kind: str | None, payload: object) -> None:
    result = venue().parse(frame(json.dumps({"type": kind, "payload": payload})))
    assert len(result.records) + len(result.events) == 1
    for record in result.records:
        assert isinstance(record, Balance | Order | CreditBalance | DeadLetter)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64))
def test_parse_never_raises_on_arbitrary_bytes(data: bytes | str) -> None:
    result = venue().parse(frame(data))
    assert len(result.records) + len(result.events) == 1
