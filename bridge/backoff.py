"""Pure reconnect policy: jittered, capped exponential delays, reset only after a healthy spell.

No clock and no randomness of its own: `now` and `rng` are passed in, so tests are exact.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from bridge.settings import ReconnectSettings


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
