"""The REST edge: reconciliation runs that make the last record of every state key equal the
venue's state. One runs after each (re)subscribe (closing the gap), then on schedule
(`snapshot.interval`) and on an operator's request (`bridge resync`) while the session lasts.
The venue module says which calls to make, signs them and reads the answers; this module moves
the bytes, rate-limits, retries, and decides what the answers mean for the stream:

- Which snapshot records are published is the stream's business (bridge/stream.py): a newer
  push wins, an unchanged state is not published again.
- Orders and positions last published as open that the venue no longer lists ended during the
  gap — but only the venue's evidence says so: when the venue's lists are paged, items ending
  between two page reads shift the pages and hide live ones, so the lists are read again
  (`relisting_calls`) before anything missing is looked up (`reconcile_missing`). One lookup
  that fails (say, an order the venue no longer knows) does not fail the run: the order stays
  open and is looked up again next time.
- On schedule and on request, a key published because the venue's state differed, and that no
  push explains within `drift_grace`, is drift: a push the venue never delivered on a healthy
  connection. It is counted (`bridge_reconcile_drift_total`) and its keys logged.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from yarl import URL

from bridge.backoff import Backoff, TokenBucket, retry_until
from bridge.errors import SnapshotFailed
from bridge.logs import get_logger
from bridge.metrics import Metrics
from bridge.records import Envelope, Order, Position
from bridge.sections import ReconnectSettings, SnapshotSettings
from bridge.stream import StateKey, StreamState
from bridge.venues.base import Frame, RestCall, SnapshotPage, Venue

# How long the first snapshot waits for what its REST calls need to know (Aquanow: the account
# a push names) before trying without it.
READY_WAIT: Final = 30.0
DRIFT_LOGGED_KEYS: Final = 50  # keys named in one drift log line (the count is always exact)


@dataclass
class Reconciliation:
    """What one run did."""

    trigger: str  # subscribe | schedule | resync
    began_at: int  # wall clock (µs) when it began reading the venue
    gap_start: int | None  # since when facts may have been missed (µs; None: unknown)
    requests: tuple[str, ...] = ()  # the operators' resync requests it answers
    counts: Counter[str] = field(default_factory=Counter)  # records published, by topic
    corrected: int = 0  # state records published because the venue's state differed
    drift: list[StateKey] = field(default_factory=list)
    lookups_failed: int = 0
    orders_since: int | None = None  # venue ms: from when finished orders were fetched


Announce = Callable[[StreamState, Reconciliation], Awaitable[None]]


class Snapshotter:
    """Runs one stream's reconciliations for one session, retrying failed runs with backoff."""

    def __init__(
        self,
        venue: Venue,
        rest_url: str,
        state: StreamState,
        metrics: Metrics,
        settings: SnapshotSettings,
        reconnect: ReconnectSettings,
        bucket: TokenBucket | None = None,
        announce: Announce | None = None,
    ) -> None:
        self._venue = venue
        self._base = rest_url.rstrip("/")
        self._state = state
        self._settings = settings
        self._reconnect = reconnect
        # Shared by the streams of one API key: the venue's limits are per key (venues.md §1.7).
        self._bucket = bucket or TokenBucket(settings.rate_per_second, settings.burst)
        self._announce = announce
        self._log = get_logger(stream=venue.stream, venue=venue.name, component="snapshot")
        labels = (venue.stream, venue.name)
        self._m_failures = metrics.snapshot_failures
        self._m_last = metrics.snapshot_last_success.labels(*labels)
        self._m_drift = metrics.reconcile_drift
        self._labels = labels
        self._last_began: int | None = None
        self.waiting: str | None = None  # what the first run waits for, while it does

    async def run(self) -> None:
        """The gap reconciliation, then scheduled and requested ones until cancelled."""
        if not self._venue.snapshot_ready():
            self.waiting = "a push naming the account"
            self._log.info("snapshot waits for " + self.waiting, at_most=READY_WAIT)
            try:
                await asyncio.wait_for(self._state.pushed.wait(), READY_WAIT)
            except TimeoutError:
                self._log.warning("no push named the account; snapshotting without it")
            finally:
                self.waiting = None
        await self._retrying("subscribe")
        while True:
            await self._retrying(await self._next_trigger())

    async def _next_trigger(self) -> str:
        interval = self._settings.interval or None
        try:
            await asyncio.wait_for(self._state.resync.wait(), interval)
        except TimeoutError:
            return "schedule"
        return "resync"

    async def _retrying(self, trigger: str) -> Reconciliation:
        def failed(exc: SnapshotFailed, delay: float) -> None:
            self._m_failures.labels(*self._labels, exc.kind).inc()
            log = self._log.error if exc.kind == "auth" else self._log.warning
            log("snapshot failed", error=str(exc), trigger=trigger, retry_in=round(delay, 2))

        result = await retry_until(
            lambda: self.run_once(trigger),
            Backoff(self._reconnect),
            retry_on=SnapshotFailed,
            auth=lambda exc: exc.kind == "auth",
            on_retry=failed,
        )
        assert result is not None  # no `stop`: a result or an error ends the retries
        return result

    async def run_once(self, trigger: str = "subscribe") -> Reconciliation:
        started = time.monotonic()
        state = self._state
        gap_start = state.gap_start if trigger == "subscribe" else self._last_began
        requests = state.take_resync_requests()
        result = Reconciliation(trigger, time.time_ns() // 1000, gap_start, requests)
        state.begin_snapshot()
        try:
            await self._reconcile(result)
            if trigger == "subscribe":
                state.gap_reconciled()
            else:
                # A push already on its way explains a difference: give it time to land.
                await asyncio.sleep(self._settings.drift_grace)
                result.drift = state.unexplained()
            result.corrected = len(state.corrected)
        except BaseException:
            state.request_resync(*requests)  # answered by the next run instead
            raise
        finally:
            state.end_snapshot()
        self._m_last.set(time.time())
        self._last_began = result.began_at
        self._report(result, time.monotonic() - started)
        if self._announce is not None:
            await self._announce(state, result)
        return result

    async def _reconcile(self, result: Reconciliation) -> None:
        state, venue = self._state, self._venue
        was_open = (dict(state.open_orders), dict(state.open_positions))
        seen: set[tuple[str, str]] = set()
        timeout = aiohttp.ClientTimeout(total=self._settings.timeout)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=True) as session:
            now_ms = int(time.time() * 1000)
            result.orders_since = self._since(now_ms, result.trigger)
            # Up to `since_margin` ahead too: the venue's clock may run ahead of ours, and an
            # order it finished just before we subscribed (pushed to nobody) is stamped later
            # than our "now"; outside the window and no longer open, it would be in no answer.
            until_ms = now_ms + int(self._settings.since_margin * 1000)
            calls = deque(venue.snapshot_calls(until_ms, result.orders_since))
            await self._drain(session, calls, result, seen)
            orders, positions = _missing(was_open, seen)
            relist = venue.relisting_calls()
            if (orders or positions) and relist:
                # Absent once may be a page shift: the venue must say it twice.
                await self._drain(session, deque(relist), result, seen)
                orders, positions = _missing(was_open, seen)
            lookups, closed = venue.reconcile_missing(orders, positions, _stamp(b""))
            for record in closed:
                await self._publish(record, result, seen)
            await self._drain(session, deque(lookups), result, seen, lookups=True)

    def _since(self, now_ms: int, trigger: str) -> int:
        """From when finished orders are fetched: the newest order published before the gap
        (restored after a restart), or on schedule and on request the previous run's start
        (at most `max(lookback, interval) + since_margin` back: a run after hours of failures,
        or a request with no schedule, reaches no further than finished orders are remembered,
        bridge/stream.py `forget_after_ms`); `lookback` ago when nothing is known (a first
        start). `since_margin` earlier still: the venue's clock and ours differ."""
        s = self._settings
        last = self._state.order_mark
        if trigger != "subscribe" and self._last_began is not None:
            reach = now_ms - int((max(s.lookback, s.interval) + s.since_margin) * 1000)
            last = max(self._last_began // 1000, reach)
        if last is None:
            return now_ms - int(s.lookback * 1000)
        return last - int(s.since_margin * 1000)

    async def _drain(
        self,
        session: aiohttp.ClientSession,
        calls: deque[RestCall],
        result: Reconciliation,
        seen: set[tuple[str, str]],
        lookups: bool = False,
    ) -> None:
        while calls:
            call = calls.popleft()
            try:
                page = await self._fetch(session, call)
            except SnapshotFailed as exc:
                if not lookups or exc.kind == "auth":
                    raise
                # One order the venue cannot tell about must not cost the whole run: it stays
                # open, and the next run looks it up again.
                result.lookups_failed += 1
                self._m_failures.labels(*self._labels, exc.kind).inc()
                self._log.warning(
                    "lookup failed",
                    call=call.path,
                    params=dict(call.params),
                    error=exc.detail,
                    kind=exc.kind,
                )
                continue
            calls.extend(page.more)
            for record in page.records:
                await self._publish(record, result, seen)

    async def _publish(
        self, record: Envelope, result: Reconciliation, seen: set[tuple[str, str]]
    ) -> None:
        if isinstance(record, Order):
            seen.add(("order", record.order_id))
        elif isinstance(record, Position):
            seen.add(("position", record.position_id))
        if await self._state.publish(record):
            result.counts[record.TOPIC] += 1

    def _report(self, result: Reconciliation, seconds: float) -> None:
        state = self._state
        for topic, _ in result.drift:
            self._m_drift.labels(*self._labels, topic).inc()
        if result.drift:
            self._log.warning(
                "reconcile drift",
                trigger=result.trigger,
                keys=len(result.drift),
                by_topic=dict(Counter(topic for topic, _ in result.drift)),
                first_keys=[f"{t}:{k}" for t, k in result.drift[:DRIFT_LOGGED_KEYS]],
            )
        self._log.info(
            "snapshot done",
            trigger=result.trigger,
            records=sum(result.counts.values()),
            by_topic=dict(result.counts),
            corrected=result.corrected,
            unchanged=state.unchanged,
            superseded=state.superseded,
            lookups_failed=result.lookups_failed,
            orders_since=result.orders_since,
            seconds=round(seconds, 3),
        )

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


def _missing(
    was_open: tuple[dict[str, Order], dict[str, Position]], seen: set[tuple[str, str]]
) -> tuple[list[Order], list[Position]]:
    """Orders and positions open before the run that no listing so far mentioned."""
    orders = [o for i, o in was_open[0].items() if ("order", i) not in seen]
    positions = [p for i, p in was_open[1].items() if ("position", i) not in seen]
    return orders, positions


def _stamp(body: bytes) -> Frame:
    return Frame(body, time.time_ns() // 1000, time.monotonic())


def _seconds(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None
