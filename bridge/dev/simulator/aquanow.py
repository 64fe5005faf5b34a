"""Aquanow reporting websocket simulator (venues.md part 1).

Verifies each (un)subscribe exactly as the docs define it, with its own code
(`wire.py`, not the bridge's): `apiSignature` must equal HMAC-SHA384(secret,
JSON.stringify({type, channel, nonce})) and the nonce must be fresh. A bad
key, signature or stale nonce is answered with an error frame and a close (the venue's exact
behaviour is undocumented, §1.8.1: this is our stand-in). Pushes follow the AuthenticateObject
envelope with UserBalancesObject, OrdersObject and tradeCreditBalance payloads, Latest or
Legacy shapes, with orders moving through realistic status sequences (§1.4.2).
"""

from __future__ import annotations

import hmac
import json
import random
import time
import uuid
from collections.abc import Callable, Mapping
from decimal import ROUND_DOWN, Decimal
from typing import Any, Final

from aiohttp import web

from bridge.dev.simulator.base import Event, Session, VenueSimulator
from bridge.dev.simulator.wire import (
    AQUANOW_CHANNELS,
    aquanow_rest_signed_text,
    aquanow_signature,
    aquanow_ws_signed_text,
    json_text,
)

# Which pushes each channel carries (§1.3). Where credit pushes travel is undocumented: we
# send them with balances.
CHANNELS_FOR: Final = {
    "balance": frozenset({"executionReport", "balanceReport"}),
    "tradeCreditBalance": frozenset({"executionReport", "balanceReport"}),
    "order": frozenset({"executionReport", "parentOrderReport"}),
}
PAIRS: Final = (("BTC", "USD", "64000"), ("ETH", "CAD", "4300"), ("XRP", "CAD", "0.35"))
ASSETS: Final = ("BTC", "ETH", "XRP", "USD", "CAD")
EIGHT: Final = Decimal("0.00000001")
# Order outcomes and the status sequence each one walks through.
OUTCOMES: Final = (
    ("fill", 0.55),
    ("cancel", 0.2),
    ("twap_partial", 0.1),
    ("expire", 0.1),
    ("error", 0.05),
)


