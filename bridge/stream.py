"""What the bridge remembers about one stream, in one place: readiness, frame counters, the
digest of the last state published per key, the orders and positions last published as open
(what reconciliation needs), and — while a snapshot runs — the state keys that got newer pushes.
After a restart, all of it is seeded from the stream's checkpoint (`restore`) before the stream
subscribes.

Every record of the stream, live or from a snapshot, goes to the sink through `publish`.

Ordering rule (why the last record per key is right): a snapshot starts only once the
subscription is active, so every change after that arrives as a push, in order. A snapshot
record for a state key (balances, orders, positions, credit) is skipped when a stream record
for that key was published after the snapshot began: that push, or a later one, is at least as
new. Trades are events, not state: snapshot fills are always published (same `event_id` as
any earlier copy, so consumers deduplicate).

Change-only rule (Debezium's snapshot window): a snapshot record is also skipped when its state
digest (bridge/checkpoint.py) equals the digest of the last record published for its key: a
reconnect or a restart then adds no duplicate. Pushes are always published.

Forgetting: a finished order or closed position is listed again only by a reconciliation whose
window of finished orders reaches back to it. Once the newest order time is `forget_after_ms`
past it (further back than any window: bridge/snapshot.py `_since`, `forget_after_ms` below),
its digest is dropped and its checkpoint entry deleted (`on_forget`): memory, the checkpoint
topic and a restart's restore stay bounded by the open keys and the recent ones.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from bridge.checkpoint import (
    ORDER_TIME_EVERY_US,
    STATE_TOPICS,
    Checkpoint,
    ended_at,
    mark_ended,
    state_digest,
)
from bridge.delivery import Ledger
from bridge.disklog import Ticket
from bridge.records import (
    SOURCE_SNAPSHOT,
    SOURCE_STREAM,
    ControlRecord,
    Envelope,
    Order,
    Position,
    VenueRecord,
)

StateKey = tuple[str, str]  # (logical topic, record key)


def forget_after_ms(lookback: float, interval: float, since_margin: float) -> int:
    """How far behind the stream's newest order time (venue ms) a finished order or closed
    position is forgotten, from its `snapshot` settings: further back than any window of
    finished orders a reconciliation fetches (`lookback` on a first start, a scheduled or
    requested run `max(lookback, interval) + since_margin`, then `since_margin` earlier),
    plus 10 s: how far the checkpoint's order time may lag (`ORDER_TIME_EVERY_US`), and how far
    the venue's clock may run ahead of ours."""
    seconds = max(lookback, interval) + 2 * since_margin
    return int(seconds * 1000) + ORDER_TIME_EVERY_US // 1000


class Publisher(Protocol):
    """Where a stream's records go (the sink; a recorder in tests)."""

    async def publish(self, record: Envelope, received_mono: float | None = None) -> None: ...


class TicketPublisher(Protocol):
    """A publisher that also takes the disk buffer's ticket and a state record's digest
    (bridge.sink.Sink, which says so with `takes_digest`). Tickets exist only with the disk
    buffer on, which the app wires to the sink alone: a recorder without the arguments serves
    every other test."""

    async def publish(
        self,
        record: Envelope,
        received_mono: float | None = None,
        ticket: Ticket | None = None,
        digest: str | None = None,
    ) -> None: ...


