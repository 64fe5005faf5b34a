"""Satori Finance websocket simulator (venues.md part 2).

Each subscription is verified the way the venue must do it, with the simulator's own code
(`wire.py`, not the bridge's): the EIP-191 signature over the decimal string of `timestamp`
must recover to the configured API wallet address, the API key
must match and the timestamp must be fresh. Success is acknowledged with the documented
`<event>_res` shape; failure with the same shape and `success:false` (undocumented, §2.8.2:
our stand-in). Pushes follow the documented envelopes: account updates with increasing
`logId`, orders NEW → TRADE… → filled or CANCELED, positions NEW/INCREASE/REDUCE/CLOSE, and
trade arrays (newest first) with prices as JSON numbers.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import random
import time
from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal
from typing import Any, Final

from bridge.dev.simulator.base import Event, Session
from bridge.dev.simulator.satori_rest import SatoriRest, rest_order, rest_position
from bridge.dev.simulator.wire import (
    SATORI_PERIODS,
    SATORI_SCOPE,
    BadSatoriSignature,
    json_text,
    satori_signer,
)

__all__ = ["SatoriSimulator", "rest_order", "rest_position"]

PRICES: Final = {"ETH-USD": "2318.83", "BTC-USD": "64000.5", "SOL-USD": "145.2"}
COIN_IDS: Final = {"USD": 4, "ETH": 2, "BTC": 1, "USDT": 5}
SIX: Final = Decimal("0.000001")


class SatoriSimulator(SatoriRest):
    """See the module docstring. `balances`/`orders`/`positions`/`trades` hold current state."""

    def __init__(
        self,
        api_key: str,
        wallet_address: str,
        *,
        coins: tuple[str, ...] = ("USD",),
        pairs: tuple[str, ...] = ("ETH-USD",),
        seed: int = 0,
        timestamp_window_ms: int = 30_000,
        clock: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.api_key = api_key
        self.wallet_address = wallet_address
        self.coins = coins
        self.pairs = pairs
        self.timestamp_window_ms = timestamp_window_ms
        self._clock = clock
        self._rng = random.Random(seed)
        self._log_ids: dict[str, int] = {}
        self.balances: dict[str, dict[str, Any]] = {}
        self.orders: dict[int, dict[str, Any]] = {}
        self.positions: dict[int, dict[str, Any]] = {}
        self._open_orders: list[int] = []
        self._open_positions: list[int] = []
        for coin in coins:  # every coin has a balance before anything changes it
            self._log_ids[coin] = self._rng.randint(1000, 5000)
            self.balances[coin] = {
                "availableAmount": str(self._amount("1000", "999999")),
                "coinId": COIN_IDS.get(coin, 99),
                "frozenAmount": "0",
                "logId": self._log_ids[coin],
                "operateAmount": "0",
                "symbol": coin,
            }
        self._next_order = 180632923
        self._next_position = 4796701
        self._next_match = 19868095
        self.reject_next = 0  # fault injection: refuse this many more subscriptions
        self.fills: list[dict[str, Any]] = []  # the account's own fills, oldest first
        # Fault: end this many items of the next first page served of each list right after
        # serving it, so the list's later pages shift (see `shift_next_listing`).
        self._shift = {"orders": 0, "positions": 0}
        self.shifted: list[tuple[str, int]] = []  # (list, id) of every item ended that way

    # -- requests -----------------------------------------------------------------------
    async def handle_request(self, session: Session, text: str) -> None:
        request, problem = self._check_request(text)
        event = str(request.get("event", ""))
        scope_key = SATORI_SCOPE.get(event, "pair")
        ack: dict[str, Any] = {
            "event": f"{event}_res",
            "method": request.get("method", "SUBSCRIBE"),
        }
        if problem is None and self.reject_next > 0:
            self.reject_next -= 1
            problem = "signature verification failed (fault injection)"
        if problem is not None:
            ack.update(msg=problem, success=False)
            ack[scope_key] = request.get(scope_key)
            await self.reject(session, json_text(ack))
            return
        scope = str(request[scope_key])
        if request["method"] == "UNSUBSCRIBE":
            session.subscriptions.discard(f"{event}:{scope}")
            ack.update(msg=f"unsubscribe success: {event}", success=True)
        else:
            # Active before it is acknowledged, as a venue's would be: a client that snapshots
            # once acknowledged must find every later change pushed.
            self.accept(session, f"{event}:{scope}")
            ack.update(msg=f"subscribe success: {event}", success=True)
        ack[scope_key] = scope
        await session.ws.send(json_text(ack))

    def _check_request(self, text: str) -> tuple[dict[str, Any], str | None]:
        try:
            request = json.loads(text)
        except ValueError:
            return {}, "request is not JSON"
        if not isinstance(request, dict):
            return {}, "request is not an object"
        event, method = request.get("event"), request.get("method")
        if event not in SATORI_SCOPE or method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
            return request, "unknown event or method"
        scope = request.get(SATORI_SCOPE[event])
        if not isinstance(scope, str) or not scope:
            return request, f"{SATORI_SCOPE[event]} is required"
        if event == "api_trade" and request.get("period") not in SATORI_PERIODS:
            return request, "period is required"
        if str(request.get("signType")) != "2":
            return request, "signType must be 2"
        key, signature, timestamp = (
            request.get("apiKey"),
            request.get("signature"),
            request.get("timestamp"),
        )
        if not isinstance(key, str) or not hmac.compare_digest(key, self.api_key):
            return request, "invalid apiKey"
        if not isinstance(timestamp, int) or isinstance(timestamp, bool):
            return request, "timestamp must be a number"
        if self._expired(timestamp):
            return request, "timestamp expired"
        try:
            signer = satori_signer(str(timestamp), str(signature))
        except BadSatoriSignature:
            return request, "signature verification failed"
        if signer.lower() != self.wallet_address.lower():
            return request, "signature verification failed"
        return request, None

    def _expired(self, timestamp_ms: int) -> bool:
        """No window is documented (§2.8.3); ours is `timestamp_window_ms` either way."""
        return abs(int(self._clock() * 1000) - timestamp_ms) > self.timestamp_window_ms

    # -- events -------------------------------------------------------------------------
    def next_event(self) -> Event:
        roll = self._rng.random()
        if roll < 0.2:
            return self._account_event()
        if roll < 0.55:
            return self._order_event()
        if roll < 0.75:
            return self._position_event()
        return self._trade_event()

    def _push(self, event: str, data: Any, scope: str, echo: dict[str, str] | None = None) -> Event:
        envelope = {"data": data, "event": event, "success": True, **(echo or {})}
        return Event(event, data, json_text(envelope), frozenset({f"{event}:{scope}"}))

    def _amount(self, low: str, high: str, quantum: Decimal = SIX) -> Decimal:
        value = Decimal(str(self._rng.uniform(float(low), float(high))))
        return value.quantize(quantum, rounding=ROUND_DOWN)

    def _account_event(self) -> Event:
        coin = self._rng.choice(self.coins)
        log_id = self._log_ids[coin] + self._rng.randint(1, 9)
        self._log_ids[coin] = log_id
        available = self._amount("1000", "999999")
        change = available - Decimal(self.balances[coin]["availableAmount"])
        data = {
            "availableAmount": str(available),
            "coinId": COIN_IDS.get(coin, 99),
            "frozenAmount": str(self._amount("0", "500")),
            "logId": log_id,
            "operateAmount": str(change),
            "symbol": coin,
        }
        self.balances[coin] = data
        return self._push("api_account", dict(data), coin, {"symbol": coin})

    async def open_items(self, orders: int = 0, positions: int = 0) -> None:
        """Open this many new orders and positions now (pushed to whoever is subscribed)."""
        for _ in range(orders):
            await self.emit(self._new_order())
        for _ in range(positions):
            await self.emit(self._new_position())

    def _order_event(self) -> Event:
        if self._open_orders and self._rng.random() < 0.6:
            return self._advance_order(self._rng.choice(self._open_orders))
        return self._new_order()

    def _new_order(self) -> Event:
        pair = self._rng.choice(self.pairs)
        self._next_order += self._rng.randint(1, 50)
        price = Decimal(PRICES.get(pair, "100")) * self._amount("0.97", "1.03", Decimal("0.0001"))
        data: dict[str, Any] = {
            "changeType": "NEW",
            "clientOrderId": str(int(self._clock() * 1000)),
            "contractPairId": 1,
            "currentEntrustId": self._next_order,
            "dealAmount": "0.00",
            "dealQuantity": "0",
            "direction": self._rng.choice(("LONG", "SHORT")),
            "isClose": self._rng.random() < 0.2,
            "isMarket": self._rng.random() < 0.3,
            "lever": self._rng.choice((1, 5, 10, 20)),
            "matchType": 1,
            "price": str(price.quantize(Decimal("0.01"))),
            "quantity": str(self._amount("0.01", "2", Decimal("0.01"))),
            "symbol": pair,
        }
        self.orders[self._next_order] = data
        self._open_orders.append(self._next_order)
        return self._push("api_entrust", dict(data), pair)

    def _cancel_order(self, order_id: int) -> Event:
        order = self.orders[order_id]
        for key in ("nowDealQuantity", "feeCoin", "feeAmt", "isTaker"):
            order.pop(key, None)
        order["changeType"] = "CANCELED"
        self._open_orders.remove(order_id)
        return self._push("api_entrust", dict(order), order["symbol"])

    def _close_position(self, position_id: int) -> Event:
        position = self.positions[position_id]
        current = position["currentQuantity"]
        position.update(
            changeType="CLOSE", currentQuantity="0", operateQuantity=current, canClosedQuantity="0"
        )
        self._open_positions.remove(position_id)
        return self._push("api_position", dict(position), position["symbol"])

    def _advance_order(self, order_id: int) -> Event:
        order = self.orders[order_id]
        for key in ("nowDealQuantity", "feeCoin", "feeAmt", "isTaker"):
            order.pop(key, None)
        quantity, filled = Decimal(order["quantity"]), Decimal(order["dealQuantity"])
        if self._rng.random() < 0.2:
            order["changeType"] = "CANCELED"
        else:
            remaining = quantity - filled
            fill = (
                remaining
                if self._rng.random() < 0.5
                else (remaining / 2).quantize(Decimal("0.001"))
            )
            fill = fill or remaining
            notional = fill * Decimal(order["price"])
            order.update(
                changeType="TRADE",
                dealQuantity=str(filled + fill),
                dealAmount=str((Decimal(order["dealAmount"]) + notional).quantize(SIX)),
                nowDealQuantity=str(fill),
                feeCoin="USD",
                feeAmt=str((notional * Decimal("0.0005")).quantize(SIX)),
                isTaker=self._rng.random() < 0.5,
            )
            self._record_fill(order, fill, notional)
        if order["changeType"] == "CANCELED" or Decimal(order["dealQuantity"]) >= quantity:
            self._open_orders.remove(order_id)
        return self._push("api_entrust", dict(order), order["symbol"])

    def _record_fill(self, order: dict[str, Any], quantity: Decimal, notional: Decimal) -> None:
        self._next_match += self._rng.randint(1, 12)
        now_ms = int(self._clock() * 1000)
        self.fills.append(
            {
                "id": self._next_match,
                "entrustId": order["currentEntrustId"],
                "amount": str(notional.quantize(SIX)),
                "averagePrice": order["price"],
                "contractPairId": 1,
                "createTime": dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).strftime(
                    "%Y-%m-%d %H:%M:%S"
                ),
                "createTimeStamp": now_ms,
                "isClose": order["isClose"],
                "isLong": order["direction"] == "LONG",
                "isTaker": order["isTaker"],
                "quantity": str(quantity),
                "symbol": order["symbol"],
                "tradeFee": order["feeAmt"],
                "accountCoinSymbol": "USD",
            }
        )

    def _position_event(self) -> Event:
        if self._open_positions and self._rng.random() < 0.7:
            position = self.positions[self._rng.choice(self._open_positions)]
            current = Decimal(position["currentQuantity"])
            change = self._rng.choice(("INCREASE", "REDUCE", "CLOSE"))
            # Every change moves the quantity: at least one lot (0.01); a reduce that would
            # leave nothing is a close.
            delta = max((current / 2).quantize(Decimal("0.01")), Decimal("0.01"))
            if change == "REDUCE" and delta >= current:
                change = "CLOSE"
            if change == "CLOSE":
                delta = current
            current = current + delta if change == "INCREASE" else current - delta
            position.update(
                changeType=change,
                currentQuantity=str(current),
                operateQuantity=str(delta),
                canClosedQuantity=str(current),
            )
            if change == "CLOSE" or current == 0:
                self._open_positions.remove(position["positionId"])
            return self._push("api_position", dict(position), position["symbol"])
        return self._new_position()

    def _new_position(self) -> Event:
        pair = self._rng.choice(self.pairs)
        self._next_position += self._rng.randint(1, 9)
        quantity = str(self._amount("0.01", "1", Decimal("0.01")))
        data = {
            "canClosedQuantity": quantity,
            "changeType": "NEW",
            "contractPairId": 1,
            "currentQuantity": quantity,
            "direction": self._rng.choice(("LONG", "SHORT")),
            "marginAmount": str(self._amount("10", "500")),
            "marginCallAmount": "7.5",
            "openingPrice": str(self._amount("2200", "2400", Decimal("0.001"))),
            "operateQuantity": "0",
            "positionId": self._next_position,
            "positionType": self._rng.choice((3, 4)),
            "symbol": pair,
        }
        self.positions[self._next_position] = data
        self._open_positions.append(self._next_position)
        return self._push("api_position", dict(data), pair)

    def _trade_event(self) -> Event:
        pair = self._rng.choice(self.pairs)
        base = Decimal(PRICES.get(pair, "100"))
        now = int(self._clock())
        trades = []
        for _ in range(self._rng.randint(1, 3)):
            self._next_match += self._rng.randint(1, 12)
            price = (base * self._amount("0.99", "1.01", Decimal("0.0001"))).quantize(
                Decimal("0.01")
            )
            quantity = self._amount("0.001", "2", Decimal("0.001"))
            trades.append(
                {
                    "amount": (price * quantity).quantize(Decimal("0.00001")),
                    "contractMatchPairId": self._next_match,
                    "contractPairId": 1,
                    "isLong": self._rng.random() < 0.5,
                    "pair": pair,
                    "price": price,
                    "quantity": quantity,
                    "time": dt.datetime.fromtimestamp(now, dt.UTC).strftime("%H:%M:%S"),
                    "timestamp": now * 1000,
                }
            )
        trades.reverse()  # newest first, as in the docs' example
        return self._push("api_trade", trades, pair, {"pair": pair})
