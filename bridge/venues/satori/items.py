"""Satori items → records. One builder per record type, reading push field names (§2.4); REST
items are renamed to those names first (rest.py), so pushes and snapshots share every builder.

The only state: the highest balance `logId` published per coin, so that a stale push is
recognised across reconnects and restarts (§2.5), and the newest own fill id per pair.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

from bridge.errors import ParseError
from bridge.records import (
    SIDE_BUY,
    SIDE_SELL,
    SIDE_UNKNOWN,
    Balance,
    Order,
    Position,
    Record,
    Trade,
    make_event_id,
)
from bridge.venues.base import Frame, build_dead_letter
from bridge.venues.decoder import FAST, Json
from bridge.venues.fields import Fields
from bridge.venues.satori import NAME

# changeType values that end a position (§2.4.3).
_POSITION_CLOSED: Final = frozenset({"CLOSE", "LIQUIDATE"})
_MARGIN_MODES: Final = {3: "isolated", 4: "cross"}

# An `api_trade` push lists a handful of prints; a frame of more items is refused whole (one
# dead letter) rather than turned into as many dead letters as a hostile array holds.
MAX_ITEMS: Final = 1000

# Builds one record from an item's fields, its raw text, the source and the receive stamp.
Build = Callable[[Fields, str, str, Frame], Record]


class SatoriItems:
    """The record builders of one stream (one account)."""

    def __init__(self, stream: str, account: str, json: Json = FAST) -> None:
        self.stream = stream
        self.account = account
        self.json = json  # how frames are read and items written back (`raw`)
        self.max_log_id: dict[str, int] = {}  # highest logId published per coin
        self.fill_watermark: dict[str, int] = {}  # newest own fill id published per pair

    def items(
        self,
        data: Any,
        at: Frame,
        source: str,
        kind: str,
        build: Build,
        many: bool = False,
        rename: Callable[[Any], Any] | None = None,
        path: str = "frame.data",
    ) -> list[Record]:
        """One record per item (`many`: `data` is an array, §2.4.4; else one object); a
        malformed item becomes a dead letter and the others still go on."""
        if many and not isinstance(data, list):
            raise ParseError("invalid_field", f"{path}: expected an array of {kind} items")
        if many and len(data) > MAX_ITEMS:
            raise ParseError("invalid_field", f"{path}: {len(data)} items, more than {MAX_ITEMS}")
        listed = data if many else [data]
        records: list[Record] = []
        for i, item in enumerate(listed):
            where = f"{path}[{i}]" if many else path
            try:
                fields = Fields(rename(item) if rename else item, where)
                records.append(build(fields, self.json.dumps(item), source, at))
            except ParseError as exc:
                # An array item is its own fact: its dead letter carries just that item.
                item_raw = self.json.dumps(item).encode("utf-8", "surrogatepass") if many else None
                records.append(
                    build_dead_letter(
                        NAME,
                        self.stream,
                        at,
                        exc.reason,
                        f"{kind}: {exc.detail}",
                        raw=item_raw,
                        source=source,
                    )
                )
        return records

    def balance(self, p: Fields, raw: str, source: str, at: Frame) -> Record:
        """`api_account` (§2.4.1); total = available + frozen. An older `logId` than one
        already published is a stale push: refused, never published over newer state."""
        asset = p.req_str("symbol")
        available, frozen = p.opt_decimal("availableAmount"), p.opt_decimal("frozenAmount")
        log_id = p.opt_int("logId")
        total = available + frozen if available is not None and frozen is not None else None
        record = Balance(
            venue=NAME,
            stream=self.stream,
            account=self.account,
            event_time=None,
            received_at=at.received_at,
            source=source,
            event_id=make_event_id(NAME, self.account, "balance", asset, log_id, available, frozen),
            raw=raw,
            asset=asset,
            available=available,
            total=total,
            frozen=frozen,
            pending=None,
            pending_transfer=None,
            credit=None,
            change=p.opt_decimal("operateAmount"),
            version=log_id,
        )
        if log_id is not None:
            highest = self.max_log_id.get(asset)
            if highest is not None and log_id < highest:
                raise ParseError(
                    "stale_version",
                    f"{asset} logId {log_id} is older than {highest} already published",
                )
            self.max_log_id[asset] = log_id
        return record

    def entrust(self, p: Fields, raw: str, source: str, at: Frame) -> Record:
        """`api_entrust` (§2.4.2): the status is derived from the change and the fills."""
        change = p.req_str("changeType")
        quantity, filled = p.opt_decimal("quantity"), p.opt_decimal("dealQuantity")
        status, is_final = order_status(change, quantity, filled)
        return self.order(p, raw, source, at, change, change, status, is_final)

    def order(
        self,
        p: Fields,
        raw: str,
        source: str,
        at: Frame,
        change: str | None,
        status_raw: str,
        status: str,
        is_final: bool,
    ) -> Order:
        """An order record from push-named fields (REST items are renamed to these first)."""
        order_id = str(p.req_int("currentEntrustId"))
        symbol = p.req_str("symbol")
        filled, last = p.opt_decimal("dealQuantity"), p.opt_decimal("nowDealQuantity")
        direction = p.opt_str("direction")
        is_market = p.opt_bool("isMarket")
        base, _, quote = symbol.partition("-")
        return Order(
            venue=NAME,
            stream=self.stream,
            account=self.account,
            event_time=None,
            received_at=at.received_at,
            source=source,
            event_id=make_event_id(NAME, self.account, "order", order_id, status_raw, filled, last),
            raw=raw,
            order_id=order_id,
            client_order_id=p.opt_id("clientOrderId"),
            parent_order_id=None,
            symbol=symbol,
            base_asset=base or None,
            quote_asset=quote or None,
            side=_side(direction),
            side_raw=direction,
            order_type=None if is_market is None else ("MARKET" if is_market else "LIMIT"),
            status=status,
            status_raw=status_raw,
            is_final=is_final,
            change_type=change,
            quantity=p.opt_decimal("quantity"),
            price=p.opt_decimal("price"),
            filled_quantity=filled,
            filled_quote=p.opt_decimal("dealAmount"),
            last_fill_quantity=last,
            average_price=None,
            remaining_quantity=None,
            fee=p.opt_decimal("feeAmt"),
            fee_asset=p.opt_str("feeCoin"),
            is_taker=p.opt_bool("isTaker"),
            reduce_only=p.opt_bool("isClose"),
            leverage=p.opt_int("lever"),
            created_at=p.opt_int("createTimeStamp"),
        )

    def position(self, p: Fields, raw: str, source: str, at: Frame) -> Record:
        """`api_position` (§2.4.3); closed by a CLOSE/LIQUIDATE change or a zero quantity."""
        position_id = str(p.req_int("positionId"))
        change = p.opt_str("changeType")
        quantity = p.opt_decimal("currentQuantity")
        direction = p.opt_str("direction")
        mode = p.opt_int("positionType")
        return Position(
            venue=NAME,
            stream=self.stream,
            account=self.account,
            event_time=None,
            received_at=at.received_at,
            source=source,
            event_id=make_event_id(
                NAME,
                self.account,
                "position",
                position_id,
                change,
                quantity,
                p.opt_decimal("operateQuantity"),
            ),
            raw=raw,
            position_id=position_id,
            symbol=p.req_str("symbol"),
            side={"LONG": "long", "SHORT": "short"}.get(direction or "", SIDE_UNKNOWN),
            side_raw=direction,
            change_type=change,
            is_open=change not in _POSITION_CLOSED and quantity != 0,
            quantity=quantity,
            change_quantity=p.opt_decimal("operateQuantity"),
            closable_quantity=p.opt_decimal("canClosedQuantity"),
            entry_price=p.opt_decimal("openingPrice"),
            margin=p.opt_decimal("marginAmount"),
            margin_call_amount=p.opt_decimal("marginCallAmount"),
            margin_mode=None if mode is None else _MARGIN_MODES.get(mode, str(mode)),
        )

    def trade(self, p: Fields, raw: str, source: str, at: Frame) -> Record:
        """One print of the public `api_trade` feed (§2.4.4): no account, no order."""
        trade_id = str(p.req_int("contractMatchPairId"))
        symbol = p.req_str("pair")
        side, side_raw = _long_side(p.opt_bool("isLong"))
        return Trade(
            venue=NAME,
            stream=self.stream,
            account=None,
            event_time=p.opt_int("timestamp"),
            received_at=at.received_at,
            source=source,
            event_id=make_event_id(NAME, "trade", symbol, trade_id),
            raw=raw,
            trade_id=trade_id,
            symbol=symbol,
            price=p.req_decimal("price"),
            quantity=p.req_decimal("quantity"),
            amount=p.opt_decimal("amount"),
            side=side,
            side_raw=side_raw,
            order_id=None,
            fee=None,
            fee_asset=None,
            is_taker=None,
        )

    def fill(self, p: Fields, raw: str, source: str, at: Frame) -> Record:
        """One of the account's own fills (REST selectContractMatchPairList, §2.7) as a trade
        with its order id, fee and taker flag."""
        trade_id = str(p.req_int("id"))
        side, side_raw = _long_side(p.opt_bool("isLong"))
        return Trade(
            venue=NAME,
            stream=self.stream,
            account=self.account,
            event_time=p.opt_int("createTimeStamp"),
            received_at=at.received_at,
            source=source,
            event_id=make_event_id(NAME, self.account, "fill", trade_id),
            raw=raw,
            trade_id=trade_id,
            symbol=p.req_str("symbol"),
            price=p.req_decimal("averagePrice"),
            quantity=p.req_decimal("quantity"),
            amount=p.opt_decimal("amount"),
            side=side,
            side_raw=side_raw,
            order_id=p.opt_id("entrustId"),
            fee=p.opt_decimal("tradeFee"),
            fee_asset=p.opt_str("accountCoinSymbol"),
            is_taker=p.opt_bool("isTaker"),
        )


def order_status(change: str, quantity: Decimal | None, filled: Decimal | None) -> tuple[str, bool]:
    """Satori has no terminal order status (§2.4.2): CANCELED is final; an order whose
    cumulative fill reached its quantity is filled."""
    if change == "CANCELED":
        return "canceled", True
    if quantity and filled is not None and filled >= quantity:
        return "filled", True
    if filled:
        return "partially_filled", False
    if change in ("NEW", "ENTRUST", "TRADE"):
        return "new", False
    return "unknown", False


def _side(direction: str | None) -> str:
    return {"LONG": SIDE_BUY, "SHORT": SIDE_SELL}.get(direction or "", SIDE_UNKNOWN)


def _long_side(is_long: bool | None) -> tuple[str, str | None]:
    """(canonical side, raw side) of a trade's `isLong` flag."""
    if is_long is None:
        return SIDE_UNKNOWN, None
    return (SIDE_BUY, "LONG") if is_long else (SIDE_SELL, "SHORT")
