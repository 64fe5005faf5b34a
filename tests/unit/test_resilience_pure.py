"""The pure parts of resilience: rate limiting, REST snapshot calls, signing
and parsing for both venues, and the snapshot-vs-stream ordering guard."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from decimal import Decimal
from typing import Any

import pytest

from bridge.backoff import TokenBucket
from bridge.records import Balance, DeadLetter, Order, Position, Trade, make_event_id
from bridge.stream import StreamState
from bridge.venues.aquanow import AquanowVenue
from bridge.venues.base import Frame, RestCall, RestError
from bridge.venues.satori.rest import PAGE_SIZE
from bridge.venues.satori.venue import SatoriVenue
from tests import records as make
from tests.data.aquanow import DOC_REST_BALANCE
from tests.data.aquanow import VECTORS as AQUANOW_VECTORS
from tests.data.satori import API_KEY, PRIVATE_KEY, WALLET
from tests.data.satori import VECTORS as SATORI_VECTORS

pytestmark = pytest.mark.unit

AT = Frame(b"", received_at=1_700_000_000_000_000, received_mono=1.0)


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2, burst=3)
    assert [bucket.reserve(now=10.0) for _ in range(3)] == [0, 0, 0]
    assert bucket.reserve(now=10.0) == pytest.approx(0.5)
    assert bucket.reserve(now=10.0) == pytest.approx(1.0)
    assert bucket.reserve(now=20.0) == 0  # refilled (up to the burst)


# -- Aquanow -------------------------------------------------------------------------------
def aquanow(**kwargs: Any) -> AquanowVenue:
    return AquanowVenue("aq", "k", "test-secret-not-real", **kwargs)


def test_aquanow_snapshot_calls() -> None:
    calls = aquanow(account="CA1").snapshot_calls(until_ms=2000, since_ms=1000)
    assert calls == [
        RestCall("balance", "GET", "/users/v1/userbalance", (("accountId", "CA1"),)),
        RestCall(
            "order", "GET", "/trades/v1/order", (("accountId", "CA1"), ("openOrders", "true"))
        ),
        RestCall(
            "order",
            "GET",
            "/trades/v1/order",
            (("accountId", "CA1"), ("startTime", "1000"), ("endTime", "2000")),
        ),
        RestCall(
            "tradeCreditBalance", "GET", "/users/v1/tradeCreditBalance", (("accountId", "CA1"),)
        ),
    ]
    legacy = aquanow().snapshot_calls(until_ms=2000, since_ms=None)
    assert [c.kind for c in legacy] == ["balance", "order"], "no accountId known: no credit call"


def test_aquanow_learns_the_account_id_from_pushes_for_rest_calls() -> None:
    venue = aquanow()
    venue.parse(Frame('{"type":"balance","payload":{"accountId":"CA9","symbol":"BTC"}}', 0, 0.0))
    assert venue.snapshot_calls(until_ms=1, since_ms=None)[0].params == (("accountId", "CA9"),)


def test_aquanow_rest_signature_covers_the_bare_path_only() -> None:
    call = RestCall("balance", "GET", "/users/v1/userbalance", (("accountId", "CA1"),))
    signed = aquanow().sign_call(call, now_ms=1_700_000_000_000)
    assert signed.target == "/users/v1/userbalance?accountId=CA1"
    assert signed.headers == {
        "x-api-key": "k",
        "x-nonce": "1700000000000",
        "x-signature": AQUANOW_VECTORS[3][1],
    }


def test_aquanow_rest_answers() -> None:
    venue = aquanow()
    call = RestCall("balance", "GET", "/users/v1/userbalance")
    page = venue.parse_snapshot(call, 200, f"[{DOC_REST_BALANCE}]".encode(), AT)
    (record,) = page.records
    assert isinstance(record, Balance)
    assert (record.source, record.available) == ("snapshot", Decimal("2.4643104026041307"))
    bad = venue.parse_snapshot(
        call, 200, b'[{"symbol":"BTC","totalBalance":"x"}, {"symbol":"ETH"}]', AT
    )
    assert [type(r) for r in bad.records] == [DeadLetter, Balance]
    assert isinstance(bad.records[0], DeadLetter)
    assert bad.records[0].source == "snapshot"
    assert bad.records[0].detail.startswith("snapshot balance: snapshot balance.totalBalance")
    assert venue.parse_snapshot(
        call, 401, b'{"message":"Invalid signature"}', AT
    ).error == RestError("auth", "HTTP 401: Invalid signature")
    assert venue.parse_snapshot(call, 429, b"{}", AT).error == RestError(
        "rate_limited", "HTTP 429:"
    )
    assert venue.parse_snapshot(call, 502, b"gateway", AT).error == RestError(
        "retry", "HTTP 502: gateway"
    )
    assert venue.parse_snapshot(call, 200, b"<html>", AT).error is not None
    credit = RestCall("tradeCreditBalance", "GET", "/users/v1/tradeCreditBalance")
    none = venue.parse_snapshot(credit, 400, b'{"message":"Credit balance does not exist"}', AT)
    assert (none.records, none.error) == ([], None)


def test_aquanow_looks_up_orders_that_left_the_open_list() -> None:
    order = make.order(
        stream="aq",
        account="CA1",
        event_time=1,
        order_id="o-7",
        status="open",
        status_raw="AWAITING",
    )
    calls, records = aquanow().reconcile_missing([order], [], AT)
    assert calls == [RestCall("order", "GET", "/trades/v1/order", (("orderId", "o-7"),))]
    assert records == []


# -- Satori --------------------------------------------------------------------------------
def satori() -> SatoriVenue:
    return SatoriVenue("sat", API_KEY, PRIVATE_KEY, coins=("USD",), pairs=("ETH-USD",))


def envelope(data: Any, code: int = 200) -> bytes:
    return json.dumps({"error": code != 200, "code": code, "msg": "SUCCESS", "data": data}).encode()


def test_satori_snapshot_calls_and_signing_match_the_docs_vector() -> None:
    venue = satori()
    calls = venue.snapshot_calls(until_ms=0, since_ms=None)
    assert [(c.kind, c.path.rsplit("/", 1)[1]) for c in calls] == [
        ("balance", "balance"),
        ("orders", "selectContractCurrentEntrustList"),
        ("fills", "selectContractMatchPairList"),
        ("positions", "selectContractPositionList"),
    ]
    signed = venue.sign_call(calls[0], now_ms=1725867599415)
    assert signed.target == f"/api/third/hot/order/balance?{SATORI_VECTORS[3][0]}"
    assert signed.headers == {
        "APIKEY": API_KEY,
        "X-SAPI-SIGN-TYPE": "2",
        "signature": SATORI_VECTORS[3][1],
    }


def test_satori_rest_balance_is_the_docs_example() -> None:
    call = satori().snapshot_calls(0, None)[0]
    body = envelope(
        {
            "userId": 42471,
            "coinId": 4,
            "availableAmount": "999951.980199",
            "frozenAmount": "47.390168",
            "symbol": "USD",
        }
    )
    (record,) = satori().parse_snapshot(call, 200, body, AT).records
    assert isinstance(record, Balance)
    assert (record.key(), record.available, record.frozen, record.version) == (
        f"satori|{WALLET}|USD",
        Decimal("999951.980199"),
        Decimal("47.390168"),
        None,
    )


def test_satori_rest_orders_are_current_and_paged() -> None:
    call = satori().snapshot_calls(0, None)[1]
    item = {
        "id": 180632923,
        "clientOrderId": "1",
        "dealAmount": "0.00",
        "dealQuantity": "0.01",
        "isLong": False,
        "isMarket": False,
        "isClose": True,
        "lever": 20,
        "price": "2000",
        "quantity": "0.02",
        "symbol": "ETH-USD",
        "createTimeStamp": 1725870680532,
    }
    page = satori().parse_snapshot(call, 200, envelope([item] * PAGE_SIZE), AT)
    record = page.records[0]
    assert isinstance(record, Order)
    assert (record.order_id, record.side, record.status, record.status_raw, record.is_final) == (
        "180632923",
        "sell",
        "partially_filled",
        "CURRENT",
        False,
    )
    assert (record.reduce_only, record.created_at, record.change_type) == (
        True,
        1725870680532,
        None,
    )
    assert json.loads(record.raw) == item, "raw is the REST item as the venue sent it"
    assert [dict(c.params)["pageNo"] for c in page.more] == ["2"]
    assert satori().parse_snapshot(call, 200, envelope({"list": [item]}), AT).more == []


def test_satori_looked_up_orders_are_final() -> None:
    lookup = RestCall("order_lookup", "POST", "/api/third/order/queryOrder", (("entrustId", "1"),))
    base = {
        "id": 1,
        "dealQuantity": "0.02",
        "quantity": "0.02",
        "symbol": "ETH-USD",
        "isLong": True,
    }
    (filled,) = satori().parse_snapshot(lookup, 200, envelope(base), AT).records
    (canceled,) = (
        satori()
        .parse_snapshot(lookup, 200, envelope({**base, "dealQuantity": "0.005"}), AT)
        .records
    )
    assert isinstance(filled, Order)
    assert isinstance(canceled, Order)
    assert (filled.status, filled.is_final, filled.status_raw) == ("filled", True, "NOT_CURRENT")
    assert (canceled.status, canceled.is_final) == ("canceled", True)


def test_satori_rest_positions_and_fills() -> None:
    venue = satori()
    calls = {c.kind: c for c in venue.snapshot_calls(0, None)}
    position = {
        "id": 4796701,
        "isLong": True,
        "quantity": "0.06",
        "remainingCloseQuantity": "0.06",
        "openingPrice": "2300.045",
        "marginAmount": "39.890168",
        "marginCallAmount": "7.5",
        "positionType": 4,
        "status": 1,
        "symbol": "ETH-USD",
    }
    (record,) = venue.parse_snapshot(calls["positions"], 200, envelope([position]), AT).records
    assert isinstance(record, Position)
    assert (
        record.position_id,
        record.side,
        record.is_open,
        record.quantity,
        record.margin_mode,
    ) == (
        "4796701",
        "long",
        True,
        Decimal("0.06"),
        "cross",
    )
    fill = {
        "id": 19868100,
        "entrustId": 180632923,
        "averagePrice": "2318.5",
        "quantity": "0.01",
        "amount": "23.185",
        "isLong": False,
        "isTaker": True,
        "tradeFee": "0.0115925",
        "accountCoinSymbol": "USD",
        "createTimeStamp": 1725871107000,
        "symbol": "ETH-USD",
    }
    (trade,) = venue.parse_snapshot(calls["fills"], 200, envelope([fill]), AT).records
    assert isinstance(trade, Trade)
    assert (trade.trade_id, trade.order_id, trade.account, trade.side, trade.is_taker) == (
        "19868100",
        "180632923",
        WALLET,
        "sell",
        True,
    )
    assert (trade.price, trade.fee, trade.fee_asset, trade.source) == (
        Decimal("2318.5"),
        Decimal("0.0115925"),
        "USD",
        "snapshot",
    )


def test_satori_rest_errors() -> None:
    call = satori().snapshot_calls(0, None)[0]
    assert satori().parse_snapshot(call, 200, envelope(None, code=2008), AT).error == RestError(
        "rate_limited", "HTTP 200, code 2008: SUCCESS"
    )
    assert satori().parse_snapshot(
        call, 401, b'{"msg":"signature verification failed"}', AT
    ).error == RestError("auth", "HTTP 401: signature verification failed")
    assert satori().parse_snapshot(call, 200, envelope(None, code=2002), AT).error is not None
    assert satori().parse_snapshot(call, 200, envelope(None, code=2002), AT).error.kind == "fatal"  # type: ignore[union-attr]
    assert satori().parse_snapshot(call, 503, b"", AT).error.kind == "retry"  # type: ignore[union-attr]


def test_satori_positions_absent_from_the_list_are_closed() -> None:
    open_position = make.position(
        venue="satori",
        stream="sat",
        account=WALLET,
        position_id="9",
        symbol="ETH-USD",
        side="long",
        side_raw="LONG",
        change_type="INCREASE",
        quantity=Decimal("0.5"),
        change_quantity=Decimal("0.1"),
        closable_quantity=Decimal("0.5"),
        entry_price=Decimal(2300),
        margin=Decimal(40),
        margin_mode="isolated",
    )
    calls, (closed,) = satori().reconcile_missing([], [open_position], AT)
    assert calls == []
    assert isinstance(closed, Position)
    assert (closed.is_open, closed.quantity, closed.source, closed.key()) == (
        False,
        Decimal(0),
        "snapshot",
        open_position.key(),
    )
    assert closed.event_id == make_event_id("satori", WALLET, "position", "9", "ABSENT")


# -- the ordering guard ----------------------------------------------------------------------
class RecordingSink:
    def __init__(self) -> None:
        self.records: list[Any] = []

    async def publish(self, record: Any, received_mono: float | None = None) -> None:
        self.records.append(record)


def balance(source: str, available: str) -> Balance:
    return make.balance(
        venue="satori",
        stream="sat",
        account="A",
        source=source,
        event_id=available,
        asset="USD",
        available=Decimal(available),
    )


async def test_a_snapshot_record_never_overwrites_newer_stream_state() -> None:
    sink = RecordingSink()
    publisher = StreamState("sat", "satori", sink)
    await publisher.publish(balance("stream", "1"))
    publisher.begin_snapshot()
    await publisher.publish(balance("stream", "2"))  # arrived while the snapshot ran
    await publisher.publish(balance("snapshot", "1.5"))  # fetched earlier than that push
    publisher.end_snapshot()
    await publisher.publish(balance("snapshot", "3"))  # outside a snapshot nothing is guarded
    assert [r.available for r in sink.records] == [Decimal(1), Decimal(2), Decimal(3)]
    assert publisher.superseded == 1


class FullSink(RecordingSink):
    """A sink with no room: every publish waits until `room` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.room = asyncio.Event()

    async def publish(self, record: Any, received_mono: float | None = None) -> None:
        await self.room.wait()
        self.records.append(record)


