"""The REST edge: after each (re)subscribe, the venue's REST state published with
`source=snapshot`, so that the compacted view of every topic equals the venue's truth after any
gap. The venue module says which calls to make, signs them and reads the answers; this module
moves the bytes, rate-limits and retries. Which snapshot records a newer push supersedes is the
stream's business (bridge/stream.py).

Orders and positions last published as open that the snapshot no longer lists ended during
the gap; the venue module says how to learn their final state (`reconcile_missing`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque

import aiohttp
from yarl import URL

from bridge.backoff import Backoff, TokenBucket, retry_until
from bridge.errors import SnapshotFailed
from bridge.logs import get_logger
from bridge.metrics import Metrics
from bridge.records import Envelope, Order, Position
from bridge.sections import ReconnectSettings, SnapshotSettings
from bridge.stream import StreamState
from bridge.venues.base import Frame, RestCall, SnapshotPage, Venue


class Snapshotter:
    """Runs one stream's snapshot to completion, retrying failed runs with backoff."""

    def __init__(
        self,
        venue: Venue,
        rest_url: str,
        state: StreamState,
        metrics: Metrics,
        settings: SnapshotSettings,
        reconnect: ReconnectSettings,
    ) -> None:
        self._venue = venue
        self._base = rest_url.rstrip("/")
        self._state = state
        self._settings = settings
        self._reconnect = reconnect
        self._bucket = TokenBucket(settings.rate_per_second, settings.burst)
        self._log = get_logger(stream=venue.stream, venue=venue.name, component="snapshot")
        labels = (venue.stream, venue.name)
        self._m_failures = metrics.snapshot_failures
        self._m_last = metrics.snapshot_last_success.labels(*labels)
        self._labels = labels

    async def run(self) -> None:
        def failed(exc: SnapshotFailed, delay: float) -> None:
            self._m_failures.labels(*self._labels, exc.kind).inc()
            log = self._log.error if exc.kind == "auth" else self._log.warning
            log("snapshot failed", error=str(exc), retry_in=round(delay, 2))

        await retry_until(
            self.run_once,
            Backoff(self._reconnect),
            retry_on=SnapshotFailed,
            auth=lambda exc: exc.kind == "auth",
            on_retry=failed,
        )

    async def run_once(self) -> Counter[str]:
        started = time.monotonic()
        state = self._state
        state.begin_snapshot()
        was_open = (dict(state.open_orders), dict(state.open_positions))
        counts: Counter[str] = Counter()
        seen: set[tuple[str, str]] = set()
        timeout = aiohttp.ClientTimeout(total=self._settings.timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout, trust_env=True) as session:
                now_ms = int(time.time() * 1000)
                calls = deque(self._venue.snapshot_calls(now_ms, self._since(now_ms)))
                await self._drain(session, calls, counts, seen)
                orders = [o for i, o in was_open[0].items() if ("order", i) not in seen]
                positions = [p for i, p in was_open[1].items() if ("position", i) not in seen]
                lookups, closed = self._venue.reconcile_missing(orders, positions, _stamp(b""))
                for record in closed:
                    await self._publish(record, counts, seen)
                await self._drain(session, deque(lookups), counts, seen)
        finally:
            state.end_snapshot()
        self._m_last.set(time.time())
        self._log.info(
            "snapshot done",
            records=sum(counts.values()),
            by_topic=dict(counts),
            superseded=state.superseded,
            ended_during_gap=len(orders) + len(positions),
            seconds=round(time.monotonic() - started, 3),
        )
        return counts

    def _since(self, now_ms: int) -> int:
        last = self._state.last_order_ms
        if last is None:
            return now_ms - int(self._settings.lookback * 1000)
        return last - int(self._settings.since_margin * 1000)

    async def _drain(
        self,
        session: aiohttp.ClientSession,
        calls: deque[RestCall],
        counts: Counter[str],
        seen: set[tuple[str, str]],
    ) -> None:
        while calls:
            call = calls.popleft()
            page = await self._fetch(session, call)
            calls.extend(page.more)
            for record in page.records:
                await self._publish(record, counts, seen)

    async def _publish(
        self, record: Envelope, counts: Counter[str], seen: set[tuple[str, str]]
    ) -> None:
        if isinstance(record, Order):
            seen.add(("order", record.order_id))
        elif isinstance(record, Position):
            seen.add(("position", record.position_id))
        await self._state.publish(record)
        counts[record.TOPIC] += 1

    async def _fetch(self, session: aiohttp.ClientSession, call: RestCall) -> SnapshotPage:
        """One call, rate-limited, retried on server errors and rate limits (Retry-After
        honoured) up to `attempts` times."""
        retry_after: float | None = None
        where = f"{call.method} {call.path}"

        async def attempt() -> SnapshotPage:
            nonlocal retry_after
            await asyncio.sleep(self._bucket.reserve(time.monotonic()))
            signed = self._venue.sign_call(call, int(time.time() * 1000))
            retry_after = None
            try:
                async with session.request(
                    call.method,
                    URL(self._base + signed.target, encoded=True),  # sent exactly as signed
                    headers={**signed.headers, "Content-Type": "text/plain"},
                    data=b"" if call.method == "POST" else None,
                ) as response:
                    body = await response.read()
                    retry_after = _seconds(response.headers.get("Retry-After"))
                    page = self._venue.parse_snapshot(call, response.status, body, _stamp(body))
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise SnapshotFailed("retry", f"{type(exc).__name__}: {exc}", where) from exc
            if page.error is not None:
                raise SnapshotFailed(page.error.kind, page.error.detail, where)
            return page

        def retried(exc: SnapshotFailed, delay: float) -> None:
            self._log.warning(
                "snapshot call retried",
                path=call.path,
                error=exc.detail,
                kind=exc.kind,
                retry_in=delay,
            )

        # Without jitter: against a rate limit a shorter wait only earns another refusal.
        delays = self._reconnect.model_copy(update={"jitter": 0.0})
        page = await retry_until(
            attempt,
            Backoff(delays),
            retry_on=SnapshotFailed,
            retriable=lambda exc: exc.retriable,
            delay_hint=lambda _: retry_after or None,  # "Retry-After: 0" is no hint
            on_retry=retried,
            max_attempts=self._settings.attempts,
        )
        assert page is not None  # no `stop`: a page or an error ends the retries
        return page


def _stamp(body: bytes) -> Frame:
    return Frame(body, time.time_ns() // 1000, time.monotonic())


def _seconds(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None
