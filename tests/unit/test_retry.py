"""`retry_until`, the one retry loop (sink, app start-up, snapshots): which errors it retries,
how long it waits, when it gives up, and that a stop request ends it at once."""

from __future__ import annotations

import asyncio
import random

import pytest

from bridge.backoff import Backoff, retry_until
from bridge.settings import ReconnectSettings

pytestmark = pytest.mark.unit

EXACT = ReconnectSettings(
    initial_delay=1, max_delay=8, multiplier=2, jitter=0, auth_initial_delay=10, auth_max_delay=40
)


class Flaky(Exception):
    def __init__(self, retriable: bool = True, hint: float | None = None) -> None:
        super().__init__(f"retriable={retriable} hint={hint}")
        self.retriable = retriable
        self.hint = hint


class Script:
    """An operation that raises the scripted errors in turn, then returns "done"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


class Clock:
    """Stands in for `asyncio.sleep`: records each wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


def backoff(settings: ReconnectSettings = EXACT) -> Backoff:
    return Backoff(settings, random.Random(1))


async def test_retriable_errors_are_retried_on_the_backoff_series() -> None:
    op, clock = Script(Flaky(), Flaky(), Flaky()), Clock()
    seen: list[tuple[str, float]] = []
    result = await retry_until(
        op,
        backoff(),
        retry_on=Flaky,
        on_retry=lambda exc, delay: seen.append((str(exc), delay)),
        sleep=clock.sleep,
    )
    assert result == "done"
    assert op.calls == 4
    assert clock.waits == [1, 2, 4]
    assert [delay for _, delay in seen] == [1, 2, 4], "on_retry is told each wait"


async def test_a_non_retriable_error_is_raised_at_once() -> None:
    op, clock = Script(Flaky(), Flaky(retriable=False)), Clock()
    with pytest.raises(Flaky, match="retriable=False"):
        await retry_until(
            op, backoff(), retry_on=Flaky, retriable=lambda e: e.retriable, sleep=clock.sleep
        )
    assert op.calls == 2
    assert clock.waits == [1]


async def test_errors_of_another_type_are_not_retried() -> None:
    op, clock = Script(KeyError("bug")), Clock()
    with pytest.raises(KeyError):
        await retry_until(op, backoff(), retry_on=Flaky, sleep=clock.sleep)
    assert op.calls == 1
    assert clock.waits == []


async def test_the_last_of_max_attempts_raises_its_error() -> None:
    third = Flaky()
    op, clock = Script(Flaky(), Flaky(), third, Flaky()), Clock()
    with pytest.raises(Flaky) as raised:
        await retry_until(op, backoff(), retry_on=Flaky, max_attempts=3, sleep=clock.sleep)
    assert raised.value is third
    assert op.calls == 3
    assert clock.waits == [1, 2], "no wait after the last attempt"


async def test_a_delay_hint_replaces_the_delay_and_the_series_still_advances() -> None:
    op, clock = Script(Flaky(hint=7.5), Flaky(), Flaky(hint=0.0), Flaky()), Clock()
    await retry_until(op, backoff(), retry_on=Flaky, delay_hint=lambda e: e.hint, sleep=clock.sleep)
    assert clock.waits == [7.5, 2, 0.0, 8]


async def test_auth_failures_wait_on_the_slower_series() -> None:
    op, clock = Script(Flaky(retriable=False), Flaky(), Flaky(retriable=False)), Clock()
    await retry_until(
        op, backoff(), retry_on=Flaky, auth=lambda e: not e.retriable, sleep=clock.sleep
    )
    assert clock.waits == [10, 1, 20]


async def test_a_stop_during_the_wait_returns_none_at_once() -> None:
    stop = asyncio.Event()
    op = Script(Flaky())
    slow = ReconnectSettings(initial_delay=3600, max_delay=3600, jitter=0)

    def stop_soon(exc: Flaky, delay: float) -> None:
        assert delay == 3600
        asyncio.get_running_loop().call_soon(stop.set)

    # A real hour-long wait: only the stop can end this within the timeout.
    result = await asyncio.wait_for(
        retry_until(op, backoff(slow), retry_on=Flaky, on_retry=stop_soon, stop=stop), timeout=10
    )
    assert result is None
    assert op.calls == 1


async def test_a_stop_during_an_attempt_cancels_it() -> None:
    stop = asyncio.Event()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def hangs() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    retrying = asyncio.create_task(retry_until(hangs, backoff(), retry_on=Flaky, stop=stop))
    await started.wait()
    stop.set()
    assert await asyncio.wait_for(retrying, timeout=10) is None
    assert cancelled.is_set()


async def test_no_attempt_once_stop_is_set() -> None:
    stop = asyncio.Event()
    stop.set()
    op = Script()
    assert await retry_until(op, backoff(), retry_on=Flaky, stop=stop) is None
    assert op.calls == 0
