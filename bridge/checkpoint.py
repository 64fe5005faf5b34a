"""Pure: a stream's memory across restarts, as entries of the checkpoint topic.

Kafka already holds what the bridge published: the last record per key. What a restarted
stream needs of it is small, so it keeps its own compacted changelog beside the data topics
(the way Kafka Streams restores a store from its changelog): per state key the **digest** of
the fields that describe the state (a snapshot record with the same digest is not published
again), whether an order or position is still **open** (with the record itself, so
reconciliation can look it up and close it), and one **meta** entry per stream (the newest
order time, Satori's highest balance `logId` per coin and newest own fill id per pair, the facts
the venue module asks to keep). All of it goes to the stream's shard's partition
(bridge/shards.py): restoring a stream reads one partition.

Entries are written only after the broker acknowledged the record they describe (`Tracker`
is fed by the sink's acknowledgements), coalesced per key: the checkpoint may lag the data
topics by one flush, never lead them (a leading one would hide a lost record behind an equal
digest). The lag is made up at start: the orders and positions published since shortly before
the newest entry are read back (bridge/changelog.py `catch_up`), else an order published open
in the last flush interval before a crash, and ended while the bridge was down, would stay
open on Kafka: the restarted stream would not know to look it up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from operator import attrgetter
from typing import Any, Final

from bridge.records import (
    SOURCE_BRIDGE,
    Balance,
    CreditBalance,
    Envelope,
    Order,
    Position,
    StateEntry,
    StateTombstone,
    Trade,
    VenueRecord,
    make_event_id,
)

META: Final = "meta"
STATE_TOPICS: Final = frozenset({"balances", "orders", "positions", "credit"})
# Keys that end: a finished order, a closed position. Their digests are forgotten once no
# reconciliation window reaches back to them (bridge/stream.py `forget_finished`).
ENDING_TOPICS: Final = frozenset({"orders", "positions"})

# The fields that describe each kind of state: what the venue would say about the key right
# now. Not the envelope (`received_at`, `source`, `event_id`, `raw`), not what describes the
# event that led there (`change`, `change_type`, `status_raw`, `last_fill_quantity`, a fill's
# fee), and not what only one of a venue's two shapes carries (Aquanow's REST credit line has
# `creditLimitUsd`, its push does not; Satori's REST balance has no `logId`): a push and a REST
# answer about the same state must give the same digest (tests/unit/test_checkpoint.py holds
# each venue to that with the simulators' own frames).
STATE_FIELDS: Final[dict[type[VenueRecord], tuple[str, ...]]] = {
    Balance: (
        "account",
        "asset",
        "available",
        "total",
        "frozen",
        "pending",
        "pending_transfer",
        "credit",
        "deposit_address",
    ),
    Order: (
        "account",
        "order_id",
        "symbol",
        "side",
        "status",
        "is_final",
        "quantity",
        "price",
        "filled_quantity",
        "filled_quote",
        "average_price",
        "remaining_quantity",
    ),
    Position: (
        "account",
        "position_id",
        "symbol",
        "side",
        "is_open",
        "quantity",
        "closable_quantity",
        "entry_price",
        "margin",
        "margin_call_amount",
        "margin_mode",
    ),
    CreditBalance: ("account", "asset", "adjusted_mtm", "ltv", "unutilized_credit"),
}


_STATE_OF: Final = {kind: attrgetter(*fields) for kind, fields in STATE_FIELDS.items()}


def state_digest(record: VenueRecord) -> str:
    """16 hex digits over the `repr` of the record's state fields, decimals normalized
    ("2.50" = 2.5). On every state record's path: ~5 µs (tests/bench)."""
    values = _STATE_OF[type(record)](record)
    parts = [v.normalize() if isinstance(v, Decimal) else v for v in values]
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()


def ended_at(record: VenueRecord) -> int:
    """When a finished order or closed position ended, as forgetting measures it: its event time
    (venue ms), else when the bridge received it."""
    return record.event_time or record.received_at // 1000


def mark_ended(
    finished: dict[tuple[str, str], int], state_key: tuple[str, str], at: int | None
) -> None:
    """A key's newest record or entry in `finished` (ending order, the order forgetting walks):
    finished at `at` (ms), moved last; or not finished (None), dropped."""
    finished.pop(state_key, None)
    if at is not None:
        finished[state_key] = at


def is_open(record: VenueRecord) -> bool:
    """An order or position reconciliation must follow up on if the venue stops listing it."""
    if isinstance(record, Order):
        return not record.is_final
    return isinstance(record, Position) and record.is_open


