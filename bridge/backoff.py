"""Retry policy: jittered, capped exponential delays (`Backoff`), the REST token bucket, and the
one retry loop built on them (`retry_until`).

`Backoff` and `TokenBucket` are pure: no clock and no randomness of their own (`now` and `rng`
are passed in), so tests are exact. `retry_until` is the only place that waits between attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bridge.sections import ReconnectSettings

T = TypeVar("T")
E = TypeVar("E", bound=Exception)


@dataclass
class Backoff:
    """Delays before reconnect attempts of one stream.

    Delay n (n = 0, 1, …) is `min(max, initial * multiplier**n)`, of which the fraction `jitter`
    is randomized downwards ("equal jitter": never zero, spreads reconnect storms). Auth
    rejections use their own, slower series. A connection that stayed up at least
    `healthy_after` seconds resets both series; a shorter one does not, so a venue that accepts
    and then drops us at once still backs off.
    """

    settings: ReconnectSettings
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0
    auth_attempts: int = 0
    _connected_at: float | None = None

    def connected(self, now: float) -> None:
        self._connected_at = now

    def next_delay(self, now: float, auth: bool = False) -> float:
        """Record a failure at `now` and return how long to wait before the next attempt."""
        if (
            self._connected_at is not None
            and now - self._connected_at >= self.settings.healthy_after
        ):
            self.attempts = 0
            self.auth_attempts = 0
        self._connected_at = None
        s = self.settings
        if auth:
            base = _capped(s.auth_initial_delay, s.multiplier, self.auth_attempts, s.auth_max_delay)
            self.auth_attempts += 1
        else:
            base = _capped(s.initial_delay, s.multiplier, self.attempts, s.max_delay)
            self.attempts += 1
        return base * (1 - s.jitter * self.rng.random())


def _capped(initial: float, multiplier: float, attempts: int, cap: float) -> float:
    # The exponent is bounded so that a stream failing for months cannot overflow a float.
    return min(cap, initial * multiplier ** min(attempts, 64))


@dataclass
class TokenBucket:
    """Rate limit for REST calls: `rate` requests per second sustained, bursts up to `burst`
    (Aquanow documents 10/s with bursts of 200, §1.7; Satori documents nothing but 2008
    "Frequent requests"). `reserve(now)` takes a token and says how long to wait for it."""

    rate: float
    burst: float
    _tokens: float | None = None
    _at: float = 0.0

    def reserve(self, now: float) -> float:
        if self._tokens is None:
            self._tokens, self._at = self.burst, now
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


async def retry_until(
    op: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    retry_on: type[E],
    retriable: Callable[[E], bool] | None = None,
    auth: Callable[[E], bool] | None = None,
    delay_hint: Callable[[E], float | None] | None = None,
    on_retry: Callable[[E, float], object] | None = None,
    max_attempts: int | None = None,
    stop: asyncio.Event | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T | None:
    """`await op()` until it returns, waiting `backoff`'s next delay after each failure.

    Only `retry_on` errors for which `retriable` holds (all of them by default) are retried;
    any other error, and the failure of attempt `max_attempts`, is raised at once. Before each
    wait `on_retry(error, delay)` is called (log, count). `auth(error)` picks the backoff's
    slower auth series; `delay_hint(error)` may replace the delay (a Retry-After, or 0 to try
    again at once); the failure counts in the series either way.

    With `stop`: returns None as soon as it is set, before an attempt, during a wait, or during
    an attempt (which is cancelled: a slow peer must not hold a SIGTERM). Without `stop` only
    `op`'s result or an error ends the loop. `sleep` is injectable for tests.
    """
    attempt = 0
    while stop is None or not stop.is_set():
        attempt += 1
        try:
            if stop is None:
                return await op()
            work = asyncio.ensure_future(op())
            if not await _unless_set(stop, work):
                return None
            return work.result()
        except retry_on as exc:
            if (retriable is not None and not retriable(exc)) or attempt == max_attempts:
                raise
            delay = backoff.next_delay(time.monotonic(), auth=auth is not None and auth(exc))
            hint = delay_hint(exc) if delay_hint is not None else None
            if hint is not None:
                delay = hint
            if on_retry is not None:
                on_retry(exc, delay)
        if stop is None:
            await sleep(delay)
        else:
            await _unless_set(stop, asyncio.ensure_future(sleep(delay)))
    return None


async def _unless_set(stop: asyncio.Event, work: asyncio.Future[Any]) -> bool:
    """Wait for `work` unless `stop` is set first; then cancel it. True when `work` is done."""
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
    return not work.cancelled()
