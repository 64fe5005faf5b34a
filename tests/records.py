"""Records for tests: every optional field null, every required one a neutral value; a test
names only the fields it is about."""

from __future__ import annotations

import dataclasses
import time
from decimal import Decimal
from typing import Any, TypeVar

from bridge.records import Balance, Order, Position, Trade, VenueRecord, make_event_id

R = TypeVar("R", bound=VenueRecord)

_REQUIRED: dict[str, Any] = {
    "venue": "aquanow",
    "stream": "s",
    "received_at": 1,
    "source": "stream",
    "event_id": "e",
    "raw": "{}",
    # per record type
    "asset": "BTC",
    "order_id": "o",
    "position_id": "p",
    "symbol": "BTC-USD",
    "side": "buy",
    "status": "new",
    "status_raw": "CREATE",
    "is_final": False,
    "is_open": True,
}


def build(record_type: type[R], **fields: Any) -> R:
    values = {f.name: _REQUIRED.get(f.name) for f in dataclasses.fields(record_type)}
    return record_type(**{**values, **fields})


def balance(**fields: Any) -> Balance:
    return build(Balance, **fields)


def order(**fields: Any) -> Order:
    return build(Order, **fields)


def position(**fields: Any) -> Position:
    return build(Position, **fields)


def own_fill(**fields: Any) -> Trade:
    """One of the account's own fills (a trade with an account): ETH-USD, 1 at 1, bought."""
    defaults = {"account": "acct", "symbol": "ETH-USD", "price": Decimal(1), "side": "buy"}
    return build(Trade, **{**defaults, "quantity": Decimal(1), **fields})


def live_balance(asset: str, available: str, raw: str = "{}") -> Balance:
    """A balance of stream s1 / account A1 received now, its event 250 ms old; the event id is
    unique per (asset, available). Shared by the sink's tests (unit and against the broker)."""
    return balance(
        stream="s1",
        account="A1",
        event_time=int(time.time() * 1000) - 250,
        received_at=time.time_ns() // 1000,
        event_id=make_event_id("test", asset, available),
        raw=raw,
        asset=asset,
        available=Decimal(available),
    )


# A balance with the User Balances page's own values (tail and decoding tests).
SAMPLE_BALANCE = balance(
    stream="main",
    account="CA1",
    event_time=1656460243147,
    received_at=1656460243147123,
    event_id="id-1",
    available=Decimal("2.4643104026041307"),
    total=Decimal("1E+2"),
    pending_transfer=Decimal("0"),
    deposit_address="rPEPPER7kfTD9w2To4CQk6UCfuHM9c6GDY",
)
