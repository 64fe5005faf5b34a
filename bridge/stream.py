"""What the bridge remembers about one stream, in one place: readiness, frame counters, the
orders and positions last published as open (what reconciliation needs), and — while a
snapshot runs — the state keys that got newer pushes.

Every record of the stream, live or from a snapshot, goes to the sink through `publish`.

Ordering rule (why the last record per key is right): a snapshot starts only once the
subscription is active, so every change after that arrives as a push, in order. A snapshot
record for a state key (balances, orders, positions, credit) is skipped when a stream record
for that key was published after the snapshot began: that push, or a later one, is at least as
new. Trades are events, not state: snapshot fills are always published (same `event_id` as
any earlier copy, so consumers deduplicate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Protocol

from bridge.records import SOURCE_SNAPSHOT, SOURCE_STREAM, Envelope, Order, Position

STATE_TOPICS: Final = frozenset({"balances", "orders", "positions", "credit"})


class Publisher(Protocol):
    """Where a stream's records go (the sink; a recorder in tests)."""

    async def publish(self, record: Envelope, received_mono: float | None = None) -> None: ...


@dataclass(eq=False)
class StreamState:
    """One stream's memory. Owned by its connection loop; read by its snapshots and by
    `/readyz`."""

    name: str
    venue: str
    sink: Publisher
    subscribed: bool = False
    frames_received: int = 0
    control_frames: int = 0  # frames that carried no record: acks, errors, empty pushes
    open_orders: dict[str, Order] = field(default_factory=dict)
    open_positions: dict[str, Position] = field(default_factory=dict)
    last_order_ms: int | None = None  # newest order event time published (venue clock)
    superseded: int = 0  # snapshot records skipped for a newer push, in the current snapshot
    _fresh: set[tuple[str, str]] | None = None  # state keys pushed since the snapshot began

    async def publish(self, record: Envelope, received_mono: float | None = None) -> None:
        """Hand one record to the sink, unless it is a snapshot record a push superseded."""
        if self._fresh is not None and record.TOPIC in STATE_TOPICS:
            key = (record.TOPIC, record.key())
            if record.source == SOURCE_SNAPSHOT and key in self._fresh:
                self.superseded += 1
                return
            if record.source == SOURCE_STREAM:
                self._fresh.add(key)
        self._track(record)
        await self.sink.publish(record, received_mono)

    def _track(self, record: Envelope) -> None:
        if isinstance(record, Order):
            if record.is_final:
                self.open_orders.pop(record.order_id, None)
            else:
                self.open_orders[record.order_id] = record
            if record.event_time is not None:
                self.last_order_ms = max(self.last_order_ms or 0, record.event_time)
        elif isinstance(record, Position):
            if record.is_open:
                self.open_positions[record.position_id] = record
            else:
                self.open_positions.pop(record.position_id, None)

    def begin_snapshot(self) -> None:
        self._fresh, self.superseded = set(), 0

    def end_snapshot(self) -> None:
        self._fresh = None
