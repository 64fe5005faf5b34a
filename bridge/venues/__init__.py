"""Venue modules (pure) and the factory that builds one from a stream's settings."""

from __future__ import annotations

from bridge.settings import AquanowStream, SatoriStream
from bridge.venues.aquanow import AquanowVenue
from bridge.venues.base import Venue


def build_venue(settings: AquanowStream | SatoriStream) -> Venue:
    if isinstance(settings, AquanowStream):
        return AquanowVenue(
            stream=settings.name,
            api_key=settings.api_key.get_secret_value(),
            api_secret=settings.api_secret.get_secret_value(),
            channels=settings.channels,
            account=settings.account,
        )
    raise NotImplementedError(f"venue {settings.venue!r} is not implemented yet")
