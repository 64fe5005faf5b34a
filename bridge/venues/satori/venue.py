"""`SatoriVenue`: the pure `Venue` of one Satori stream, wiring signing, pushes and REST."""

from __future__ import annotations

from collections.abc import Mapping

from bridge.records import Order, Position, Record
from bridge.venues.base import (
    Frame,
    Nonces,
    ParseResult,
    RestCall,
    SignedCall,
    SnapshotPage,
    Subscription,
)
from bridge.venues.decoder import FAST, Json
from bridge.venues.satori import EVENTS, NAME, SCOPE, SatoriEvent, TradePeriod, push, rest
from bridge.venues.satori.items import SatoriItems
from bridge.venues.satori.signing import (
    build_query_string,
    build_rest_headers,
    build_subscribe,
    wallet_address,
)


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
        events: tuple[SatoriEvent, ...] = EVENTS,
        trade_period: TradePeriod = "1MIN",
        account: str | None = None,
        json: Json = FAST,
    ) -> None:
        self.stream = stream
        self._api_key = api_key
        self._private_key = private_key
        # Pushes name no account: the API wallet's address is the account (docs/DESIGN.md).
        self.account = account or wallet_address(private_key)
        self.coins, self.pairs, self.events = coins, pairs, events
        self.scopes = [(e, s) for e in events for s in (coins if SCOPE[e] == "symbol" else pairs)]
        self.trade_period = trade_period
        self._timestamps = Nonces()
        self._items = SatoriItems(stream, self.account, json)

    @property
    def max_log_id(self) -> dict[str, int]:
        """Highest balance `logId` published per coin (stale pushes are refused, §2.5)."""
        return self._items.max_log_id

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

    def parse(self, frame: Frame) -> ParseResult:
        return push.parse_frame(self._items, frame)

    def snapshot_calls(self, until_ms: int, since_ms: int | None) -> list[RestCall]:
        return rest.snapshot_calls(self.coins, self.pairs, self.events)

    def sign_call(self, call: RestCall, now_ms: int) -> SignedCall:
        """The sorted query string with a fresh timestamp is what is signed and sent (§2.2)."""
        params: dict[str, object] = dict(call.params)
        params["timestamp"] = self._timestamps.next(now_ms)
        query = build_query_string(params)
        headers = build_rest_headers(self._api_key, self._private_key, query)
        return SignedCall(f"{call.path}?{query}", headers)

    def parse_snapshot(self, call: RestCall, status: int, body: bytes, at: Frame) -> SnapshotPage:
        return rest.parse_snapshot(self._items, call, status, body, at)

    def reconcile_missing(
        self, orders: list[Order], positions: list[Position], at: Frame
    ) -> tuple[list[RestCall], list[Record]]:
        return rest.reconcile_missing(self._items, orders, positions, at)

    def snapshot_ready(self) -> bool:
        return True

    def relisting_calls(self) -> list[RestCall]:
        return rest.relisting_calls(self.pairs, self.events)

    def restore(self, versions: Mapping[str, int], facts: Mapping[str, str]) -> None:
        for name, value in versions.items():
            kind, _, scope = name.partition(":")
            if kind == "balance":
                self._items.max_log_id[scope] = max(self._items.max_log_id.get(scope, 0), value)
            elif kind == "fill":
                mark = self._items.fill_watermark.get(scope, 0)
                self._items.fill_watermark[scope] = max(mark, value)

    def checkpoint_facts(self) -> dict[str, str]:
        return {}
