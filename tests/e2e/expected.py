"""What each simulated venue push must become on Kafka, written independently of the bridge's
parsers (from the venue docs and DESIGN.md's record contract), for the end-to-end tests."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

from bridge.dev.simulator.base import Sent


def ms(value: int | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value / 1000, dt.UTC)


def dec(value: Any) -> Decimal | None:
    return None if value in (None, "-") else Decimal(value)


def common(sent: Sent, stream: str, account: str | None, venue: str = "aquanow") -> dict[str, Any]:
    return {
        "venue": venue,
        "stream": stream,
        "account": account,
        "source": "stream",
        "raw": sent.text,
    }


def expected_balance(sent: Sent, stream: str, fallback: str | None) -> dict[str, Any]:
    p = sent.payload
    return {
        **common(sent, stream, p.get("accountId") or p["username"] or fallback),
        "event_time": ms(p.get("updatedAt") or p["itemDateTime"]),
        "asset": p["symbol"],
        "available": dec(p["availableBalance"]),
        "total": dec(p["totalBalance"]),
        "frozen": None,
        "pending": dec(p.get("pending")),
        "pending_transfer": dec(p["pendingTransfer"]),
        "credit": None,
        "change": None,
        "version": None,
        "deposit_address": None if p["depositAddress"] in ("-", "") else p["depositAddress"],
    }


STATUS = {
    "CREATE": "new",
    "AWAITING": "open",
    "CANCEL_PENDING": "cancel_pending",
    "COMPLETE": "filled",
    "PARTIAL_COMPLETE": "partially_filled",
    "EXPIRED": "expired",
    "CANCELLED": "canceled",
    "ERROR": "rejected",
}
FINAL = {"COMPLETE", "PARTIAL_COMPLETE", "EXPIRED", "CANCELLED", "ERROR"}


def expected_order(sent: Sent, stream: str, fallback: str | None) -> dict[str, Any]:
    p = sent.payload
    status = STATUS[p["tradeStatus"]]
    if status in ("new", "open") and Decimal(p["fillQtyBase"]) > 0:
        status = "partially_filled"
    fee = p.get("fillFeeQuoteAqua", p.get("fillFeeQuote"))
    return {
        **common(sent, stream, p.get("accountId") or p["username"] or fallback),
        "event_time": ms(p.get("updatedAt") or p["itemDateTime"]),
        "order_id": p["orderId"],
        "client_order_id": None,
        "parent_order_id": p["orderIdParent"],
        "symbol": p["symbol"],
        "base_asset": p["baseSymbol"],
        "quote_asset": p["quoteSymbol"],
        "side": p["tradeSide"],
        "side_raw": p["tradeSide"],
        "order_type": p["strategy"],
        "status": status,
        "status_raw": p["tradeStatus"],
        "is_final": p["tradeStatus"] in FINAL,
        "change_type": None,
        "quantity": dec(p["tradeSize"]),
        "price": dec(p["priceLimit"]),
        "filled_quantity": dec(p["fillQtyBase"]),
        "filled_quote": dec(p["fillQtyQuote"]),
        "last_fill_quantity": None,
        "average_price": dec(p["tradePriceAvg"]),
        "remaining_quantity": dec(p["remainingQtyBase"]),
        "fee": dec(fee),
        "fee_asset": p["quoteSymbol"],
        "is_taker": None,
        "reduce_only": None,
        "leverage": None,
        "created_at": ms(p["createdAt"]),
    }


def expected_credit(sent: Sent, stream: str, fallback: str | None) -> dict[str, Any]:
    p = sent.payload
    return {
        **common(sent, stream, p.get("accountId") or p["username"] or fallback),
        "event_time": ms(p["updatedAt"]),
        "asset": "USD",
        "adjusted_mtm": dec(p["adjustedMtmUSD"]),
        "ltv": dec(p["ltv"]),
        "unutilized_credit": dec(p["unutilizedCreditUSD"]),
        "credit_limit": None,
        "created_at": ms(p["createdAt"]),
    }


EXPECT = {
    "balance": ("balances", expected_balance),
    "order": ("orders", expected_order),
    "tradeCreditBalance": ("credit", expected_credit),
}


# -- Satori (venues.md §2.4) ---------------------------------------------------------------
class SameJSON:
    """Equal to a JSON text whose value (numbers as exact decimals) equals `value`: the
    contract for a re-serialized item's `raw` is its exact values, not its formatting."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and json.loads(other, parse_float=Decimal) == self.value

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SameJSON({self.value!r})"