async def test_a_snapshot_cancelled_while_waiting_for_sink_room_leaves_no_false_memory() -> None:
    """A session that ends while its snapshot waits for buffer room cancels the snapshot: the
    record it was handing over never reaches the sink. The stream must not remember it as
    published, or the next snapshot skips the same venue state as unchanged (a stale key) and
    fetches finished orders only from after its time (a missing order)."""
    sink = FullSink()
    state = StreamState("aq", "aquanow", sink)
    sink.room.set()
    opened = make.order(stream="aq", order_id="7", event_time=1000, is_final=False)
    await state.publish(balance("stream", "1"))
    await state.publish(opened)
    sink.room.clear()
    state.session_started(reconciles=True)
    state.begin_snapshot()
    filled = dataclasses.replace(opened, source="snapshot", is_final=True, event_time=5000)
    for record in (balance("snapshot", "2"), filled):
        handing = asyncio.create_task(state.publish(record))
        await asyncio.sleep(0)  # admitted, waiting for room
        handing.cancel()  # the session ended: the snapshot is cancelled
        with pytest.raises(asyncio.CancelledError):
            await handing
    state.end_snapshot()
    sink.room.set()
    state.session_started(reconciles=True)  # the next session's snapshot fetches again
    assert state.order_mark is not None
    assert state.order_mark < 5000
    assert state.open_orders == {"7": opened}  # still open as far as Kafka knows
    state.begin_snapshot()
    assert await state.publish(balance("snapshot", "2"))  # not "unchanged"
    assert await state.publish(filled)
    assert [r.available for r in sink.records if isinstance(r, Balance)] == [1, 2]