@dataclass
class Checkpoint:
    """What one stream restores before it subscribes."""

    stream: str
    digests: dict[str, dict[str, str]] = field(default_factory=dict)  # topic → key → digest
    open_orders: dict[str, Order] = field(default_factory=dict)  # by order id
    open_positions: dict[str, Position] = field(default_factory=dict)  # by position id
    # finished orders and closed positions: (topic, key) → their event time (venue ms; the
    # entry's time when the venue gave none), in the order their entries were written
    finished: dict[tuple[str, str], int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)
    last_order_ms: int | None = None
    written_at: int | None = None  # the newest entry's time (µs): the last acknowledged fact
    entries: int = 0

    @property
    def keys(self) -> int:
        return sum(len(d) for d in self.digests.values())

    def ended(self, state_key: tuple[str, str], at: int | None) -> None:
        """The key's newest entry or record: finished at `at` (ms), or not finished (None)."""
        mark_ended(self.finished, state_key, at)


class CheckpointReader:
    """Folds one stream's entries, in partition order, into its `Checkpoint`. Open records stay
    encoded until the end: only the ones still open then are decoded."""

    def __init__(self, stream: str) -> None:
        self.checkpoint = Checkpoint(stream)
        self._open: dict[tuple[str, str], bytes] = {}

    def apply(self, topic: str, record_key: str, entry: Mapping[str, Any] | None) -> None:
        """One entry (decoded StateEntry fields; None for a tombstone)."""
        cp = self.checkpoint
        cp.entries += 1
        if entry is not None:
            cp.written_at = max(cp.written_at or 0, entry["received_at"])
        if topic == META:
            if entry is not None:
                cp.versions = dict(entry["versions"])
                cp.facts = dict(entry["facts"])
                cp.last_order_ms = entry["last_order_time"]
            return
        digests = cp.digests.setdefault(topic, {})
        state_key = (topic, record_key)
        if entry is None:
            digests.pop(record_key, None)
            self._open.pop(state_key, None)
            cp.ended(state_key, None)
            return
        digests[record_key] = entry["digest"]
        if entry["open"] and entry["record"] is not None:
            self._open[state_key] = entry["record"]
        else:
            self._open.pop(state_key, None)
        ending = topic in ENDING_TOPICS and not entry["open"]
        cp.ended(
            state_key, (entry["event_time"] or entry["received_at"] // 1000) if ending else None
        )

    def result(self, decode: Callable[[bytes], Envelope]) -> Checkpoint:
        cp = self.checkpoint
        for data in self._open.values():
            record = decode(data)
            if isinstance(record, Order):
                cp.open_orders[record.order_id] = record
            elif isinstance(record, Position):
                cp.open_positions[record.position_id] = record
        self._open.clear()
        return cp


# How often a stream's meta entry is written when only its newest order time moved. Behind,
# it only widens a restart's window of finished orders (bridge/snapshot.py `_since`), which
# goes back `since_margin` further anyway; written at every flush, it was a third of the
# records a busy stream of new orders makes (tests/bench fan-out: 0.28 → 0.20 of a core
# without the checkpoint). Versions and facts are written at the next flush, as before, and
# so is a time becoming known or unknown: no time is not an older one, it sends a restart back
# only `lookback` (tests/e2e/test_restart_e2e.py lost the orders of a longer downtime so).
ORDER_TIME_EVERY_US: Final = 10_000_000


@dataclass
class _Meta:
    venue: str
    versions: dict[str, int] = field(default_factory=dict)
    last_order_ms: int | None = None
    dirty: bool = False
    # What the last meta entry said (versions, facts, order time) and when (µs)
    said: tuple[dict[str, int], dict[str, str], int | None] | None = None
    said_at: int = 0


class Tracker:
    """What the checkpoint must say next, from the records Kafka acknowledged: the newest
    acknowledged record per state key (coalesced until the next flush) and each stream's meta
    facts. `drain` turns it into entries."""

    def __init__(self) -> None:
        # per state key: the newest acknowledged record, its single-object bytes when it is
        # open (None: encode at drain) and its digest (None: compute at drain); None when the
        # stream forgot the key (a tombstone)
        self._pending: dict[tuple[str, str, str], _Acked | None] = {}
        self._meta: dict[str, _Meta] = {}

    def seed(self, venue: str, checkpoint: Checkpoint) -> None:
        """Start from what was restored, so the meta entry keeps what earlier runs learned."""
        self._meta[checkpoint.stream] = _Meta(
            venue, dict(checkpoint.versions), checkpoint.last_order_ms
        )

    def acked(
        self, record: Envelope, encoded: bytes | None = None, digest: str | None = None
    ) -> None:
        """A record the broker acknowledged (called for every record: cheap when not state).
        `encoded`: an open record's single-object bytes as Kafka holds them, `digest` its
        state digest as admitted (bridge/stream.py): given, the drain does not make them again."""
        if record.TOPIC in STATE_TOPICS:
            assert isinstance(record, VenueRecord)
            self._pending[(record.stream, record.TOPIC, record.key())] = (record, encoded, digest)
            self._note(record)
        elif isinstance(record, Trade) and record.account is not None:
            self._note(record)  # an own fill: its id is a watermark

    def forget(self, stream: str, topic: str, record_key: str) -> None:
        """The stream forgot a finished key (bridge/stream.py): its entry is deleted at the
        next drain (a tombstone), unless the key is acknowledged again before."""
        self._pending[(stream, topic, record_key)] = None

    def _tombstone(self, key: tuple[str, str, str], now_us: int) -> StateTombstone:
        stream, topic, record_key = key
        meta = self._meta.get(stream)
        return StateTombstone(
            venue=meta.venue if meta is not None else "",
            stream=stream,
            received_at=now_us,
            source=SOURCE_BRIDGE,
            event_id=make_event_id(stream, "forget", topic, record_key, now_us),
            topic=topic,
            record_key=record_key,
        )

    def _note(self, record: VenueRecord) -> None:
        meta = self._meta.get(record.stream)
        if meta is None:
            meta = self._meta[record.stream] = _Meta(record.venue)
        if isinstance(record, Order) and record.event_time is not None:
            if meta.last_order_ms is None or record.event_time > meta.last_order_ms:
                meta.last_order_ms = record.event_time
                meta.dirty = True
        elif isinstance(record, Balance) and record.version is not None:
            meta.dirty |= _raise(meta.versions, f"balance:{record.asset}", record.version)
        elif isinstance(record, Trade) and record.trade_id.isdigit():
            meta.dirty |= _raise(meta.versions, f"fill:{record.symbol}", int(record.trade_id))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def drain(
        self,
        now_us: int,
        encode: Callable[[Envelope], bytes],
        facts: Callable[[str], Mapping[str, str]],
        held: Callable[[str], tuple[int | None] | None] = lambda stream: None,
        final: bool = False,
    ) -> list[StateEntry | StateTombstone]:
        """The entries to write now, a tombstone for each key forgotten; `encode` gives an
        open record's bytes, `facts(stream)` the venue module's restart facts (written with the
        stream's meta entry), `held(stream)` the order time its meta entry may not pass while a
        gap is unreconciled (`StreamState.order_hold`). A stream's meta entry is written when
        its versions or facts changed, or its order time did and the last one is
        `ORDER_TIME_EVERY_US` old (`final`: at once, the last flush before the process ends)."""
        entries: list[StateEntry | StateTombstone] = [
            self._tombstone(key, now_us) if acked is None else _entry(acked, now_us, encode)
            for key, acked in self._pending.items()
        ]
        streams = {stream for (stream, _, _), acked in self._pending.items() if acked is not None}
        self._pending.clear()
        for stream, meta in self._meta.items():
            if meta.dirty or stream in streams:
                said = (dict(meta.versions), dict(facts(stream)), _held(meta, held(stream)))
                if meta.said is not None and said[:2] == meta.said[:2]:
                    if said[2] == meta.said[2]:
                        meta.dirty = False
                        continue
                    due = meta.said_at + ORDER_TIME_EVERY_US <= now_us
                    if not (final or due or meta.said[2] is None or said[2] is None):
                        meta.dirty = True  # only the order time moved: written when due
                        continue
                meta.dirty, meta.said, meta.said_at = False, said, now_us
                entries.append(_meta_entry(stream, meta.venue, now_us, said))
        return entries


def _raise(versions: dict[str, int], name: str, value: int) -> bool:
    """Raise a version to `value`; whether it changed."""
    if name in versions and versions[name] >= value:
        return False
    versions[name] = value
    return True


_Acked = tuple[VenueRecord, bytes | None, str | None]  # record, encoded if open, digest


def _entry(acked: _Acked, now_us: int, encode: Callable[[Envelope], bytes]) -> StateEntry:
    record, encoded, digest = acked
    open_ = is_open(record)
    if open_ and encoded is None:
        encoded = encode(record)
    return StateEntry(
        venue=record.venue,
        stream=record.stream,
        received_at=now_us,
        source=SOURCE_BRIDGE,
        event_id=record.event_id,
        topic=record.TOPIC,
        record_key=record.key(),
        account=record.account,
        digest=state_digest(record) if digest is None else digest,
        open=open_,
        event_time=record.event_time,
        record=encoded if open_ else None,
        versions={},
        facts={},
        last_order_time=None,
    )


def _held(meta: _Meta, hold: tuple[int | None] | None) -> int | None:
    """The order time the meta entry may say: the newest, unless a gap holds it back."""
    last = meta.last_order_ms
    if hold is not None:
        (mark,) = hold
        last = None if mark is None or last is None else min(last, mark)
    return last


def _meta_entry(
    stream: str,
    venue: str,
    now_us: int,
    said: tuple[dict[str, int], dict[str, str], int | None],
) -> StateEntry:
    versions, facts, last = said
    return StateEntry(
        venue=venue,
        stream=stream,
        received_at=now_us,
        source=SOURCE_BRIDGE,
        event_id=make_event_id(stream, META, now_us),
        topic=META,
        record_key="",
        account=None,
        digest=None,
        open=False,
        event_time=None,
        record=None,
        versions=dict(versions),
        facts=facts,
        last_order_time=last,
    )