def satori_common(item: Any, stream: str, account: str | None) -> dict[str, Any]:
    return {
        "venue": "satori",
        "stream": stream,
        "account": account,
        "source": "stream",
        "raw": SameJSON(item),
    }


def expected_satori(sent: Sent, stream: str, wallet: str) -> list[tuple[str, dict[str, Any]]]:
    p = sent.payload
    if sent.kind == "api_account":
        available, frozen = Decimal(p["availableAmount"]), Decimal(p["frozenAmount"])
        return [
            (
                "balances",
                {
                    **satori_common(p, stream, wallet),
                    "event_time": None,
                    "asset": p["symbol"],
                    "available": available,
                    "frozen": frozen,
                    "total": available + frozen,
                    "pending": None,
                    "pending_transfer": None,
                    "credit": None,
                    "change": Decimal(p["operateAmount"]),
                    "version": p["logId"],
                    "deposit_address": None,
                },
            )
        ]
    if sent.kind == "api_entrust":
        quantity, filled = Decimal(p["quantity"]), Decimal(p["dealQuantity"])
        if p["changeType"] == "CANCELED":
            status, final = "canceled", True
        elif filled >= quantity:
            status, final = "filled", True
        else:
            status, final = ("partially_filled" if filled else "new"), False
        base, quote = p["symbol"].split("-")
        return [
            (
                "orders",
                {
                    **satori_common(p, stream, wallet),
                    "event_time": None,
                    "order_id": str(p["currentEntrustId"]),
                    "client_order_id": p["clientOrderId"],
                    "parent_order_id": None,
                    "symbol": p["symbol"],
                    "base_asset": base,
                    "quote_asset": quote,
                    "side": {"LONG": "buy", "SHORT": "sell"}[p["direction"]],
                    "side_raw": p["direction"],
                    "order_type": "MARKET" if p["isMarket"] else "LIMIT",
                    "status": status,
                    "status_raw": p["changeType"],
                    "is_final": final,
                    "change_type": p["changeType"],
                    "quantity": quantity,
                    "price": Decimal(p["price"]),
                    "filled_quantity": filled,
                    "filled_quote": Decimal(p["dealAmount"]),
                    "last_fill_quantity": dec(p.get("nowDealQuantity")),
                    "average_price": None,
                    "remaining_quantity": None,
                    "fee": dec(p.get("feeAmt")),
                    "fee_asset": p.get("feeCoin"),
                    "is_taker": p.get("isTaker"),
                    "reduce_only": p["isClose"],
                    "leverage": p["lever"],
                    "created_at": None,
                },
            )
        ]
    if sent.kind == "api_position":
        return [
            (
                "positions",
                {
                    **satori_common(p, stream, wallet),
                    "event_time": None,
                    "position_id": str(p["positionId"]),
                    "symbol": p["symbol"],
                    "side": p["direction"].lower(),
                    "side_raw": p["direction"],
                    "change_type": p["changeType"],
                    "is_open": p["changeType"] not in ("CLOSE", "LIQUIDATE")
                    and Decimal(p["currentQuantity"]) != 0,
                    "quantity": Decimal(p["currentQuantity"]),
                    "change_quantity": Decimal(p["operateQuantity"]),
                    "closable_quantity": Decimal(p["canClosedQuantity"]),
                    "entry_price": Decimal(p["openingPrice"]),
                    "margin": Decimal(p["marginAmount"]),
                    "margin_call_amount": Decimal(p["marginCallAmount"]),
                    "margin_mode": {3: "isolated", 4: "cross"}[p["positionType"]],
                },
            )
        ]
    assert sent.kind == "api_trade", sent.kind
    return [
        (
            "trades",
            {
                **satori_common(t, stream, None),
                "event_time": ms(t["timestamp"]),
                "trade_id": str(t["contractMatchPairId"]),
                "symbol": t["pair"],
                "price": t["price"],
                "quantity": t["quantity"],
                "amount": t["amount"],
                "side": "buy" if t["isLong"] else "sell",
                "side_raw": "LONG" if t["isLong"] else "SHORT",
                "order_id": None,
                "fee": None,
                "fee_asset": None,
                "is_taker": None,
            },
        )
        for t in p
    ]


def expected_aquanow(
    sent: Sent, stream: str, fallback: str | None
) -> list[tuple[str, dict[str, Any]]]:
    topic, build = EXPECT[sent.kind]
    return [(topic, build(sent, stream, fallback))]


