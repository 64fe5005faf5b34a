"""Venue modules (pure) and the factory that builds one from a stream's settings."""

from __future__ import annotations

from bridge.settings import AquanowStream, SatoriStream
from bridge.venues.aquanow import AquanowVenue
from bridge.venues.base import Venue
from bridge.venues.satori import SatoriVenue


def build_venue(settings: AquanowStream | SatoriStream) -> Venue:
    if isinstance(settings, AquanowStream):
        return AquanowVenue(
            stream=settings.name,
            api_key=settings.api_key.get_secret_value(),
            api_secret=settings.api_secret.get_secret_value(),
            channels=settings.channels,
            account=settings.account,
        )
    return SatoriVenue(
        stream=settings.name,
        api_key=settings.api_key.get_secret_value(),
        private_key=settings.private_key.get_secret_value(),
        coins=settings.coins,
        pairs=settings.pairs,
        events=settings.events,
        trade_period=settings.trade_period,
        account=settings.account,
    )