class AquanowSimulator(VenueSimulator):
    """See the module docstring. `sent`/`events` hold the ground truth; `orders`/`balances`/
    `credit` hold the current state a REST snapshot would return."""

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        account_id: str = "CA1000051R",
        username: str = "helloWorld",
        legacy: bool = False,
        seed: int = 0,
        nonce_window_ms: int = 30_000,
        clock: Callable[[], float] = time.time,
        extra_credentials: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.api_key = api_key
        # Every API key the venue knows (one per simulated account in fan-out runs); nonces
        # are checked per key, like a venue would.
        self._secrets = {api_key: api_secret, **(extra_credentials or {})}
        self.account_id = account_id
        self.username = username
        self.legacy = legacy
        self.nonce_window_ms = nonce_window_ms
        self._clock = clock
        self._rng = random.Random(seed)
        self._last_nonce: dict[str, int] = {}  # per API key, websocket requests
        self._last_ms = 0
        self.balances: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self._plans: dict[str, list[str]] = {}
        self.credit: dict[str, Any] | None = None
        self.reject_next = 0  # fault injection: refuse this many more subscriptions
        self._last_rest_nonce: dict[str, int] = {}  # per API key, REST requests
        self.lookups = 0  # order lookups by id (GET /trades/v1/order?orderId=…)
        self.lookups_refused = 0  # of those, refused (e.g. without the accountId)
        self.fail_lookups: set[str] = set()  # fault: lookups of these order ids answer 500

    # -- requests -----------------------------------------------------------------------
    async def handle_request(self, session: Session, text: str) -> None:
        problem, channel, action = self._check_request(text)
        if problem is not None or self.reject_next > 0:
            self.reject_next = max(self.reject_next - 1, 0)
            message = f"Unauthorized: {problem or 'rejected by fault injection'}"
            frame = json.dumps({"type": "error", "message": message})
            await self.reject(session, frame, close=(1008, "unauthorized"))
            return
        assert channel is not None
        if action == "subscribe":
            self.accept(session, channel)
        else:
            session.subscriptions.discard(channel)

    def _check_request(self, text: str) -> tuple[str | None, str | None, str | None]:
        """(problem, channel, action); problem is None when the request is valid."""
        try:
            request = json.loads(text)
        except ValueError:
            return "request is not JSON", None, None
        if not isinstance(request, dict):
            return "request is not an object", None, None
        action, channel = request.get("type"), request.get("channel")
        nonce, key = request.get("nonce"), request.get("apiKey")
        signature = request.get("apiSignature")
        if action not in ("subscribe", "unsubscribe") or channel not in AQUANOW_CHANNELS:
            return "unknown type or channel", None, None
        if not (isinstance(nonce, str) and isinstance(key, str) and isinstance(signature, str)):
            return "nonce, apiKey and apiSignature must be strings", None, None
        signed = aquanow_ws_signed_text(action, channel, nonce)
        problem = self._authenticate(key, signature, signed, nonce, self._last_nonce)
        return (problem, None, None) if problem else (None, channel, action)

    def _authenticate(
        self, key: str, signature: str, signed: str, nonce: str, last_nonces: dict[str, int]
    ) -> str | None:
        """HMAC-SHA384 of `signed` with the key's secret (§1.2), then the nonce: the only
        documented rule is "an outdated nonce gives 401"; we also refuse a nonce not above the
        last one accepted for the key (a replay)."""
        secret = self._secrets.get(key)
        if secret is None:
            return "unknown apiKey"
        if not hmac.compare_digest(signature, aquanow_signature(secret, signed)):
            return "invalid signature"
        if not nonce.isdigit():
            return "nonce is not numeric"
        if abs(int(self._clock() * 1000) - int(nonce)) > self.nonce_window_ms:
            return "nonce outdated"
        if int(nonce) <= last_nonces.get(key, 0):
            return "nonce already used"
        last_nonces[key] = int(nonce)
        return None

    # -- REST (§1.7): the same objects as the pushes, from the current state -------------
    def add_rest_routes(self, app: web.Application) -> None:
        app.router.add_get("/users/v1/userbalance", self._rest_balances)
        app.router.add_get("/trades/v1/order", self._rest_orders)
        app.router.add_get("/users/v1/tradeCreditBalance", self._rest_credit)

    def _rest_refusal(self, request: web.Request) -> web.Response | None:
        """Verify x-api-key / x-nonce / x-signature: HMAC over {httpMethod, path, nonce} with
        the bare path (§1.2); then the account scope (Latest accounts need accountId)."""
        key = request.headers.get("x-api-key", "")
        nonce = request.headers.get("x-nonce", "")
        signature = request.headers.get("x-signature", "")
        signed = aquanow_rest_signed_text(request.method, request.path, nonce)
        problem = self._authenticate(key, signature, signed, nonce, self._last_rest_nonce)
        if problem is not None:
            self.rest_rejected += 1
            return web.json_response({"message": f"Unauthorized: {problem}"}, status=401)
        if not self.legacy and request.query.get("accountId") != self.account_id:
            return web.json_response({"message": "Please provide an accountId"}, status=400)
        return None

    async def _rest_balances(self, request: web.Request) -> web.Response:
        refusal = self._rest_refusal(request)
        return refusal or _json(list(self.balances.values()))

    async def _rest_orders(self, request: web.Request) -> web.Response:
        query = request.query
        self.lookups += "orderId" in query
        refusal = self._rest_refusal(request)
        if refusal is not None:
            self.lookups_refused += "orderId" in query
            return refusal
        if query.get("orderId") in self.fail_lookups:
            return web.json_response({"message": "Internal server error"}, status=500)
        orders = list(self.orders.values())
        if "orderId" in query:
            orders = [o for o in orders if o["orderId"] == query["orderId"]]
        if query.get("openOrders") == "true":
            orders = [o for o in orders if o["tradeStatus"] not in FINAL]
        if "startTime" in query and "endTime" in query:
            start, end = int(query["startTime"]), int(query["endTime"])
            orders = [o for o in orders if start <= _updated(o) <= end]
        return _json(orders)

    async def _rest_credit(self, request: web.Request) -> web.Response:
        refusal = self._rest_refusal(request)
        if refusal is not None:
            return refusal
        if self.credit is None:
            return web.json_response({"message": "Credit balance does not exist"}, status=400)
        return _json({**self.credit, "creditLimitUsd": Decimal(1_000_000)})

    # -- events -------------------------------------------------------------------------
    def next_event(self) -> Event:
        roll = self._rng.random()
        if self.orders and roll < 0.5 and self._plans:
            return self._advance_order(self._rng.choice(sorted(self._plans)))
        if roll < 0.75:
            return self._new_order()
        if roll < 0.95:
            return self._balance_event()
        return self._credit_event()

    def _now_ms(self) -> int:
        self._last_ms = max(int(self._clock() * 1000), self._last_ms + 1)
        return self._last_ms

    def _event(self, kind: str, payload: dict[str, Any]) -> Event:
        text = json_text({"type": kind, "payload": payload})
        return Event(kind, payload, text, CHANNELS_FOR[kind])

    def _owner(self) -> dict[str, Any]:
        return {} if self.legacy else {"accountId": self.account_id}

    def _amount(self, low: str, high: str, places: Decimal = EIGHT) -> Decimal:
        value = Decimal(str(self._rng.uniform(float(low), float(high))))
        return value.quantize(places, rounding=ROUND_DOWN)

    def _new_order(self) -> Event:
        base, quote, price = self._rng.choice(PAIRS)
        now = self._now_ms()
        outcome = self._rng.choices([o for o, _ in OUTCOMES], [w for _, w in OUTCOMES])[0]
        strategy = "TWAP" if outcome == "twap_partial" else self._rng.choice(("LIMIT", "MARKET"))
        order_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        size = self._amount("0.01", "3")
        limit = (Decimal(price) * self._amount("0.98", "1.02", Decimal("0.0001"))).quantize(EIGHT)
        order: dict[str, Any] = {
            **self._owner(),
            "orderId": order_id,
            "orderIdParent": order_id,
            "symbol": f"{base}-{quote}",
            "baseSymbol": base,
            "quoteSymbol": quote,
            "strategy": strategy,
            "orderType": "parentOrder",
            "tradeSide": self._rng.choice(("buy", "sell")),
            "tradeSize": size,
            "tradeStatus": "CREATE",
            "fillPct": 0,
            "fillQtyBase": 0,
            "fillQtyQuote": 0,
            "remainingQtyBase": size,
            "finalizeReturnedQtyBase": 0,
            "tradePriceAvg": "-",
            "priceLimit": limit,
            "priceArrival": Decimal(price),
            "priceMarket": "-",
            "commissionRate": 20,
            "exchangeOrderId": "-",
            "exchangeClientOrderId": "-",
            "message": "-",
            "createdAt": now,
            "username": self.username,
        }
        if self.legacy:
            order.update(itemDateTime=now, tradeTime=now, childOrderCount=0, fillFeeQuote=0)
        else:
            order.update(updatedAt=now, fillFeeQuoteAqua=0)
        self.orders[order_id] = order
        self._plans[order_id] = self._plan(outcome)
        return self._event("order", dict(order))

    def _plan(self, outcome: str) -> list[str]:
        fills = ["AWAITING"] * self._rng.randint(1, 3)
        return {
            "fill": [*fills, "COMPLETE"],
            "cancel": [fills[0], "CANCEL_PENDING", "CANCELLED"],
            "twap_partial": [*fills, "PARTIAL_COMPLETE"],
            "expire": ["EXPIRED"],
            "error": ["ERROR"],
        }[outcome]

    def _advance_order(self, order_id: str) -> Event:
        order = self.orders[order_id]
        status = self._plans[order_id].pop(0)
        if not self._plans[order_id]:
            del self._plans[order_id]
        size, filled = order["tradeSize"], Decimal(order["fillQtyBase"])
        if status == "AWAITING" or (status == "COMPLETE" and filled < size):
            fill = size - filled if status == "COMPLETE" else (size - filled) * Decimal("0.4")
            self._fill(order, fill.quantize(EIGHT, rounding=ROUND_DOWN))
        if status == "ERROR":
            order["message"] = "Insufficient liquidity"
        order["tradeStatus"] = status
        now = self._now_ms()
        order["itemDateTime" if self.legacy else "updatedAt"] = now
        return self._event("order", dict(order))

    def _fill(self, order: dict[str, Any], quantity: Decimal) -> None:
        if quantity <= 0:
            return
        price = order["priceLimit"]
        filled = Decimal(order["fillQtyBase"]) + quantity
        quote = (Decimal(order["fillQtyQuote"]) + quantity * price).quantize(EIGHT)
        fee = (quote * Decimal(order["commissionRate"]) / 10_000).quantize(EIGHT)
        order.update(
            fillQtyBase=filled,
            fillQtyQuote=quote,
            remainingQtyBase=order["tradeSize"] - filled,
            fillPct=(filled * 100 / order["tradeSize"]).quantize(Decimal("0.01")),
            tradePriceAvg=(quote / filled).quantize(EIGHT),
        )
        order["fillFeeQuote" if self.legacy else "fillFeeQuoteAqua"] = fee

    def _balance_event(self) -> Event:
        asset = self._rng.choice(ASSETS)
        now = self._now_ms()
        total = self._amount("0", "250")
        available = (total * self._amount("0.5", "1", Decimal("0.01"))).quantize(EIGHT)
        balance: dict[str, Any] = {
            "createdAt": 1554400262916,
            **self._owner(),
            "symbol": asset,
            "totalBalance": total,
            "depositAddress": "-",
            "usernameSymbol": f"{self.username}_{asset}",
            "pendingTransfer": 0,
            "itemDateTime": now,
            "availableBalance": available,
            "pending": total - available,
            "username": self.username,
        }
        if not self.legacy:
            balance["updatedAt"] = now
        self.balances[asset] = balance
        return self._event("balance", dict(balance))

    def _credit_event(self) -> Event:
        now = self._now_ms()
        credit: dict[str, Any] = {
            **self._owner(),
            "adjustedMtmUSD": self._amount("10000", "90000", Decimal("0.00000000001")),
            "createdAt": 1701366866377,
            "ltv": self._amount("50", "250", Decimal("0.00000000001")),
            "unutilizedCreditUSD": self._amount("100000", "999999", Decimal("0.0000000001")),
            "updatedAt": now,
            "username": self.username,
        }
        self.credit = credit
        return self._event("tradeCreditBalance", dict(credit))


FINAL: Final = frozenset({"COMPLETE", "PARTIAL_COMPLETE", "EXPIRED", "CANCELLED", "ERROR"})


def _updated(order: dict[str, Any]) -> int:
    return int(order.get("updatedAt") or order.get("itemDateTime") or 0)


def _json(value: Any) -> web.Response:
    return web.Response(text=json_text(value), content_type="application/json")
