"""The Satori simulator's REST side (venues.md §2.7): POST, parameters in the signed query
string, the `{error, code, msg, data}` envelope; the current order, position and own-fill
lists paged as the venue pages them, `queryOrder`; and the fault that shifts the pages."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bridge.dev.simulator.base import Event, VenueSimulator
from bridge.dev.simulator.wire import (
    SATORI_BALANCE,
    SATORI_CURRENT_ORDERS,
    SATORI_FILLS,
    SATORI_POSITIONS,
    SATORI_QUERY_ORDER,
    BadSatoriSignature,
    json_text,
    satori_signer,
)


class SatoriRest(VenueSimulator):
    """The REST endpoints of `SatoriSimulator`, over its state."""

    api_key: str
    wallet_address: str
    timestamp_window_ms: int
    balances: dict[str, dict[str, Any]]
    orders: dict[int, dict[str, Any]]
    positions: dict[int, dict[str, Any]]
    fills: list[dict[str, Any]]
    shifted: list[tuple[str, int]]
    _open_orders: list[int]
    _open_positions: list[int]
    _shift: dict[str, int]
    _clock: Callable[[], float]

    def _cancel_order(self, order_id: int) -> Event:
        raise NotImplementedError

    def _close_position(self, position_id: int) -> Event:
        raise NotImplementedError

    def _expired(self, timestamp_ms: int) -> bool:
        raise NotImplementedError

    def add_rest_routes(self, app: web.Application) -> None:
        for path, handler in (
            (SATORI_BALANCE, self._rest_balance),
            (SATORI_CURRENT_ORDERS, self._rest_orders),
            (SATORI_POSITIONS, self._rest_positions),
            (SATORI_FILLS, self._rest_fills),
            (SATORI_QUERY_ORDER, self._rest_query_order),
        ):
            app.router.add_post(path, handler)

    def rest_rate_limited(self) -> web.Response:
        return _envelope(None, code=2008, msg="Frequent requests")

    def _rest_refusal(self, request: web.Request) -> web.Response | None:
        """The signature covers the query string exactly as sent and must recover to the API
        wallet; the timestamp in it must be fresh (§2.2)."""
        query = request.rel_url.raw_query_string
        timestamp = request.query.get("timestamp", "")
        problem = None
        if not hmac.compare_digest(request.headers.get("APIKEY", ""), self.api_key):
            problem = "invalid apiKey"
        elif request.headers.get("X-SAPI-SIGN-TYPE") != "2":
            problem = "signType must be 2"
        elif (
            not timestamp.isdigit()
            or abs(int(self._clock() * 1000) - int(timestamp)) > self.timestamp_window_ms
        ):
            problem = "timestamp expired"
        else:
            try:
                signer = satori_signer(query, request.headers.get("signature", ""))
            except BadSatoriSignature:
                signer = ""
            if signer.lower() != self.wallet_address.lower():
                problem = "signature verification failed"
        if problem is None:
            return None
        self.rest_rejected += 1
        return _envelope(None, code=401, msg=problem, status=401)

    def _page(self, request: web.Request, rows: list[dict[str, Any]]) -> web.Response:
        return self._paged(request, rows)[0]

    def _paged(
        self, request: web.Request, rows: list[dict[str, Any]]
    ) -> tuple[web.Response, list[dict[str, Any]]]:
        pair = request.query.get("pairName")
        if pair is None:
            return _envelope(None, code=2002, msg="Required parameter: pairName"), []
        rows = [r for r in rows if r["symbol"] == pair]
        if "matchId" in request.query:  # fills before this match id (§2.7)
            rows = [r for r in rows if r["id"] < int(request.query["matchId"])]
        page, size = int(request.query.get("pageNo", "1")), int(request.query.get("pageSize", "10"))
        shown = rows[(page - 1) * size : page * size]
        return _envelope(shown), shown

    def shift_next_listing(self, orders: int = 0, positions: int = 0) -> None:
        """Fault: right after serving the first page of the next current-order (position)
        listing, cancel (close) `orders` (`positions`) of the items on it, pushing those
        ends as the venue would: the listing's next pages then start later than the client
        expects, and the first items of what was page 2 are on no page it reads."""
        self._shift = {"orders": orders, "positions": positions}

    async def _after_page(self, listing: str, request: web.Request, shown: list[Any]) -> None:
        count = self._shift[listing]
        if not count or request.query.get("pageNo", "1") != "1" or not shown:
            return
        self._shift[listing] = 0
        for row in shown[:count]:
            self.shifted.append((listing, row["id"]))
            if listing == "orders":
                await self.emit(self._cancel_order(row["id"]))
            else:
                await self.emit(self._close_position(row["id"]))

    async def _rest_balance(self, request: web.Request) -> web.Response:
        refusal = self._rest_refusal(request)
        if refusal is not None:
            return refusal
        balance = self.balances.get(request.query.get("symbol", ""))
        if balance is None:
            return _envelope(None, code=2001, msg="Illegal parameter: symbol")
        keys = ("coinId", "availableAmount", "frozenAmount", "symbol")
        return _envelope({"userId": 42471, **{k: balance[k] for k in keys}})

    async def _rest_orders(self, request: web.Request) -> web.Response:
        refusal = self._rest_refusal(request)
        if refusal is not None:
            return refusal
        current = [rest_order(self.orders[i]) for i in self._open_orders]
        response, shown = self._paged(request, current)
        await self._after_page("orders", request, shown)
        return response

    async def _rest_positions(self, request: web.Request) -> web.Response:
        refusal = self._rest_refusal(request)
        if refusal is not None:
            return refusal
        held = [rest_position(self.positions[i]) for i in self._open_positions]
        response, shown = self._paged(request, held)
        await self._after_page("positions", request, shown)
        return response

    async def _rest_fills(self, request: web.Request) -> web.Response:
        refusal = self._rest_refusal(request)
        return refusal or self._page(request, list(reversed(self.fills)))  # newest first

    async def _rest_query_order(self, request: web.Request) -> web.Response:
        refusal = self._rest_refusal(request)
        if refusal is not None:
            return refusal
        order = self.orders.get(int(request.query.get("entrustId", "0") or 0))
        if order is None:
            return _envelope(None, code=2001, msg="Illegal parameter: entrustId")
        return _envelope(rest_order(order))


def rest_order(order: dict[str, Any]) -> dict[str, Any]:
    """The REST shape of an order (§2.7 current order list): `id`, `isLong`, no changeType."""
    keys = (
        "clientOrderId",
        "contractPairId",
        "dealAmount",
        "dealQuantity",
        "isClose",
        "isMarket",
        "lever",
        "matchType",
        "price",
        "quantity",
        "symbol",
    )
    return {
        "id": order["currentEntrustId"],
        "isLong": order["direction"] == "LONG",
        **{k: order[k] for k in keys},
    }


def rest_position(position: dict[str, Any]) -> dict[str, Any]:
    """The REST shape of a held position (§2.7 position list)."""
    return {
        "id": position["positionId"],
        "contractPairId": position["contractPairId"],
        "isLong": position["direction"] == "LONG",
        "marginAmount": position["marginAmount"],
        "marginCallAmount": position["marginCallAmount"],
        "openingPrice": position["openingPrice"],
        "positionType": position["positionType"],
        "quantity": position["currentQuantity"],
        "remainingCloseQuantity": position["canClosedQuantity"],
        "status": 1,
        "symbol": position["symbol"],
    }


def _envelope(data: Any, code: int = 200, msg: str = "SUCCESS", status: int = 200) -> web.Response:
    body = {
        "error": code != 200,
        "code": code,
        "msg": msg,
        "data": data,
        "sid": "1809703344791625729",
    }
    return web.Response(text=json_text(body), content_type="application/json", status=status)
