"""Satori REST snapshot (venues.md §2.7): which calls, the envelope, and REST items renamed to the
push field names so one set of record builders serves both.

Pure functions. All private queries are POSTs with the parameters in the signed query string.
"""

from __future__ import annotations

from typing import Any, Final

from bridge.errors import ParseError
from bridge.venues.base import RestCall, RestError, http_error
from bridge.venues.fields import loads_exact

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
    coins: tuple[str, ...], pairs: tuple[str, ...], events: tuple[str, ...]
) -> list[RestCall]:
    """Balance per coin, current orders and recent own fills per pair, positions per pair."""
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


def lookup_call(order_id: str) -> RestCall:
    return RestCall("order_lookup", "POST", QUERY_ORDER, (("entrustId", order_id),))


def next_page(call: RestCall, items: int) -> list[RestCall]:
    """A full page means there may be more."""
    if call.kind not in PAGED or items < PAGE_SIZE:
        return []
    params = dict(call.params)
    params["pageNo"] = str(int(params.get("pageNo", "1")) + 1)
    return [RestCall(call.kind, call.method, call.path, tuple(params.items()))]


def unwrap(status: int, body: bytes) -> tuple[Any, RestError | None]:
    """The `data` of `{"error":false,"code":200,"msg":"SUCCESS","data":…}`, or the error."""
    error = http_error(status, body, "msg")
    if error is not None:
        return None, error
    try:
        envelope = loads_exact(body)
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


def items(data: Any) -> list[Any]:
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
