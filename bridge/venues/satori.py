"""Satori Finance websocket: EIP-191 signing, subscriptions, push parsing (venues.md part 2).

Pure: no I/O, no clock. The only state is the highest balance `logId` seen per coin, kept for
the stream's lifetime so a stale push is recognised across reconnects (§2.5).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any, Final

from eth_account import Account
from eth_account.messages import encode_defunct

from bridge.errors import ParseError
from bridge.records import (
    SIDE_BUY,
    SIDE_SELL,
    SIDE_UNKNOWN,
    SOURCE_SNAPSHOT,
    SOURCE_STREAM,
    Balance,
    Order,
    Position,
    Record,
    Trade,
    make_event_id,
)
from bridge.venues import satori_rest
from bridge.venues.base import (
    Control,
    Frame,
    Nonces,
    ParseResult,
    Rejected,
    RestCall,
    SignedCall,
    SnapshotPage,
    Subscribed,
    Subscription,
    build_dead_letter,
)
from bridge.venues.fields import Fields, dumps_exact, loads_exact

NAME: Final = "satori"
SIGN_TYPE: Final = "2"  # secp256k1 (§2.2: "just chose the 2")
EVENTS: Final = ("api_account", "api_entrust", "api_position", "api_trade")
# Which subscription parameter scopes each event (§2.3) and is echoed in its ack.
SCOPE: Final = {
    "api_account": "symbol",
    "api_entrust": "pair",
    "api_position": "pair",
    "api_trade": "pair",
}
_AUTH_WORDS: Final = (
    "sign",
    "auth",
    "apikey",
    "api key",
    "key",
    "unauthor",
    "expired",
    "timestamp",
)
# changeType values that end a position (§2.4.3).
_POSITION_CLOSED: Final = frozenset({"CLOSE", "LIQUIDATE"})
_MARGIN_MODES: Final = {3: "isolated", 4: "cross"}


def sign(private_key: str, message: str) -> str:
    """EIP-191 personal_sign of `message`: "0x" + r + s + v with v = 27/28 (§2.2)."""
    signature = Account.sign_message(encode_defunct(text=message), private_key=private_key)
    hexed = str(signature.signature.hex())
    return hexed if hexed.startswith("0x") else "0x" + hexed


def recover_address(message: str, signature: str) -> str:
    """The wallet address that produced `signature` over `message` (checksummed)."""
    return str(Account.recover_message(encode_defunct(text=message), signature=signature))


def wallet_address(private_key: str) -> str:
    return str(Account.from_key(private_key).address)


def build_query_string(params: Mapping[str, object]) -> str:
    """The REST signing string: keys sorted, `k=v` joined by `&`, unencoded (§2.2)."""
    return "&".join(f"{key}={params[key]}" for key in sorted(params))


def build_rest_headers(api_key: str, private_key: str, signed: str) -> dict[str, str]:
    """Headers for a signed REST call; `signed` is the query string or compact JSON body."""
    return {
        "APIKEY": api_key,
        "X-SAPI-SIGN-TYPE": SIGN_TYPE,
        "signature": sign(private_key, signed),
    }


def build_subscribe(
    api_key: str, private_key: str, event: str, scope: str, timestamp: int, period: str = "1MIN"
) -> str:
    """A subscribe request: only `str(timestamp)` is signed (§2.2); timestamp is a number."""
    request: dict[str, object] = {SCOPE[event]: scope}
    if event == "api_trade":
        request["period"] = period
    request.update(
        method="SUBSCRIBE",
        event=event,
        apiKey=api_key,
        signature=sign(private_key, str(timestamp)),
        timestamp=timestamp,
        signType=SIGN_TYPE,
    )
    return json.dumps(request, separators=(",", ":"))


class SatoriVenue:
    """The account, order, position and trade feeds of one Satori API key."""

    name = NAME
    acknowledges_subscriptions = True  # each subscription gets an `<event>_res` (§2.3)

    def __init__(
        self,
        stream: str,
        api_key: str,
        private_key: str,
        coins: tuple[str, ...] = (),
        pairs: tuple[str, ...] = (),
        events: tuple[str, ...] = EVENTS,
        trade_period: str = "1MIN",
        account: str | None = None,
    ) -> None:
        self.stream = stream
        self._api_key = api_key
        self._private_key = private_key
        self.account = account or wallet_address(private_key)
        self.coins, self.pairs, self.events = coins, pairs, events
        self.scopes = [(e, s) for e in events for s in (coins if SCOPE[e] == "symbol" else pairs)]
        self.trade_period = trade_period
        self._timestamps = Nonces()
        self.max_log_id: dict[str, int] = {}  # highest logId published per coin
        self._parsers: dict[str, Callable[[Any, Frame, str], list[Record]]] = {
            "api_account": self._parse_account,
            "api_entrust": self._parse_entrust,
            "api_position": self._parse_position,
            "api_trade": self._parse_trades,
        }

    def build_subscriptions(self, now_ms: int) -> list[Subscription]:
        return [
            Subscription(
                f"{event}:{scope}",
                build_subscribe(
                    self._api_key,
                    self._private_key,
                    event,
                    scope,
                    self._timestamps.next(now_ms),
                    self.trade_period,
                ),
            )
            for event, scope in self.scopes
        ]

    # -- REST snapshot (§2.7) ---------------------------------------------------------------
    def snapshot_calls(self, now_ms: int, since_ms: int | None) -> list[RestCall]:
        """Balances, current orders, positions and recent own fills. Satori has no "orders
        updated since" query: orders that ended during a gap come from `reconcile_missing`."""
        return satori_rest.snapshot_calls(self.coins, self.pairs, self.events)

    def sign_call(self, call: RestCall, now_ms: int) -> SignedCall:
        """The sorted query string with a fresh timestamp is what is signed and sent (§2.2)."""
        params: dict[str, object] = dict(call.params)
        params["timestamp"] = self._timestamps.next(now_ms)
        query = build_query_string(params)
        headers = build_rest_headers(self._api_key, self._private_key, query)
        return SignedCall(f"{call.path}?{query}", headers)

    def parse_snapshot(self, call: RestCall, status: int, body: bytes, at: Frame) -> SnapshotPage:
        data, error = satori_rest.unwrap(status, body)
        if error is not None:
            return SnapshotPage(error=error)
        if call.kind == "balance":
            return SnapshotPage(records=self._parse_account(data, at, SOURCE_SNAPSHOT))
        if call.kind == "order_lookup":
            return SnapshotPage(records=self._snapshot_orders([data], at, current=False))
        listed = satori_rest.items(data)
        more = satori_rest.next_page(call, len(listed))
        if call.kind == "orders":
            return SnapshotPage(records=self._snapshot_orders(listed, at, current=True), more=more)
        if call.kind == "positions":
            records = self._items(
                listed,
                at,
                SOURCE_SNAPSHOT,
                "snapshot positions",
                self._position_builder(at),
                many=True,
                rename=satori_rest.rename_position,
                path="positions",
            )
            return SnapshotPage(records=records, more=more)
        return SnapshotPage(records=self._snapshot_fills(listed, at))

    def _snapshot_orders(self, listed: list[Any], at: Frame, current: bool) -> list[Record]:
        """Orders the venue lists as current are open; an order looked up because it left
        that list has ended: filled if its fill reached its quantity, else canceled."""

        def build(p: Fields, raw: str, src: str) -> Record:
            quantity, filled = p.opt_decimal("quantity"), p.opt_decimal("dealQuantity")
            if current:
                status = "partially_filled" if filled else "new"
                return self.order_record(p, raw, src, at, None, "CURRENT", status, False)
            done = quantity is not None and quantity > 0 and (filled or 0) >= quantity
            status = "filled" if done else "canceled"
            return self.order_record(p, raw, src, at, None, "NOT_CURRENT", status, True)

        kind = "snapshot orders" if current else "snapshot order lookup"
        return self._items(
            listed,
            at,
            SOURCE_SNAPSHOT,
            kind,
            build,
            many=True,
            rename=satori_rest.rename_order,
            path="orders",
        )

    def _snapshot_fills(self, listed: list[Any], at: Frame) -> list[Record]:
        """The account's own fills (selectContractMatchPairList) as trades with order id, fee
        and taker flag."""

        def build(p: Fields, raw: str, src: str) -> Record:
            trade_id = str(p.req_int("id"))
            is_long = p.opt_bool("isLong")
            return Trade(
                venue=NAME,
                stream=self.stream,
                account=self.account,
                event_time=p.opt_int("createTimeStamp"),
                received_at=at.received_at,
                source=src,
                event_id=make_event_id(NAME, self.account, "fill", trade_id),
                raw=raw,
                trade_id=trade_id,
                symbol=p.req_str("symbol"),
                price=p.req_decimal("averagePrice"),
                quantity=p.req_decimal("quantity"),
                amount=p.opt_decimal("amount"),
                side=SIDE_UNKNOWN if is_long is None else (SIDE_BUY if is_long else SIDE_SELL),
                side_raw=None if is_long is None else ("LONG" if is_long else "SHORT"),
                order_id=p.opt_str("entrustId"),
                fee=p.opt_decimal("tradeFee"),
                fee_asset=p.opt_str("accountCoinSymbol"),
                is_taker=p.opt_bool("isTaker"),
            )

        return self._items(
            listed, at, SOURCE_SNAPSHOT, "snapshot fills", build, many=True, path="fills"
        )

    def reconcile_missing(
        self, orders: list[Order], positions: list[Position], at: Frame
    ) -> tuple[list[RestCall], list[Record]]:
        """Orders that left the current list: look up their final state. Positions that left
        the position list (which holds only open ones) are closed: say so."""
        calls = [satori_rest.lookup_call(o.order_id) for o in orders]
        closed: list[Record] = [
            replace(
                p,
                received_at=at.received_at,
                source=SOURCE_SNAPSHOT,
                event_id=make_event_id(NAME, self.account, "position", p.position_id, "ABSENT"),
                raw=dumps_exact({"positionId": p.position_id, "absentFromPositionList": True}),
                change_type=None,
                is_open=False,
                quantity=Decimal(0),
                change_quantity=None,
                closable_quantity=Decimal(0),
            )
            for p in positions
        ]
        return calls, closed

    def parse(self, frame: Frame) -> ParseResult:
        try:
            envelope = Fields(loads_exact(frame.data), "frame")
            return self._dispatch(envelope, frame)
        except ParseError as exc:
            dead = build_dead_letter(NAME, self.stream, frame, exc.reason, exc.detail)
            return ParseResult(records=[dead])

    def _dispatch(self, envelope: Fields, frame: Frame) -> ParseResult:
        event = envelope.opt_str("event")
        success = envelope.opt_bool("success")
        if event is not None and event.endswith("_res"):
            return ParseResult(events=[self._ack(envelope, event.removesuffix("_res"), success)])
        if success is False:
            # An error frame (shape undocumented, §2.8.2): fail the session, never ignore it.
            detail = envelope.opt_str("msg") or envelope.opt_str("message") or "success:false"
            return ParseResult(events=[Rejected(detail=detail, auth=_is_auth(detail))])
        parser = self._parsers.get(event or "")
        if parser is None:
            if event is None:
                raise ParseError("missing_field", "frame.event is required")
            raise ParseError("unknown_event", f"frame.event {event!r} is not a known push")
        records = parser(envelope.obj.get("data"), frame, SOURCE_STREAM)
        if not records:  # e.g. an empty trade array: nothing to publish, but counted
            return ParseResult(events=[Control(f"{event} push with no items")])
        return ParseResult(records=records)

    def _ack(self, envelope: Fields, event: str, success: bool | None) -> Subscribed | Rejected:
        scope = envelope.opt_str(SCOPE.get(event, "pair")) or ""
        ack_id = f"{event}:{scope}"
        if success:
            return Subscribed(ack_id)
        detail = f"{ack_id} refused: {envelope.opt_str('msg') or 'no message'}"
        return Rejected(detail=detail, auth=_is_auth(detail), id=ack_id)

    # -- pushes ---------------------------------------------------------------------------
    def _items(
        self,
        data: Any,
        frame: Frame,
        source: str,
        kind: str,
        build: Callable[[Fields, str, str], Record],
        many: bool = False,
        rename: Callable[[Any], Any] | None = None,
        path: str = "frame.data",
    ) -> list[Record]:
        """One record per item (`many`: `data` is an array, §2.4.4; else one object); a
        malformed item becomes a dead letter and the others still go on."""
        if many and not isinstance(data, list):
            raise ParseError("invalid_field", f"frame.data: expected an array of {kind} items")
        items = data if many else [data]
        records: list[Record] = []
        for i, item in enumerate(items):
            where = f"{path}[{i}]" if many else path
            try:
                fields = Fields(rename(item) if rename else item, where)
                raw = dumps_exact(item)
                records.append(build(fields, raw, source))
            except ParseError as exc:
                # An array item is its own fact: its dead letter carries just that item.
                item_raw = dumps_exact(item).encode() if many else None
                records.append(
                    build_dead_letter(
                        NAME,
                        self.stream,
                        frame,
                        exc.reason,
                        f"{kind}: {exc.detail}",
                        raw=item_raw,
                        source=source,
                    )
                )
        return records

    def parse_items(self, event: str, data: Any, frame: Frame, source: str) -> list[Record]:
        """REST snapshot data in push shape (§2.7 maps REST names to push names)."""
        return self._parsers[event](data, frame, source)

    def _parse_account(self, data: Any, frame: Frame, source: str) -> list[Record]:
        def build(p: Fields, raw: str, src: str) -> Record:
            asset = p.req_str("symbol")
            available, frozen = p.opt_decimal("availableAmount"), p.opt_decimal("frozenAmount")
            log_id = p.opt_int("logId")
            total = available + frozen if available is not None and frozen is not None else None
            record = Balance(
                venue=NAME,
                stream=self.stream,
                account=self.account,
                event_time=None,
                received_at=frame.received_at,
                source=src,
                event_id=make_event_id(
                    NAME, self.account, "balance", asset, log_id, available, frozen
                ),
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

        return self._items(data, frame, source, "api_account", build)

    def _parse_entrust(self, data: Any, frame: Frame, source: str) -> list[Record]:
        def build(p: Fields, raw: str, src: str) -> Record:
            change = p.req_str("changeType")
            quantity, filled = p.opt_decimal("quantity"), p.opt_decimal("dealQuantity")
            status, is_final = order_status(change, quantity, filled)
            return self.order_record(p, raw, src, frame, change, change, status, is_final)

        return self._items(data, frame, source, "api_entrust", build)

    def order_record(
        self,
        p: Fields,
        raw: str,
        source: str,
        frame: Frame,
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
            received_at=frame.received_at,
            source=source,
            event_id=make_event_id(NAME, self.account, "order", order_id, status_raw, filled, last),
            raw=raw,
            order_id=order_id,
            client_order_id=p.opt_str("clientOrderId"),
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

    def _parse_position(self, data: Any, frame: Frame, source: str) -> list[Record]:
        return self._items(data, frame, source, "api_position", self._position_builder(frame))

    def _position_builder(self, frame: Frame) -> Callable[[Fields, str, str], Record]:
        def build(p: Fields, raw: str, src: str) -> Record:
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
                received_at=frame.received_at,
                source=src,
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

        return build

    def _parse_trades(self, data: Any, frame: Frame, source: str) -> list[Record]:
        def build(p: Fields, raw: str, src: str) -> Record:
            trade_id = str(p.req_int("contractMatchPairId"))
            symbol = p.req_str("pair")
            is_long = p.opt_bool("isLong")
            return Trade(
                venue=NAME,
                stream=self.stream,
                account=None,
                event_time=p.opt_int("timestamp"),
                received_at=frame.received_at,
                source=src,
                event_id=make_event_id(NAME, "trade", symbol, trade_id),
                raw=raw,
                trade_id=trade_id,
                symbol=symbol,
                price=p.req_decimal("price"),
                quantity=p.req_decimal("quantity"),
                amount=p.opt_decimal("amount"),
                side=SIDE_UNKNOWN if is_long is None else (SIDE_BUY if is_long else SIDE_SELL),
                side_raw=None if is_long is None else ("LONG" if is_long else "SHORT"),
                order_id=None,
                fee=None,
                fee_asset=None,
                is_taker=None,
            )

        return self._items(data, frame, source, "api_trade", build, many=True)


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


def _is_auth(detail: str) -> bool:
    lowered = detail.lower()
    return any(word in lowered for word in _AUTH_WORDS)
