"""Records for tests: every optional field null, every required one a neutral value; a test
names only the fields it is about."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from bridge.records import Balance, Order, Position, VenueRecord

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
