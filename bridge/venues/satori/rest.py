"""Satori REST snapshot (venues.md §2.7): which calls, the envelope, its pages, and REST items
renamed to the push field names so that one set of record builders (items.py) serves both.

Pure functions. All private queries are POSTs with the parameters in the signed query string.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from functools import partial
from typing import Any, Final

from bridge.errors import ParseError
from bridge.records import SOURCE_SNAPSHOT, Order, Position, Record, make_event_id
from bridge.venues.base import Frame, RestCall, RestError, SnapshotPage, http_error
from bridge.venues.decoder import FAST, JsonReader
from bridge.venues.fields import Fields, dumps_exact
from bridge.venues.satori import EVENTS, NAME, SatoriEvent
from bridge.venues.satori.items import SatoriItems

PAGE_SIZE: Final = 100  # the documented maximum for the list endpoints
BALANCE: Final = "/api/third/hot/order/balance"
CURRENT_ORDERS: Final = "/api/third/order/selectContractCurrentEntrustList"
POSITIONS: Final = "/api/third/hot/order/selectContractPositionList"
FILLS: Final = "/api/third/order/selectContractMatchPairList"
QUERY_ORDER: Final = "/api/third/order/queryOrder"  # SDK only (§2.7): final state by id
PAGED: Final = frozenset({"orders", "positions"})
# Body `code`s (§2.7): 2008 "Frequent requests"; 1001 system error and 2329 server updating
# are worth retrying; anything else is a request we got wrong.
RATE_LIMITED_CODES: Final = frozenset({2008})
RETRY_CODES: Final = frozenset({1001, 2329})


def snapshot_calls(
    coins: tuple[str, ...], pairs: tuple[str, ...], events: tuple[SatoriEvent, ...] = EVENTS
) -> list[RestCall]:
    """Balance per coin, current orders and recent own fills per pair, positions per pair.
    Satori has no "orders updated since" query: orders that ended during a gap come from
    `reconcile_missing`."""
    first_page = (("pageNo", "1"), ("pageSize", str(PAGE_SIZE)))
    calls = []
    if "api_account" in events:
        calls += [RestCall("balance", "POST", BALANCE, (("symbol", c),)) for c in coins]
    for pair in pairs:
        if "api_entrust" in events:
            calls.append(
                RestCall("orders", "POST", CURRENT_ORDERS, (*first_page, ("pairName", pair)))
            )
            calls.append(RestCall("fills", "POST", FILLS, (*first_page, ("pairName", pair))))
        if "api_position" in events:
            calls.append(
                RestCall("positions", "POST", POSITIONS, (*first_page, ("pairName", pair)))
            )
    return calls


def relisting_calls(pairs: tuple[str, ...], events: tuple[SatoriEvent, ...]) -> list[RestCall]:
    """The paged lists whose pages shift when items end between two page reads."""
    first_page = (("pageNo", "1"), ("pageSize", str(PAGE_SIZE)))
    calls = []
    for pair in pairs:
        if "api_entrust" in events:
            calls.append(
                RestCall("orders", "POST", CURRENT_ORDERS, (*first_page, ("pairName", pair)))
            )
        if "api_position" in events:
            calls.append(
                RestCall("positions", "POST", POSITIONS, (*first_page, ("pairName", pair)))
            )
    return calls


def lookup_call(order_id: str) -> RestCall:
    return RestCall("order_lookup", "POST", QUERY_ORDER, (("entrustId", order_id),))


def next_page(call: RestCall, items: int) -> list[RestCall]:
    """A full page means there may be more."""
    if call.kind not in PAGED or items < PAGE_SIZE:
        return []
    params = dict(call.params)
    params["pageNo"] = str(int(params.get("pageNo", "1")) + 1)
    return [RestCall(call.kind, call.method, call.path, tuple(params.items()))]


def unwrap(
    status: int, body: bytes, loads: JsonReader = FAST.loads
) -> tuple[Any, RestError | None]:
    """The `data` of `{"error":false,"code":200,"msg":"SUCCESS","data":…}`, or the error."""
    error = http_error(status, body, "msg")
    if error is not None:
        return None, error
    try:
        envelope = loads(body)
    except ParseError as exc:
        return None, RestError("retry", f"HTTP {status}: unreadable body: {exc.detail}")
    if not isinstance(envelope, dict):
        return None, RestError("retry", f"HTTP {status}: unexpected body")
    code = envelope.get("code")
    if status == 200 and code == 200 and envelope.get("error") is not True:
        return envelope.get("data"), None
    detail = f"HTTP {status}, code {code}: {envelope.get('msg')}"
    if code in RATE_LIMITED_CODES:
        return None, RestError("rate_limited", detail)
    if code in RETRY_CODES:
        return None, RestError("retry", detail)
    return None, RestError("fatal", detail)


def listed_items(data: Any) -> list[Any]:
    """List endpoints answer with a list ("list" in the docs' tables); accept the usual paged
    object shapes too."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for key in ("list", "records", "rows"):
            if isinstance(data.get(key), list):
                return list(data[key])
    return [] if data is None else [data]


def direction(item: dict[str, Any]) -> str | None:
    is_long = item.get("isLong")
    return None if not isinstance(is_long, bool) else ("LONG" if is_long else "SHORT")


def rename_order(item: Any) -> Any:
    """REST order (`id`, `isLong`, …) → push names (`currentEntrustId`, `direction`, …)."""
    if not isinstance(item, dict):
        return item
    renamed = {k: v for k, v in item.items() if k not in ("id", "isLong")}
    renamed["currentEntrustId"] = item.get("id", item.get("entrustId"))
    renamed["direction"] = direction(item)
    return renamed


def rename_position(item: Any) -> Any:
    """REST position → push names. `remainingCloseQuantity` is the closable quantity."""
    if not isinstance(item, dict):
        return item
    renamed = {k: v for k, v in item.items() if k not in ("id", "isLong", "quantity")}
    renamed.update(
        positionId=item.get("id"),
        direction=direction(item),
        currentQuantity=item.get("quantity"),
        canClosedQuantity=item.get("remainingCloseQuantity"),
    )
    return renamed


def parse_snapshot(
    items: SatoriItems, call: RestCall, status: int, body: bytes, at: Frame
) -> SnapshotPage:
    """One REST answer → records (source=snapshot), the next page, or the error."""
    data, error = unwrap(status, body, items.json.loads)
    if error is not None:
        return SnapshotPage(error=error)
    if call.kind == "balance":
        balances = items.items(data, at, SOURCE_SNAPSHOT, "balance", items.balance)
        return SnapshotPage(records=balances)
    if call.kind == "order_lookup":
        return SnapshotPage(records=_orders(items, [data], at, current=False))
    listed = listed_items(data)
    more = next_page(call, len(listed))
    if call.kind == "orders":
        return SnapshotPage(records=_orders(items, listed, at, current=True), more=more)
    if call.kind == "positions":
        records = items.items(
            listed,
            at,
            SOURCE_SNAPSHOT,
            "snapshot positions",
            items.position,
            many=True,
            rename=rename_position,
            path="positions",
        )
        return SnapshotPage(records=records, more=more)
    return _fills(items, call, listed, at)


def _fills(items: SatoriItems, call: RestCall, listed: list[Any], at: Frame) -> SnapshotPage:
    """Own fills newer than the newest one published (the pair's watermark), newest first.
    A full page of new fills means the gap may hold more: the next call asks for the fills
    before the page's oldest (`matchId`, §2.7), until the watermark is reached. The watermark
    moves only when that walk ends (a failed run starts it again; copies share event ids).
    Without a watermark (the stream's first snapshot) only the newest page is read."""
    params = dict(call.params)
    pair = params.get("pairName", "")
    mark = items.fill_watermark.get(pair)
    ids = [i["id"] for i in listed if isinstance(i, dict) and isinstance(i.get("id"), int)]
    fresh = [i for i in listed if not (isinstance(i, dict) and mark is not None and _le(i, mark))]
    fills = items.items(
        fresh, at, SOURCE_SNAPSHOT, "snapshot fills", items.fill, many=True, path="fills"
    )
    top = max([*ids, int(call.carry or 0)], default=0)
    if mark is not None and len(listed) >= PAGE_SIZE and ids and min(ids) > mark:
        params.update(matchId=str(min(ids)), pageNo="1")
        follow = RestCall("fills", call.method, call.path, tuple(sorted(params.items())), str(top))
        return SnapshotPage(records=fills, more=[follow])
    if top:
        items.fill_watermark[pair] = max(mark or 0, top)
    return SnapshotPage(records=fills)


def _le(item: dict[str, Any], mark: int) -> bool:
    return isinstance(item.get("id"), int) and item["id"] <= mark


def _orders(items: SatoriItems, listed: list[Any], at: Frame, current: bool) -> list[Record]:
    """Orders the venue lists as current are open; an order looked up because it left that
    list has ended: filled if its fill reached its quantity, else canceled."""
    kind = "snapshot orders" if current else "snapshot order lookup"
    build = partial(_order, items, current)
    return items.items(
        listed, at, SOURCE_SNAPSHOT, kind, build, many=True, rename=rename_order, path="orders"
    )


def _order(items: SatoriItems, current: bool, p: Fields, raw: str, src: str, at: Frame) -> Record:
    quantity, filled = p.opt_decimal("quantity"), p.opt_decimal("dealQuantity")
    if current:
        status = "partially_filled" if filled else "new"
        return items.order(p, raw, src, at, None, "CURRENT", status, False)
    done = quantity is not None and quantity > 0 and (filled or 0) >= quantity
    status = "filled" if done else "canceled"
    return items.order(p, raw, src, at, None, "NOT_CURRENT", status, True)


def reconcile_missing(
    items: SatoriItems, orders: list[Order], positions: list[Position], at: Frame
) -> tuple[list[RestCall], list[Record]]:
    """Orders that left the current list: look up their final state. Positions that left the
    position list (which holds only open ones) are closed: say so."""
    calls = [lookup_call(o.order_id) for o in orders]
    closed: list[Record] = [
        replace(
            p,
            received_at=at.received_at,
            source=SOURCE_SNAPSHOT,
            event_id=make_event_id(NAME, items.account, "position", p.position_id, "ABSENT"),
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
