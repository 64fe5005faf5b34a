"""Satori Finance: account, order, position and trade events of one API key (venues.md part 2).

This module holds what the config needs — the stream section and the vocabularies — and
imports no signing library: eth-account loads only when a Satori stream is built.

- `signing.py`  EIP-191 signatures for subscriptions and REST calls (§2.2)
- `items.py`    push-named items → records, shared by pushes and REST answers
- `push.py`     websocket frames: acks, error frames, pushes (§2.3, §2.4)
- `rest.py`     the REST snapshot: calls, pages, envelope, reconciliation (§2.7)
- `venue.py`    `SatoriVenue`, the pure `Venue` of one stream
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, get_args

from pydantic import SecretStr, field_validator, model_validator

from bridge.sections import Decoder, StreamBase

if TYPE_CHECKING:
    from bridge.venues.satori.venue import SatoriVenue

NAME: Final = "satori"
# The private websocket events (§2.3) and the trade feed's candle periods (§2.4.4).
SatoriEvent = Literal["api_account", "api_entrust", "api_position", "api_trade"]
EVENTS: Final[tuple[SatoriEvent, ...]] = get_args(SatoriEvent)
TradePeriod = Literal[
    "1MIN", "3MIN", "5MIN", "15MIN", "30MIN", "1HOUR", "4HOUR", "8HOUR", "12HOUR", "1DAY"
]
TRADE_PERIODS: Final[tuple[TradePeriod, ...]] = get_args(TradePeriod)
# Which subscription parameter scopes each event (§2.3) and is echoed in its ack.
SCOPE: Final[dict[str, str]] = {
    "api_account": "symbol",
    "api_entrust": "pair",
    "api_position": "pair",
    "api_trade": "pair",
}


class SatoriStream(StreamBase):
    """A stream of one Satori API key (its `venue: satori` entry under `streams`)."""

    venue: Literal["satori"]
    api_key: SecretStr
    private_key: SecretStr
    coins: tuple[str, ...] = ()
    pairs: tuple[str, ...] = ()
    events: tuple[SatoriEvent, ...] = EVENTS
    trade_period: TradePeriod = "1MIN"

    @field_validator("private_key")
    @classmethod
    def _valid_key(cls, value: SecretStr) -> SecretStr:
        from bridge.venues.satori.signing import wallet_address

        try:
            wallet_address(value.get_secret_value())
        except (ValueError, TypeError):
            # Never echo the value: it is a private key.
            raise ValueError("not a valid secp256k1 private key (32 bytes, hex)") from None
        return value

    @model_validator(mode="after")
    def _scopes(self) -> SatoriStream:
        if "api_account" in self.events and not self.coins:
            raise ValueError("coins: api_account needs at least one coin")
        if set(self.events) - {"api_account"} and not self.pairs:
            raise ValueError("pairs: api_entrust/api_position/api_trade need at least one pair")
        return self

    def build_venue(self, decoder: Decoder = "msgspec") -> SatoriVenue:
        from bridge.venues.decoder import json_for
        from bridge.venues.satori.venue import SatoriVenue

        return SatoriVenue(
            stream=self.name,
            api_key=self.api_key.get_secret_value(),
            private_key=self.private_key.get_secret_value(),
            coins=self.coins,
            pairs=self.pairs,
            events=self.events,
            trade_period=self.trade_period,
            account=self.account,
            json=json_for(decoder),
        )

    def scope(self) -> str:
        return (
            f"events {', '.join(self.events)}; coins {', '.join(self.coins) or '-'}; "
            f"pairs {', '.join(self.pairs) or '-'}"
        )

    def credential(self) -> str:
        return self.api_key.get_secret_value()