RECORD_NAMES = {
    "balances": "Balance",
    "orders": "Order",
    "positions": "Position",
    "trades": "Trade",
    "credit": "CreditBalance",
    "deadletter": "DeadLetter",
}


# -- convergence: what the last record of each key must say, from the simulators' state ----
Truth = dict[tuple[str, str], dict[str, Any]]
AQUANOW_FINAL = {"COMPLETE", "PARTIAL_COMPLETE", "EXPIRED", "CANCELLED", "ERROR"}


def aquanow_truth(sim: Any) -> Truth:
    """Every balance, order (ended ones too: the REST window query finds them) and the credit
    line of an Aquanow simulator."""
    account = sim.username if sim.legacy else sim.account_id
    truth: Truth = {}
    for asset, b in sim.balances.items():
        truth[("balances", f"aquanow|{account}|{asset}")] = {
            "available": dec(b["availableBalance"]),
            "total": dec(b["totalBalance"]),
        }
    for order_id, o in sim.orders.items():
        truth[("orders", f"aquanow|{account}|{order_id}")] = {
            "status_raw": o["tradeStatus"],
            "filled_quantity": dec(o["fillQtyBase"]),
            "is_final": o["tradeStatus"] in AQUANOW_FINAL,
        }
    if sim.credit is not None:
        truth[("credit", f"aquanow|{account}|USD")] = {
            "ltv": dec(sim.credit["ltv"]),
            "unutilized_credit": dec(sim.credit["unutilizedCreditUSD"]),
        }
    return truth


def satori_truth(sim: Any, wallet: str, published: set[tuple[str, str]]) -> Truth:
    """Every balance; every order and position that is open, or that the bridge published.
    (An order or position that began and ended inside a gap is invisible to Satori's
    documented REST API: only its fills are listed.)"""
    truth: Truth = {}
    for coin, b in sim.balances.items():
        truth[("balances", f"satori|{wallet}|{coin}")] = {
            "available": Decimal(b["availableAmount"]),
            "frozen": Decimal(b["frozenAmount"]),
        }
    for order_id, o in sim.orders.items():
        key = ("orders", f"satori|{wallet}|{order_id}")
        quantity, filled = Decimal(o["quantity"]), Decimal(o["dealQuantity"])
        if o["changeType"] == "CANCELED":
            state = {"status": "canceled", "is_final": True}
        elif filled >= quantity:
            state = {"status": "filled", "is_final": True}
        else:
            state = {"status": "partially_filled" if filled else "new", "is_final": False}
        if not state["is_final"] or key in published:
            truth[key] = {**state, "filled_quantity": filled}
    for position_id, p in sim.positions.items():
        key = ("positions", f"satori|{wallet}|{position_id}")
        quantity = Decimal(p["currentQuantity"])
        is_open = p["changeType"] not in ("CLOSE", "LIQUIDATE") and quantity != 0
        if is_open or key in published:
            truth[key] = {"is_open": is_open, "quantity": quantity}
    return truth


def mismatches(truth: Truth, last: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """Keys whose last record on Kafka differs from the truth (or is missing)."""
    problems = []
    for key, want in truth.items():
        got = last.get(key)
        if got is None:
            problems.append(f"{key}: missing")
        elif {k: got[k] for k in want} != want:
            problems.append(f"{key}: { ({k: got[k] for k in want}) } != {want}")
    return problems


# -- drift: which keys a dropped push leaves wrong -----------------------------------------
def dropped_key(
    venue: str, sim: Any, kind: str, payload: dict[str, Any], wallet: str
) -> tuple[str, str]:
    """The (topic, key) of the state a dropped push (`drop_next`) was about."""
    if venue == "aquanow":
        account = sim.account_id
        if kind == "balance":
            return "balances", f"aquanow|{account}|{payload['symbol']}"
        if kind == "order":
            return "orders", f"aquanow|{account}|{payload['orderId']}"
        return "credit", f"aquanow|{account}|USD"
    if kind == "api_account":
        return "balances", f"satori|{wallet}|{payload['symbol']}"
    if kind == "api_entrust":
        return "orders", f"satori|{wallet}|{payload['currentEntrustId']}"
    return "positions", f"satori|{wallet}|{payload['positionId']}"


def satori_open(sim: Any, key: tuple[str, str]) -> bool:
    """A balance, or an order or position the Satori simulator still lists."""
    topic, record_key = key
    item = int(record_key.rsplit("|", 1)[1]) if topic != "balances" else None
    if topic == "orders":
        return item in sim._open_orders
    return topic == "balances" or item in sim._open_positions
