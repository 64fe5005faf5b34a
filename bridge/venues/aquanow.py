"""Aquanow reporting websocket: stream section, signing, subscribe messages, push parsing, REST
snapshot (venues.md part 1).

Pure: no I/O, no clock. Wire names are Aquanow's own (camelCase); records use ours.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Final, Literal, get_args
from urllib.parse import urlencode

from pydantic import SecretStr, field_validator

from bridge.errors import ParseError
from bridge.records import (
    SIDE_BUY,
    SIDE_SELL,
    SIDE_UNKNOWN,
    SOURCE_SNAPSHOT,
    SOURCE_STREAM,
    Balance,
    CreditBalance,
    Order,
    Position,
    Record,
    make_event_id,
)
from bridge.sections import Decoder, StreamBase
from bridge.venues.base import (
    Frame,
    Nonces,
    ParseResult,
    Rejected,
    RestCall,
    RestError,
    SignedCall,
    SnapshotPage,
    Subscription,
    build_dead_letter,
    frame_text,
    http_detail,
    http_error,
)
from bridge.venues.decoder import FAST, Json, json_for
from bridge.venues.fields import Fields

NAME: Final = "aquanow"
# The reporting feed's channels (§1.3).
AquanowChannel = Literal["executionReport", "parentOrderReport", "balanceReport"]
CHANNELS: Final[tuple[AquanowChannel, ...]] = get_args(AquanowChannel)

# tradeStatus (venues.md §1.4.2 status table) → (canonical status, is_final). A status with
# fills reported while still working becomes "partially_filled" (see `_order_status`).
_STATUSES: Final[dict[str, tuple[str, bool]]] = {
    "CREATE": ("new", False),
    "AWAITING": ("open", False),
    "RFQ_EXECUTE": ("open", False),
    "CANCEL_PENDING": ("cancel_pending", False),
    "COMPLETE": ("filled", True),
    "PARTIAL_COMPLETE": ("partially_filled", True),
    "EXPIRED": ("expired", True),
    "CANCELLED": ("canceled", True),
    "ERROR": ("rejected", True),
}
# Words in an error frame that mark a credentials problem rather than a server fault.
_AUTH_WORDS: Final = ("signature", "nonce", "api key", "apikey", "unauthor", "auth", "forbidden")


def sign(secret: str, message: str) -> str:
    """HMAC-SHA384 of `message` keyed with the UTF-8 secret, lowercase hex (§1.2)."""
    return hmac.new(secret.encode(), message.encode(), hashlib.sha384).hexdigest()


def build_signed_payload(action: str, channel: str, nonce: str) -> str:
    """The exact text Aquanow signs for a websocket (un)subscribe: `JSON.stringify` of
    `{type, channel, nonce}` in that key order, no spaces (§1.2)."""
    return json.dumps({"type": action, "channel": channel, "nonce": nonce}, separators=(",", ":"))


def build_subscribe(
    api_key: str, secret: str, channel: str, nonce: str, action: str = "subscribe"
) -> str:
    """The (un)subscribe message: the signed payload plus `apiKey` and `apiSignature`."""
    payload = build_signed_payload(action, channel, nonce)
    signature = sign(secret, payload)
    extra = json.dumps({"apiKey": api_key, "apiSignature": signature}, separators=(",", ":"))
    return payload[:-1] + "," + extra[1:]


def build_rest_signed_payload(method: str, path: str, nonce: str) -> str:
    """The exact text signed for a REST call: `{httpMethod, path, nonce}`; `path` excludes
    the host and the query string (§1.2)."""
    return json.dumps({"httpMethod": method, "path": path, "nonce": nonce}, separators=(",", ":"))


def build_rest_headers(
    api_key: str, secret: str, method: str, path: str, nonce: str
) -> dict[str, str]:
    """Headers for a signed REST call (§1.2)."""
    signature = sign(secret, build_rest_signed_payload(method, path, nonce))
    return {"x-api-key": api_key, "x-nonce": nonce, "x-signature": signature}


class AquanowStream(StreamBase):
    """A stream of one Aquanow API key (its `venue: aquanow` entry under `streams`)."""

    venue: Literal["aquanow"]
    api_key: SecretStr
    api_secret: SecretStr
    channels: tuple[AquanowChannel, ...] = ("executionReport",)

    @field_validator("channels")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one channel is required")
        return value

    def build_venue(self, decoder: Decoder = "msgspec") -> AquanowVenue:
        return AquanowVenue(
            stream=self.name,
            api_key=self.api_key.get_secret_value(),
            api_secret=self.api_secret.get_secret_value(),
            channels=self.channels,
            account=self.account,
            json=json_for(decoder),
        )

    def scope(self) -> str:
        return "channels " + ", ".join(self.channels)

    def credential(self) -> str:
        return self.api_key.get_secret_value()


class AquanowVenue:
    """The reporting feed of one Aquanow API key."""

    name = NAME
    acknowledges_subscriptions = False  # §1.3: no ack is documented for the reporting feed

    def __init__(
        self,
        stream: str,
        api_key: str,
        api_secret: str,
        channels: tuple[AquanowChannel, ...] = ("executionReport",),
        account: str | None = None,
        json: Json = FAST,
    ) -> None:
        self.stream = stream
        self._json = json
        self._api_key = api_key
        self._secret = api_secret
        self.channels = channels
        self.account = account
        self._seen_account: str | None = None  # the accountId pushes carry, for REST calls
        self._pushed = False  # a push arrived: its shape says whether REST needs an accountId
        self._nonces = Nonces()
        self._parsers: dict[str, Callable[[Fields, Frame, str, str], Record]] = {
            "balance": self._parse_balance,
            "order": self._parse_order,
            "tradeCreditBalance": self._parse_credit,
        }

    def build_subscriptions(self, now_ms: int) -> list[Subscription]:
        return [
            Subscription(
                channel,
                build_subscribe(
                    self._api_key, self._secret, channel, str(self._nonces.next(now_ms))
                ),
            )
            for channel in self.channels
        ]

    # -- REST snapshot (§1.7) ---------------------------------------------------------------
    def _rest_account(self) -> tuple[tuple[str, str], ...]:
        account = self.account or self._seen_account
        return (("accountId", account),) if account else ()

    def snapshot_calls(self, until_ms: int, since_ms: int | None) -> list[RestCall]:
        """Balances, open orders, orders updated since `since_ms` (those that finished during a
        gap), and the credit line when the account id is known (§1.7 snapshot recipe)."""
        account = self._rest_account()
        calls = [
            RestCall("balance", "GET", "/users/v1/userbalance", account),
            RestCall("order", "GET", "/trades/v1/order", (*account, ("openOrders", "true"))),
        ]
        if since_ms is not None:
            window = (("startTime", str(since_ms)), ("endTime", str(until_ms)))
            calls.append(RestCall("order", "GET", "/trades/v1/order", (*account, *window)))
        if account:
            calls.append(
                RestCall("tradeCreditBalance", "GET", "/users/v1/tradeCreditBalance", account)
            )
        return calls

    def sign_call(self, call: RestCall, now_ms: int) -> SignedCall:
        """Only the bare path is signed; query parameters are sent but not signed (§1.2)."""
        nonce = str(self._nonces.next(now_ms))
        headers = build_rest_headers(self._api_key, self._secret, call.method, call.path, nonce)
        query = urlencode(call.params)
        return SignedCall(f"{call.path}?{query}" if query else call.path, headers)

    def parse_snapshot(self, call: RestCall, status: int, body: bytes, at: Frame) -> SnapshotPage:
        error = _rest_error(status, body)
        if error is not None:
            if call.kind == "tradeCreditBalance" and "does not exist" in error.detail:
                return SnapshotPage()  # an account without a credit line: nothing to state
            return SnapshotPage(error=error)
        try:
            data = self._json.loads(body)
        except ParseError as exc:
            return SnapshotPage(error=RestError("retry", f"{call.path}: {exc.detail}"))
        items = data if isinstance(data, list) else [data]
        if call.kind == "order" and isinstance(data, dict) and isinstance(data.get("data"), list):
            items = data["data"]  # the v2 shape {data: [...], pagination: {...}}
        return SnapshotPage(records=[self._snapshot_item(call.kind, item, at) for item in items])

    def _snapshot_item(self, kind: str, item: object, at: Frame) -> Record:
        try:
            return self.parse_item(kind, item, at, SOURCE_SNAPSHOT)
        except ParseError as exc:
            raw = self._json.dumps(item).encode("utf-8", "surrogatepass")
            detail = f"snapshot {kind}: {exc.detail}"
            return build_dead_letter(
                NAME, self.stream, at, exc.reason, detail, raw=raw, source=SOURCE_SNAPSHOT
            )

    def reconcile_missing(
        self, orders: list[Order], positions: list[Position], at: Frame
    ) -> tuple[list[RestCall], list[Record]]:
        """Orders last seen open and in neither snapshot list: look each up by id, scoped to
        the account like every REST call of a Latest account (§1.7)."""
        account = self._rest_account()
        path = "/trades/v1/order"
        return [
            RestCall("order", "GET", path, (*account, ("orderId", o.order_id))) for o in orders
        ], []

    def snapshot_ready(self) -> bool:
        """Latest accounts' REST calls need the accountId (§1.7), which Aquanow's API offers no
        way to look up: it comes from the config, from a restored checkpoint, or from the
        first push (Legacy pushes carry none, and Legacy REST calls need none)."""
        return bool(self.account or self._seen_account or self._pushed)

    def relisting_calls(self) -> list[RestCall]:
        return []  # `openOrders=true` answers in one response (§1.7): nothing to shift

    def restore(self, versions: Mapping[str, int], facts: Mapping[str, str]) -> None:
        self._seen_account = self._seen_account or facts.get("rest_account")

    def checkpoint_facts(self) -> dict[str, str]:
        return {"rest_account": self._seen_account} if self._seen_account else {}

    def parse(self, frame: Frame) -> ParseResult:
        try:
            return self._parse(frame)
        except ParseError as exc:
            dead = build_dead_letter(NAME, self.stream, frame, exc.reason, exc.detail)
            return ParseResult(records=[dead])

    def _parse(self, frame: Frame) -> ParseResult:
        envelope = Fields(self._json.loads(frame.data), "frame")
        text = frame_text(frame)
        kind = envelope.opt_str("type")
        parser = self._parsers.get(kind or "")
        if parser is not None:
            self._pushed = True
            record = parser(envelope.child("payload"), frame, text, SOURCE_STREAM)
            return ParseResult(records=[record])
        if kind == "error":
            # Not documented (§1.8.1); our simulator and, we assume, the venue send
            # {"type":"error","message":…} before closing on a bad signature or nonce.
            detail = envelope.opt_str("message") or "error frame without a message"
            auth = any(word in detail.lower() for word in _AUTH_WORDS)
            return ParseResult(events=[Rejected(detail=detail, auth=auth)])
        if kind is None:
            raise ParseError("missing_field", "frame.type is required")
        raise ParseError("unknown_type", f"frame.type {kind!r} is not a known push type")

    def parse_item(self, kind: str, item: object, frame: Frame, source: str) -> Record:
        """One REST snapshot item (same objects as the pushes' payloads, §1.7) → record."""
        return self._parsers[kind](Fields(item, f"snapshot {kind}"), frame, "", source)

    def _account(self, payload: Fields) -> str | None:
        # Latest accounts carry accountId; Legacy ones only a username (§1.1, §1.4).
        # Both read whatever is present: a documented field of the wrong type is a dead letter
        # even where another field would have done (a format change must not pass unseen).
        account_id, username = payload.opt_str("accountId"), payload.opt_str("username")
        if account_id is not None:
            self._seen_account = account_id
        return account_id or username or self.account

    def _parse_balance(self, p: Fields, frame: Frame, raw: str, source: str) -> Balance:
        account = self._account(p)
        asset = p.req_str("symbol")
        event_time = _event_time(p)
        available, legacy = p.opt_decimal("availableBalance"), p.opt_decimal("available")
        if available is None:
            available = legacy
        total = p.opt_decimal("totalBalance")
        return Balance(
            venue=NAME,
            stream=self.stream,
            account=account,
            event_time=event_time,
            received_at=frame.received_at,
            source=source,
            event_id=make_event_id(NAME, account, "balance", asset, event_time, total, available),
            raw=raw or self._json.dumps(p.obj),
            asset=asset,
            available=available,
            total=total,
            frozen=None,
            pending=p.opt_decimal("pending"),
            pending_transfer=p.opt_decimal("pendingTransfer"),
            credit=p.opt_decimal("creditBalance"),
            change=None,
            version=None,
            deposit_address=p.opt_str("depositAddress"),
        )

    def _parse_order(self, p: Fields, frame: Frame, raw: str, source: str) -> Order:
        account = self._account(p)
        order_id = p.req_str("orderId")
        symbol = p.req_str("symbol")
        status_raw = p.req_str("tradeStatus")
        filled = p.opt_decimal("fillQtyBase")
        status, is_final = _order_status(status_raw, filled)
        side_raw = p.opt_str("tradeSide")
        base, quote = p.opt_str("baseSymbol"), p.opt_str("quoteSymbol")
        if base is None and quote is None and symbol.count("-") == 1:
            base, quote = symbol.split("-")
        fee, quote_fee = p.opt_decimal("fillFeeQuoteAqua"), p.opt_decimal("fillFeeQuote")
        if fee is None:
            fee = quote_fee
        event_time = _event_time(p)
        return Order(
            venue=NAME,
            stream=self.stream,
            account=account,
            event_time=event_time,
            received_at=frame.received_at,
            source=source,
            event_id=make_event_id(
                NAME, account, "order", order_id, status_raw, filled, event_time
            ),
            raw=raw or self._json.dumps(p.obj),
            order_id=order_id,
            client_order_id=None,
            parent_order_id=p.opt_str("orderIdParent"),
            symbol=symbol,
            base_asset=base,
            quote_asset=quote,
            side=_side(side_raw),
            side_raw=side_raw,
            order_type=p.opt_str("strategy"),
            status=status,
            status_raw=status_raw,
            is_final=is_final,
            change_type=None,
            quantity=p.opt_decimal("tradeSize"),
            price=p.opt_decimal("priceLimit"),
            filled_quantity=filled,
            filled_quote=p.opt_decimal("fillQtyQuote"),
            last_fill_quantity=None,
            average_price=p.opt_decimal("tradePriceAvg"),
            remaining_quantity=p.opt_decimal("remainingQtyBase"),
            fee=fee,
            fee_asset=quote if fee is not None else None,
            is_taker=None,
            reduce_only=None,
            leverage=None,
            created_at=p.opt_int("createdAt"),
        )

    def _parse_credit(self, p: Fields, frame: Frame, raw: str, source: str) -> CreditBalance:
        account = self._account(p)
        event_time = p.opt_int("updatedAt")
        adjusted, ltv = p.opt_decimal("adjustedMtmUSD"), p.opt_decimal("ltv")
        unutilized = p.opt_decimal("unutilizedCreditUSD")
        return CreditBalance(
            venue=NAME,
            stream=self.stream,
            account=account,
            event_time=event_time,
            received_at=frame.received_at,
            source=source,
            event_id=make_event_id(NAME, account, "credit", event_time, adjusted, ltv, unutilized),
            raw=raw or self._json.dumps(p.obj),
            asset="USD",
            adjusted_mtm=adjusted,
            ltv=ltv,
            unutilized_credit=unutilized,
            credit_limit=p.opt_decimal("creditLimitUsd"),
            created_at=p.opt_int("createdAt"),
        )


def _event_time(p: Fields) -> int | None:
    """`updatedAt`, else `itemDateTime` (Legacy payloads). Both are read, so both are checked:
    a documented field of the wrong type is a dead letter even where the other would do."""
    updated, item_time = p.opt_int("updatedAt"), p.opt_int("itemDateTime")
    return updated or item_time


def _order_status(status_raw: str, filled: Decimal | None) -> tuple[str, bool]:
    status, is_final = _STATUSES.get(status_raw, ("unknown", False))
    if status in ("new", "open") and filled:
        status = "partially_filled"
    return status, is_final


def _side(raw: str | None) -> str:
    side = (raw or "").lower()
    return side if side in (SIDE_BUY, SIDE_SELL) else SIDE_UNKNOWN


def _rest_error(status: int, body: bytes) -> RestError | None:
    """Classify a non-200 answer (§1.2 error hints: 401 credentials or nonce, 403 IP
    whitelist or wrong URL; the body carries `message`); any other status is our mistake."""
    if status == 200:
        return None
    return http_error(status, body, "message") or RestError(
        "fatal", http_detail(status, body, "message")
    )