@dataclass(eq=False)
class StreamState:
    """One stream's memory. Owned by its connection loop; read by its snapshots, heartbeats
    and by `/readyz`."""

    name: str
    venue: str
    sink: Publisher
    subscribed: bool = False
    frames_received: int = 0
    control_frames: int = 0  # frames that carried no record: acks, errors, empty pushes
    open_orders: dict[str, Order] = field(default_factory=dict)
    open_positions: dict[str, Position] = field(default_factory=dict)
    last_order_ms: int | None = None  # newest order event time published (venue clock)
    # `last_order_ms` when the current session connected: orders updated during the gap
    # before it are newer (the session's own pushes move `last_order_ms` at once).
    order_mark: int | None = None
    # While a gap is not reconciled, the newest order time the checkpoint may keep is the mark
    # of the gap's first session: pushes acknowledged meanwhile are newer than orders the gap's
    # snapshot has yet to publish, and a restart would fetch only from the newest (`held`).
    order_hold: tuple[int | None] | None = None
    # The hold ends once this ledger acknowledged every record below this seq.
    _release: tuple[Ledger, int] | None = None
    digests: dict[str, dict[str, str]] = field(
        default_factory=lambda: {topic: {} for topic in STATE_TOPICS}
    )
    # Finished orders and closed positions, in the order they ended: key → event time (venue
    # ms). Forgotten `forget_after_ms` behind the newest order time, or the newest end in a
    # stream without order times (None: never); the checkpoint hears of each
    # (`on_forget(topic, key)`).
    finished: OrderedDict[StateKey, int] = field(default_factory=OrderedDict)
    forget_after_ms: int | None = None
    on_forget: Callable[[str, str], None] | None = None
    _sweep_at: int = 0  # the newest order time (ms) at which the oldest finished key may go
    last_record_at: int | None = None  # wall clock (µs) of the last record handed over
    last_record_mono: float | None = None
    pushed: asyncio.Event = field(default_factory=asyncio.Event)  # set at the first push
    restored_at: int | None = None  # the restored checkpoint's newest entry (µs)
    # The current gap: since when facts may be missing (the previous session's end, or the
    # restored checkpoint's time) and when the stream subscribed again (µs).
    gap_start: int | None = None
    gap_end: int | None = None
    subscribed_mono: float = 0.0  # time.monotonic() when the current session subscribed
    resync: asyncio.Event = field(default_factory=asyncio.Event)  # set: requests are waiting
    _resync_requests: list[str] = field(default_factory=list)
    # The current snapshot run: records skipped for a newer push, skipped as unchanged, and
    # the keys it published because the venue's state differed.
    superseded: int = 0
    unchanged: int = 0
    corrected: list[StateKey] = field(default_factory=list)
    _fresh: set[StateKey] | None = None  # state keys pushed since the snapshot began

    @property
    def keys(self) -> int:
        """State keys remembered now (a digest each: open, and ended until forgotten)."""
        return sum(len(digests) for digests in self.digests.values())

    def restore(self, checkpoint: Checkpoint) -> None:
        """Seed from the stream's checkpoint: what Kafka holds is what was published."""
        for topic, digests in checkpoint.digests.items():
            self.digests.setdefault(topic, {}).update(digests)
        self.open_orders.update(checkpoint.open_orders)
        self.open_positions.update(checkpoint.open_positions)
        self.finished.update(sorted(checkpoint.finished.items(), key=lambda item: item[1]))
        self.last_order_ms = checkpoint.last_order_ms
        self.restored_at = self.gap_start = checkpoint.written_at

    async def publish(
        self, record: Envelope, received_mono: float | None = None, ticket: Ticket | None = None
    ) -> bool:
        """Hand one record to the sink, unless it is a snapshot record that a push superseded
        or that states what was already published. True when it was handed over. `ticket`:
        the disk buffer's frame it was made from (bridge/diskbuffer.py)."""
        undo: _Undo | None = None
        if record.TOPIC in STATE_TOPICS:
            assert isinstance(record, VenueRecord)
            undo = self._admit(record)
            if undo is None:
                return False
        if record.source == SOURCE_STREAM:
            self.pushed.set()
        last_order_ms = self.last_order_ms
        opened = self._track(record, None if undo is None else undo[0])
        self.last_record_at = time.time_ns() // 1000
        self.last_record_mono = time.monotonic()
        try:
            if getattr(self.sink, "takes_digest", False):  # the checkpoint reuses the digest
                digest = None if undo is None else undo[1]
                await cast(TicketPublisher, self.sink).publish(
                    record, received_mono, ticket, digest
                )
            elif ticket is None:
                await self.sink.publish(record, received_mono)
            else:
                await cast(TicketPublisher, self.sink).publish(record, received_mono, ticket)
        except BaseException:
            self._not_handed(record, undo, opened, last_order_ms)
            raise
        return True

    async def announce(self, record: ControlRecord) -> None:
        """A control record about this stream (bridge/control.py): straight to the sink; it
        is not a fact of the stream (heartbeats count only facts)."""
        await self.sink.publish(record)

    def request_resync(self, *request_ids: str) -> None:
        """An operator asked for a reconciliation; the next run answers (bridge resync)."""
        if request_ids:
            self._resync_requests.extend(request_ids)
            self.resync.set()

    def take_resync_requests(self) -> tuple[str, ...]:
        requests, self._resync_requests = tuple(self._resync_requests), []
        self.resync.clear()
        return requests

    def _admit(self, record: VenueRecord) -> _Undo | None:
        """Whether to publish `record` (None: skip it), and what it changed, to undo if it
        never reaches the sink."""
        state_key = (record.TOPIC, record.key())
        digests = self.digests[record.TOPIC]
        digest = state_digest(record)
        before = digests.get(state_key[1])
        fresh, added = self._fresh, False
        if record.source == SOURCE_SNAPSHOT:
            if fresh is not None and state_key in fresh:
                self.superseded += 1
                return None
            if before == digest:
                self.unchanged += 1
                return None
            self.corrected.append(state_key)
        elif fresh is not None and state_key not in fresh:
            fresh.add(state_key)
            added = True
        digests[state_key[1]] = digest
        return state_key, digest, before, added

    def _not_handed(
        self,
        record: Envelope,
        undo: _Undo | None,
        opened: Order | Position | None,
        last_order_ms: int | None,
    ) -> None:
        """`record` never reached the sink (a snapshot cancelled while it waited for room, a
        sink that failed): say again what was published before it, as far as nothing newer
        replaced it meanwhile. Else the next snapshot would skip the venue's state as
        unchanged (a stale key) and fetch finished orders only from after this one's time (a
        missing order)."""
        if undo is not None:
            (topic, key), digest, before, added = undo
            digests = self.digests[topic]
            if digests.get(key) == digest:
                if before is None:
                    digests.pop(key, None)
                else:
                    digests[key] = before
            if added and self._fresh is not None:
                self._fresh.discard((topic, key))
        if isinstance(record, Order):
            _put_back(self.open_orders, record.order_id, record, opened)
            if record.order_id in self.open_orders:
                self.finished.pop((record.TOPIC, record.key()), None)
            if record.event_time is not None and self.last_order_ms is not None:
                floor = min(last_order_ms or 0, record.event_time - 1)
                self.last_order_ms = min(self.last_order_ms, floor) or None
        elif isinstance(record, Position):
            _put_back(self.open_positions, record.position_id, record, opened)
            if record.position_id in self.open_positions:
                self.finished.pop((record.TOPIC, record.key()), None)

    def _track(self, record: Envelope, state_key: StateKey | None) -> Order | Position | None:
        """Follow the open orders and positions and the newest order time; returns the open
        entry `record` replaces (see `_not_handed`). `state_key`: the one `_admit` made."""
        if isinstance(record, Order):
            if record.event_time is not None:
                self.last_order_ms = max(self.last_order_ms or 0, record.event_time)
            self._ended(record, record.is_final, state_key)
            if record.is_final:
                return self.open_orders.pop(record.order_id, None)
            replaced: Order | Position | None = self.open_orders.get(record.order_id)
            self.open_orders[record.order_id] = record
            return replaced
        if isinstance(record, Position):
            self._ended(record, not record.is_open, state_key)
            if not record.is_open:
                return self.open_positions.pop(record.position_id, None)
            replaced = self.open_positions.get(record.position_id)
            self.open_positions[record.position_id] = record
            return replaced
        return None

    def _ended(self, record: Order | Position, ended: bool, state_key: StateKey | None) -> None:
        """Follow the finished keys (`finished`), forgetting the oldest ones first."""
        if self.forget_after_ms is None:
            return
        at = ended_at(record) if ended else None
        if state_key is None:
            state_key = (record.TOPIC, record.key())
        elif at is not None:
            # the digest's dict keeps the key text it first got; given this record's instead,
            # a finished key's text is held once, by both (~100 bytes a key for a day)
            digests = self.digests[state_key[0]]
            digests[state_key[1]] = digests.pop(state_key[1])
        mark_ended(self.finished, state_key, at)
        clock = self.last_order_ms if self.last_order_ms is not None else at
        if at is not None and clock is not None and clock >= self._sweep_at:
            self.forget_finished()  # else nothing can go yet

    def forget_finished(self) -> int:
        """Drop the digests of the finished keys `forget_after_ms` behind the newest order
        time, the oldest first, and tell `on_forget`; how many. The newest order time is the
        earliest of the published one, the current session's mark and the checkpoint's hold:
        the windows a reconciliation after a gap or a restart fetches from (bridge/snapshot.py
        `_since`; a scheduled or requested run reaches back `max(lookback, interval) +
        since_margin` at most, and `forget_after_ms` is longer). A stream that never published
        an order time (positions only) measures from its newest finished key instead: with
        no order time known a reconciliation fetches finished orders from `lookback` ago at
        most, and the venues list open positions only."""
        times = [self.last_order_ms, self.order_mark, *(self.order_hold or ())]
        known = [t for t in times if t is not None]
        if not known and self.finished:
            known = [next(reversed(self.finished.values()))]  # the last to end
        if self.forget_after_ms is None or not known:
            return 0
        horizon, forgotten = min(known) - self.forget_after_ms, 0
        while self.finished:
            key, ended_at = next(iter(self.finished.items()))
            if ended_at >= horizon:
                break
            self.finished.popitem(last=False)
            self.digests[key[0]].pop(key[1], None)
            if self.on_forget is not None:
                self.on_forget(*key)
            forgotten += 1
        oldest = next(iter(self.finished.values()), None)
        self._sweep_at = 0 if oldest is None else oldest + self.forget_after_ms + 1
        return forgotten

    def session_started(self, reconciles: bool = False) -> None:
        """A new session connected: mark where the gap before it began. With a snapshot to
        come (`reconciles`), the checkpoint's order time is held at that mark until it is done
        (`gap_reconciled`); a hold already in place (an earlier gap never reconciled) stays."""
        self.order_mark = self.last_order_ms
        if reconciles and self.order_hold is None:
            self.order_hold = (self.order_mark,)
        self._release = None  # a new gap: its own snapshot must finish

    def gap_reconciled(self) -> None:
        """The gap's snapshot handed all its records to the sink: the hold ends once the sink
        has them all acknowledged (handed is not written: a fleet handover aborts what the
        transaction has not committed, a crash loses what the broker has not acknowledged)."""
        ledger: Ledger | None = getattr(self.sink, "ledger", None)  # test recorders have none
        if ledger is None:
            self.order_hold = None
        elif self.order_hold is not None:
            self._release = (ledger, ledger.next_seq)

    def held(self) -> tuple[int | None] | None:
        """The order time the checkpoint may not pass now (`order_hold`), None when free."""
        if self._release is not None and self._release[0].settled_below(self._release[1]):
            self.order_hold, self._release = None, None
        return self.order_hold

    def begin_snapshot(self) -> None:
        self._fresh, self.superseded, self.unchanged, self.corrected = set(), 0, 0, []

    def unexplained(self) -> list[StateKey]:
        """The keys this snapshot corrected that no push touched since it began: state the
        venue changed without telling us (drift), as far as the pushes received so far say."""
        fresh = self._fresh or set()
        return [key for key in dict.fromkeys(self.corrected) if key not in fresh]

    def end_snapshot(self) -> None:
        self._fresh = None


# What `_admit` changed for a state record: its key, the digest it set, the digest before,
# and whether it added the key to the snapshot's fresh keys.
_Undo = tuple[StateKey, str, str | None, bool]


def _put_back(
    opened: dict[str, Any], ident: str, record: Envelope, before: Order | Position | None
) -> None:
    """Restore the open entry `record` replaced or removed, unless a newer record changed it."""
    current = opened.get(ident)
    if current is not record and current is not None:
        return  # a newer record of the same order or position
    if before is None:
        opened.pop(ident, None)
    else:
        opened[ident] = before
