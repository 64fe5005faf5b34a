"""`bridge check --connect`: reach everything the bridge needs, change nothing, one line each.

Kafka (sign-in with the configured security; every topic exists and may be written), the
schema registry in registry mode (credentials accepted; each subject takes the schema the
bridge writes, asked with the registry's read-only compatibility call) and each stream's REST
endpoint (reachable; the clock skew against the venue's time: Satori's time call, else the
HTTP `Date` header). Nothing is created, registered or subscribed.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, TextIO

import aiohttp

from bridge.errors import BridgeError, ConfigError, KafkaAccessError
from bridge.kafka import KafkaAccess
from bridge.settings import Settings, StreamSettings
from bridge.topics import create_command, plans

OK: Final = "✓"
FAILED: Final = "✗"
SKEW_WARNING: Final = 2.0  # seconds; venues refuse signatures whose time is too far off
# Venues that tell their time in a call of their own (venues.md: Satori `GET
# /api/third/info/time`, milliseconds in `data`); the others by the HTTP Date header.
TIME_CALLS: Final = {"satori": "/api/third/info/time"}


async def preflight(settings: Settings, config: Path, out: TextIO) -> bool:
    """Print one line per check; True when every check passed."""
    checks: list[tuple[str, Callable[[], Awaitable[str]]]] = [
        ("kafka", lambda: _kafka(settings, config)),
    ]
    if settings.serialization.mode == "registry":
        checks.append(("registry", lambda: _registry(settings)))
    for stream in settings.streams:
        if stream.rest_url:
            checks.append((stream.name, lambda s=stream: _rest(s)))  # type: ignore[misc]
    passed = True
    for name, check in checks:
        try:
            line = f"{OK} {name:<14} {await check()}"
        except (BridgeError, OSError, TimeoutError, aiohttp.ClientError) as exc:
            passed = False
            line = f"{FAILED} {name:<14} {exc}"
        print("  " + line, file=out, flush=True)
    return passed


async def _kafka(settings: Settings, config: Path) -> str:
    access = KafkaAccess(settings.kafka)
    wanted = plans(settings.kafka)
    states = await access.topics([p.name for p in wanted])
    missing = [s.name for s in states if not s.exists]
    refused = [s.name for s in states if s.writable is False]
    if refused:
        raise KafkaAccessError("authorization", f"may not write to {', '.join(refused)}")
    if missing and not settings.kafka.create_topics:
        raise KafkaAccessError(
            "topics", f"missing topics: {', '.join(missing)} (`{create_command(config)}`)"
        )
    unknown = any(s.writable is None for s in states)
    line = f"signed in: {access.describe()}; {len(states) - len(missing)} of {len(states)} topics"
    if missing:
        line += f" (will create {', '.join(missing)})"
    return line + ("; write permission not reported" if unknown else ", writable")


async def _registry(settings: Settings) -> str:
    from bridge.codec import SchemaStore
    from bridge.registry import registry_client, subject_for

    ser, store = settings.serialization, SchemaStore.load()
    async with registry_client(ser) as client:
        await client.subjects()  # authentication and TLS first, one clear failure
        notes: list[str] = []
        for topic in store.topics():
            subject = subject_for(settings.kafka.topics.name(topic))
            newest = store.latest(topic)
            if not await client.versions(subject):
                if not ser.auto_register:
                    raise ConfigError(f"{subject}: not registered and auto_register is false")
                notes.append(f"{subject} new")
            elif not await client.is_compatible(subject, newest.text):
                raise ConfigError(f"{subject}: refuses schemas/{topic}/v{newest.version}.avsc")
    detail = f"; {', '.join(notes)}" if notes else ""
    return f"{client.url}: signed in; {len(store.topics())} subjects accept the schemas{detail}"


async def _rest(stream: StreamSettings) -> str:
    assert stream.rest_url is not None
    base = stream.rest_url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=stream.snapshot.timeout)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=True) as session:
        sent = time.time()
        async with session.get(base + TIME_CALLS.get(stream.venue, "/")) as response:
            body = await response.read()
            received = time.time()
            venue_time = _venue_time(stream.venue, response.status, body, response.headers)
    if venue_time is None:
        return f"{base} reachable (HTTP {response.status}); the venue tells no time"
    skew = venue_time - (sent + received) / 2
    line = f"{base} reachable (HTTP {response.status}); clock skew {skew:+.2f} s"
    if abs(skew) > SKEW_WARNING:
        raise ConfigError(f"{line}: more than {SKEW_WARNING} s — check NTP on this host")
    return line


def _venue_time(venue: str, status: int, body: bytes, headers: object) -> float | None:
    if venue in TIME_CALLS and status == 200:
        try:
            return float(json.loads(body)["data"]) / 1000
        except (ValueError, KeyError, TypeError):
            pass
    date = getattr(headers, "get", lambda _: None)("Date")
    if not date:
        return None
    return email.utils.parsedate_to_datetime(date).timestamp()


def run(settings: Settings, config: Path, out: TextIO) -> bool:
    return asyncio.run(preflight(settings, config, out))
