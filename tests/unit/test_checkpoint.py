"""The checkpoint's pure parts: state digests (a push and a REST answer about the same state
agree, at both venues, with the simulators' own frames), what is written after which
acknowledgement, how entries fold back into a stream's memory, and the shard function."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Callable
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.app import App, Stream
from bridge.changelog import FLUSH_SLICE, Changelog
from bridge.changelog import _apply as read_entry
from bridge.checkpoint import (
    META,
    ORDER_TIME_EVERY_US,
    Checkpoint,
    CheckpointReader,
    Tracker,
    state_digest,
)
from bridge.codec import Codec, SchemaStore, decode_record, decode_single_object
from bridge.delivery import Ledger
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.credentials import (
    AQUANOW_KEY,
    AQUANOW_SECRET,
    SATORI_KEY,
    SATORI_PRIVATE_KEY,
    SATORI_WALLET,
)
from bridge.dev.simulator.satori import SatoriSimulator, rest_order, rest_position
from bridge.dev.simulator.wire import json_text
from bridge.metrics import Metrics
from bridge.records import (
    SOURCE_SNAPSHOT,
    Balance,
    Order,
    Position,
    StateEntry,
    StateTombstone,
    VenueRecord,
)
from bridge.sections import ReconnectSettings, StateSettings
from bridge.settings import validate_settings
from bridge.shards import shard_key, shard_of
from bridge.snapshot import Snapshotter
from bridge.stream import StreamState, forget_after_ms
from bridge.venues.aquanow import AquanowVenue
from bridge.venues.base import Frame, RestCall
from bridge.venues.satori.venue import SatoriVenue
from tests import records as make
from tests.helpers import LoopTurns, wait_until

pytestmark = pytest.mark.unit

CODEC = Codec(SchemaStore.load())


def at() -> Frame:
    return Frame(b"", 1_700_000_000_000_000, 1.0)


def envelope(data: Any) -> bytes:
    return json_text({"error": False, "code": 200, "msg": "SUCCESS", "data": data}).encode()


# -- a push and a REST answer about one state have one digest ---------------------------------
def test_satori_push_and_rest_states_have_the_same_digest() -> None:
    sim = SatoriSimulator(SATORI_KEY, SATORI_WALLET, seed=4, pairs=("ETH-USD",))
    venue = SatoriVenue("s", SATORI_KEY, SATORI_PRIVATE_KEY, coins=("USD",), pairs=("ETH-USD",))
    pushed: dict[tuple[str, str], Any] = {}
    for _ in range(400):  # orders new, traded, canceled; positions opened, changed; balances
        event = sim.next_event()
        for record in venue.parse(Frame(event.text, 1, 1.0)).records:
            if record.TOPIC != "trades":
                pushed[(record.TOPIC, record.key())] = record
    calls = {
        "orders": (RestCall("orders", "POST", "/x"), [rest_order(o) for o in sim.orders.values()]),
        "positions": (
            RestCall("positions", "POST", "/x"),
            [rest_position(p) for p in sim.positions.values() if p["currentQuantity"] != "0"],
        ),
    }
    compared = 0
    for call, items in calls.values():
        for record in venue.parse_snapshot(call, 200, envelope(items), at()).records:
            assert isinstance(record, VenueRecord), record
            push = pushed[(record.TOPIC, record.key())]
            if isinstance(push, Order) and push.is_final:
                continue  # the current list lists open orders as open, by definition
            assert state_digest(record) == state_digest(push), record.key()
            compared += 1
    balance = sim.balances["USD"]
    rest = {k: balance[k] for k in ("coinId", "availableAmount", "frozenAmount", "symbol")}
    page = venue.parse_snapshot(RestCall("balance", "POST", "/b"), 200, envelope(rest), at())
    (record,) = page.records
    assert isinstance(record, Balance)
    assert record.version is None  # REST has no logId: the digest does not use it
    assert state_digest(record) == state_digest(pushed[("balances", record.key())])
    assert compared > 20


def test_aquanow_push_and_rest_states_have_the_same_digest() -> None:
    sim = AquanowSimulator(AQUANOW_KEY, AQUANOW_SECRET, seed=4)
    venue = AquanowVenue("a", AQUANOW_KEY, AQUANOW_SECRET)
    pushed: dict[tuple[str, str], Any] = {}
    for _ in range(300):
        event = sim.next_event()
        for record in venue.parse(Frame(event.text, 1, 1.0)).records:
            pushed[(record.TOPIC, record.key())] = record
    answers = [
        ("order", list(sim.orders.values())),
        ("balance", list(sim.balances.values())),
        ("tradeCreditBalance", {**(sim.credit or {}), "creditLimitUsd": Decimal(1_000_000)}),
    ]
    for kind, body in answers:
        call = RestCall(kind, "GET", "/x")
        for record in venue.parse_snapshot(call, 200, json_text(body).encode(), at()).records:
            assert isinstance(record, VenueRecord), record
            push = pushed[(record.TOPIC, record.key())]
            assert state_digest(record) == state_digest(push), record.key()


def test_a_digest_changes_with_any_state_field_and_ignores_the_envelope() -> None:
    base = make.order(order_id="1", status="new", filled_quantity=Decimal("0"))
    same = make.order(
        order_id="1",
        status="new",
        filled_quantity=Decimal("0.000"),  # the same amount, other digits
        received_at=99,
        source=SOURCE_SNAPSHOT,
        event_id="other",
        raw='{"x":1}',
        status_raw="CURRENT",
        change_type=None,
    )
    assert state_digest(base) == state_digest(same)
    for change in (
        {"status": "partially_filled"},
        {"filled_quantity": Decimal("0.1")},
        {"is_final": True},
        {"price": Decimal("2")},
    ):
        assert state_digest(make.order(**{**_order_fields(base), **change})) != state_digest(base)


def _order_fields(order: Order) -> dict[str, Any]:
    return {"order_id": order.order_id, "status": order.status, "filled_quantity": Decimal(0)}


# -- what is written, after which acknowledgement ----------------------------------------------
def encode(record: Any) -> bytes:
    return CODEC.value(record)


def test_the_tracker_writes_the_newest_acknowledged_state_per_key_and_the_meta_facts() -> None:
    tracker = Tracker()
    open_order = make.order(stream="s", order_id="7", is_final=False, event_time=1000)
    filled = make.order(stream="s", order_id="8", is_final=True, event_time=3000)
    tracker.acked(make.order(stream="s", order_id="8", is_final=False, event_time=2000))
    tracker.acked(filled)  # coalesced: only the newest of key 8 is written
    tracker.acked(open_order)
    tracker.acked(make.balance(stream="s", asset="USD", version=41))
    tracker.acked(make.balance(stream="s", asset="USD", version=40))  # an older logId
    tracker.acked(make.own_fill(stream="s", trade_id="19868095"))
    entries = written(tracker.drain(5, encode, lambda stream: {"rest_account": "CA1"}))
    by_key = {e.key(): e for e in entries}
    assert set(by_key) == {
        f"s|orders|{filled.key()}",
        f"s|orders|{open_order.key()}",
        "s|balances|aquanow||USD",
        "s|meta|",
    }
    assert by_key[f"s|orders|{filled.key()}"].open is False
    assert by_key[f"s|orders|{filled.key()}"].record is None
    entry = by_key[f"s|orders|{open_order.key()}"]
    assert entry.open is True
    assert entry.digest == state_digest(open_order)
    assert decode_record(CODEC.store, entry.record or b"") == open_order
    meta = by_key["s|meta|"]
    assert meta.last_order_time == 3000
    assert meta.versions == {"balance:USD": 41, "fill:ETH-USD": 19868095}
    assert meta.facts == {"rest_account": "CA1"}
    assert tracker.drain(6, encode, lambda stream: {}) == []  # nothing new: nothing written


def meta_time(
    tracker: Tracker,
    now: int,
    *acked: Any,
    facts: Callable[[str], dict[str, str]] = lambda stream: {},
    held: Callable[[str], tuple[int | None] | None] = lambda stream: None,
    final: bool = False,
) -> int | str | None:
    """`acked` acknowledged, then a drain at `now`: the order time of the one meta entry it
    wrote, or "not written"."""
    for record in acked:
        tracker.acked(record)
    metas = [e for e in written(tracker.drain(now, encode, facts, held, final)) if e.topic == META]
    assert len(metas) <= 1, metas
    return metas[0].last_order_time if metas else "not written"


def test_an_unreconciled_gap_holds_the_checkpoints_order_time_at_its_mark() -> None:
    """Pushes acknowledged while the gap's snapshot is still publishing older orders must not
    move the restart's "updated since" past them (a fleet handover aborting the snapshot's
    transaction lost such orders for good)."""
    state = StreamState("s", "aquanow", sink=None)  # type: ignore[arg-type]
    state.last_order_ms = 1000
    state.session_started(reconciles=True)
    state.last_order_ms = 5000  # a push of the new session, published and acknowledged
    state.session_started(reconciles=True)  # dropped and back before the snapshot finished
    tracker = Tracker()
    push = make.order(stream="s", order_id="9", event_time=5000)

    def meta(held: Callable[[str], tuple[int | None] | None]) -> int | str | None:
        return meta_time(tracker, 1, push, held=held, final=True)

    assert meta(lambda s: state.order_hold) == 1000  # the first gap's mark, not 5000
    state.gap_reconciled()
    assert meta(lambda s: state.order_hold) == 5000
    fresh = StreamState("s", "aquanow", sink=None)  # type: ignore[arg-type]
    fresh.session_started(reconciles=True)  # nothing known before: a restart reads `lookback`
    assert meta(lambda s: fresh.order_hold) is None
    fresh.session_started(reconciles=False)
    assert StreamState("s", "aquanow", sink=None).order_hold is None  # type: ignore[arg-type]


def test_a_meta_entry_whose_order_time_alone_moved_waits_its_interval() -> None:
    """Versions and facts are written at the next flush; a newer order time alone only every
    `ORDER_TIME_EVERY_US` (behind, it widens a restart's window: never misses an order), or
    at the last flush before the process ends."""
    tracker, facts = Tracker(), {"rest_account": "CA1"}

    def meta_after(now: int, *records: Any, final: bool = False) -> int | str | None:
        return meta_time(tracker, now, *records, facts=lambda stream: facts, final=final)

    order = functools.partial(make.order, stream="s", is_final=False)
    assert meta_after(0, order(order_id="1", event_time=1000)) == 1000  # a first entry
    assert meta_after(1, order(order_id="2", event_time=2000)) == "not written"
    assert meta_after(ORDER_TIME_EVERY_US - 1) == "not written"  # nothing new, still not due
    assert meta_after(ORDER_TIME_EVERY_US) == 2000  # due: the moved time is written
    assert meta_after(ORDER_TIME_EVERY_US + 1) == "not written"  # nothing new since
    assert meta_after(ORDER_TIME_EVERY_US + 2, order(order_id="3", event_time=3000)) == (
        "not written"
    )
    facts = {"rest_account": "CA2"}
    assert meta_after(ORDER_TIME_EVERY_US + 3) == 3000  # facts changed: written at once
    assert meta_after(ORDER_TIME_EVERY_US + 4, make.balance(stream="s", version=7)) == 3000
    assert meta_after(ORDER_TIME_EVERY_US + 5, order(order_id="4", event_time=4000)) == (
        "not written"
    )
    assert meta_after(ORDER_TIME_EVERY_US + 6, final=True) == 4000


def test_a_first_known_order_time_is_written_at_once() -> None:
    """No order time (a first start's gap, held at an unknown mark) is not an older time: a
    restart reading it fetches finished orders only `lookback` back. The first known time is
    written at the next flush, not after the interval."""
    state = StreamState("s", "aquanow", sink=None)  # type: ignore[arg-type]
    state.session_started(reconciles=True)  # a first start: the mark is unknown
    tracker = Tracker()

    def meta_after(now: int) -> int | str | None:
        order = make.order(stream="s", order_id=str(now), event_time=1000 + now)
        return meta_time(tracker, now, order, held=lambda s: state.order_hold)

    assert meta_after(0) is None  # held: the gap's mark is unknown
    state.gap_reconciled()
    assert meta_after(1) == 1001  # known now: written at once
    assert meta_after(2) == "not written"  # an older time stands until due


def test_the_hold_ends_only_once_the_sink_acknowledged_the_snapshots_records() -> None:
    """Handed to the sink is not written: a fleet handover aborts what its transaction has not
    committed. The hold waits for the ledger to acknowledge everything admitted before the
    snapshot finished, and not for what was admitted after."""
    sink = SimpleNamespace(ledger=Ledger(capacity=10))
    state = StreamState("s", "aquanow", sink=sink)
    state.last_order_ms = 1000
    state.session_started(reconciles=True)
    snapshot_record = sink.ledger.admit(make.order(stream="s"), CODEC.encode(make.order()), None)
    state.gap_reconciled()
    later_push = sink.ledger.admit(make.order(stream="s"), CODEC.encode(make.order()), None)
    assert state.held() == (1000,)  # the snapshot's record is not acknowledged yet
    sink.ledger.acked(later_push)
    assert state.held() == (1000,)
    sink.ledger.acked(snapshot_record)
    assert state.held() is None


def test_the_reader_folds_entries_in_order_into_a_stream_checkpoint() -> None:
    tracker = Tracker()
    order = make.order(stream="s", order_id="7", is_final=False)
    position = make.build(
        Position, stream="s", position_id="9", symbol="ETH-USD", side="long", is_open=True
    )
    for record in (order, position, make.balance(stream="s", asset="BTC", version=3)):
        tracker.acked(record)
    first = tracker.drain(10, encode, lambda stream: {})
    tracker.acked(make.build(Position, **{**_fields(position), "is_open": False}))
    later = tracker.drain(20, encode, lambda stream: {})
    reader = CheckpointReader("s")
    for entry in [*first, *later]:
        value = decode_single_object(CODEC.store, encode(entry))
        value["received_at"] = entry.received_at
        reader.apply(entry.topic, entry.record_key, value)
    reader.apply("balances", "aquanow||BTC", None)  # a tombstone forgets the key
    cp = reader.result(lambda data: decode_record(CODEC.store, data))
    assert cp.open_orders == {"7": order}
    assert cp.open_positions == {}  # closed by the later entry
    assert cp.digests["orders"] == {order.key(): state_digest(order)}
    assert "aquanow||BTC" not in cp.digests["balances"]
    assert cp.versions == {"balance:BTC": 3}
    assert cp.written_at == 20
    assert cp.keys == 2


def _fields(record: Any) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


def test_entries_are_state_records_of_the_private_topic() -> None:
    (entry,) = [
        e
        for e in _drained(make.balance(stream="s", asset="USD"))
        if isinstance(e, StateEntry) and e.topic != META
    ]
    encoded = CODEC.encode(entry)
    assert encoded.topic == "state"
    assert encoded.key == b"s|balances|aquanow||USD"
    assert CODEC.value(entry)[:2] == b"\xc3\x01"  # single-object, whatever the serialization mode


def _drained(record: Any) -> list[StateEntry]:
    tracker = Tracker()
    tracker.acked(record)
    return written(tracker.drain(1, encode, lambda stream: {}))


def written(drained: list[StateEntry | StateTombstone]) -> list[StateEntry]:
    """A drain's entries, none of them a tombstone."""
    assert all(isinstance(e, StateEntry) for e in drained), drained
    return [e for e in drained if isinstance(e, StateEntry)]


# -- forgetting finished orders and closed positions -------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.records: list[Any] = []

    async def publish(self, record: Any, received_mono: float | None = None) -> None:
        self.records.append(record)


def _ending(order_id: str, time_ms: int, final: bool = True, **fields: Any) -> Order:
    status = "filled" if final else "open"
    return make.order(
        stream="s", order_id=order_id, event_time=time_ms, is_final=final, status=status, **fields
    )


async def test_finished_keys_are_forgotten_once_no_reconciliation_can_list_them_again() -> None:
    """A finished order or closed position is dropped (digest and checkpoint entry) once the
    newest order time is `forget_after_ms` past it: memory and the checkpoint stay bounded.
    Open keys and recent finished ones stay; a forgotten key the venue lists again is
    published again (the price of forgetting, never a loss)."""
    tracker = Tracker()
    tracker.seed("aquanow", Checkpoint("s"))
    state = StreamState("s", "aquanow", Recorder(), forget_after_ms=1000)
    state.on_forget = lambda topic, key: tracker.forget("s", topic, key)
    closed = make.position(stream="s", position_id="p3", is_open=False, event_time=1600)
    for record in (
        _ending("1", 1000),
        _ending("2", 1100, final=False),  # open: never forgotten, however old
        closed,
        _ending("4", 1900),
    ):
        assert await state.publish(record)
        tracker.acked(record)
    assert list(state.finished) == [
        ("orders", _ending("1", 0).key()),
        ("positions", closed.key()),
        ("orders", _ending("4", 0).key()),
    ]
    tracker.drain(1, encode, lambda stream: {})
    assert await state.publish(_ending("5", 2100))  # the newest order time passes 1 + 1000 ms
    assert list(state.finished) == [
        ("positions", closed.key()),
        ("orders", _ending("4", 0).key()),
        ("orders", _ending("5", 0).key()),
    ]
    assert _ending("1", 0).key() not in state.digests["orders"]
    assert _ending("2", 0).key() in state.digests["orders"]
    assert set(state.open_orders) == {"2"}
    (tombstone,) = tracker.drain(2, encode, lambda stream: {})
    assert isinstance(tombstone, StateTombstone)
    encoded = CODEC.encode(tombstone)
    assert (encoded.topic, encoded.key, encoded.value) == ("state", b"s|orders|aquanow||1", None)
    # the venue lists it again: a correction, not "unchanged"
    state.begin_snapshot()
    assert await state.publish(dataclasses.replace(_ending("1", 1000), source=SOURCE_SNAPSHOT))
    assert not await state.publish(dataclasses.replace(_ending("4", 1900), source=SOURCE_SNAPSHOT))
    state.end_snapshot()


async def test_a_finished_keys_text_is_held_once_by_its_digest_and_its_end() -> None:
    """A finished key stays in memory for a day (`forget_after_ms`): its digest's dict and
    `finished` share one key text, not a copy each (~100 bytes a key)."""
    state = StreamState("s", "aquanow", Recorder(), forget_after_ms=10**9)
    assert await state.publish(_ending("1", 1000, final=False))
    assert await state.publish(_ending("1", 1100))  # a second record of the key ends it
    ((_, ended),) = state.finished
    (held,) = state.digests["orders"]
    assert held == ended
    assert held is ended


async def test_the_horizon_is_the_oldest_window_a_reconciliation_may_fetch() -> None:
    """Not the newest order time alone: the current session's mark (its gap's snapshot
    fetches from there) and a held checkpoint time (a restart fetches from there) hold it
    back."""
    state = StreamState("s", "aquanow", Recorder(), forget_after_ms=1000)
    assert await state.publish(_ending("1", 1000))
    state.session_started(reconciles=True)  # mark and hold: 1000
    assert await state.publish(_ending("2", 5000))
    assert state.forget_finished() == 0  # 1000 - 1000 is the horizon
    state.session_started()  # a new session: mark 5000, the unreconciled gap's hold stays
    assert state.forget_finished() == 0
    state.gap_reconciled()
    state.held()  # the test sink has no ledger: the hold ended
    assert state.forget_finished() == 1
    assert list(state.finished) == [("orders", _ending("2", 0).key())]
    assert StreamState("s", "aquanow", Recorder()).forget_finished() == 0  # never configured


async def test_a_stream_without_order_times_forgets_behind_its_newest_finished_key() -> None:
    """A positions-only stream never publishes an order time: its closed positions used to
    stay in memory and in the checkpoint for good. They go `forget_after_ms` behind the newest
    end (an untimed one ends when the bridge received it), at once after a restart too."""
    forgotten: list[tuple[str, str]] = []
    state = StreamState("s", "satori", Recorder(), forget_after_ms=1000)
    state.on_forget = lambda topic, key: forgotten.append((topic, key))

    def closed(position_id: str, time_ms: int | None, received_ms: int = 0) -> Position:
        return make.position(
            stream="s",
            position_id=position_id,
            is_open=False,
            event_time=time_ms,
            received_at=received_ms * 1000,
        )

    for record in (closed("1", 1000), closed("2", 1600), closed("3", None, received_ms=1800)):
        assert await state.publish(record)
    assert forgotten == []  # the newest end, 1800, is not 1000 past any
    assert await state.publish(closed("4", 2700))
    assert forgotten == [("positions", closed("1", 0).key()), ("positions", closed("2", 0).key())]
    assert list(state.finished) == [("positions", closed(k, 0).key()) for k in ("3", "4")]
    assert set(state.digests["positions"]) == {closed(k, 0).key() for k in ("3", "4")}
    assert state.last_order_ms is None
    restored = StreamState("s", "satori", Recorder(), forget_after_ms=1000)
    checkpoint = Checkpoint("s")
    checkpoint.finished = {("positions", "a"): 5000, ("positions", "b"): 3000}
    restored.restore(checkpoint)
    assert restored.forget_finished() == 1
    assert list(restored.finished) == [("positions", "a")]


def test_a_scheduled_or_requested_run_reaches_back_no_further_than_orders_are_remembered() -> None:
    """With no schedule (`interval: 0`) a requested run used to fetch finished orders from the
    previous run's start, however old: now at most `max(lookback, interval) + since_margin`
    back, and every finished order it no longer reaches is one already forgotten."""
    stream = validate_settings(
        {
            "streams": [
                {
                    "name": "s",
                    "venue": "aquanow",
                    "url": "wss://venue.invalid",
                    "rest_url": "https://venue.invalid",
                    "api_key": "k",
                    "api_secret": "x",
                    "snapshot": {"lookback": 10, "interval": 0, "since_margin": 1},
                }
            ]
        }
    ).streams[0]
    snap = stream.snapshot
    state = StreamState("s", "aquanow", Recorder())
    snapshotter = Snapshotter(
        stream.build_venue(), "https://venue.invalid", state, Metrics(), snap, ReconnectSettings()
    )
    now = 10_000_000
    snapshotter._last_began = (now - 3_600_000) * 1000  # the last run an hour ago
    assert snapshotter._since(now, "request") == now - 12_000
    snapshotter._last_began = (now - 5_000) * 1000
    assert snapshotter._since(now, "schedule") == now - 6_000  # nearer: from its start
    forget = forget_after_ms(snap.lookback, snap.interval, snap.since_margin)
    assert now - forget < now - 12_000  # the newest order at `now` forgets only older ones


async def test_an_order_reopened_or_never_handed_over_is_not_finished() -> None:
    state = StreamState("s", "aquanow", Recorder(), forget_after_ms=1000)
    assert await state.publish(_ending("1", 1000))
    assert await state.publish(_ending("1", 1100, final=False))  # reopened (a venue's amend)
    assert list(state.finished) == []
    state.sink = FailingSink()
    with pytest.raises(RuntimeError):
        await state.publish(_ending("1", 1200))  # the sink failed: still open as Kafka knows
    assert list(state.finished) == []
    assert set(state.open_orders) == {"1"}


class FailingSink:
    async def publish(self, record: Any, received_mono: float | None = None) -> None:
        raise RuntimeError("sink failed")


def test_a_forgotten_key_acknowledged_again_is_written_again() -> None:
    tracker = Tracker()
    tracker.forget("s", "orders", "aquanow||1")
    again = _ending("1", 3000)
    tracker.acked(again)  # the venue re-pushed it and Kafka acknowledged it
    (entry,) = [e for e in tracker.drain(1, encode, lambda stream: {}) if e.topic != META]
    assert isinstance(entry, StateEntry)
    assert entry.record_key == again.key()
    tracker.acked(again)
    tracker.forget("s", "orders", again.key())
    drained = [e for e in tracker.drain(2, encode, lambda stream: {}) if e.topic != META]
    assert [type(e) for e in drained] == [StateTombstone]


def test_a_restored_checkpoint_knows_when_its_finished_keys_ended_and_forgets_at_once() -> None:
    """Entries carry the finished key's event time (else their own time): a restart goes on
    forgetting where the last run was, and tombstones what fell behind while it was down."""
    tracker = Tracker()
    old, recent, opened = _ending("1", 1000), _ending("2", 9000), _ending("3", 500, final=False)
    untimed = make.position(stream="s", position_id="p", is_open=False)
    for record in (old, recent, opened, untimed):
        tracker.acked(record)
    reader = CheckpointReader("s")
    for entry in tracker.drain(4_000_000, encode, lambda stream: {}):
        e = CODEC.encode(entry)  # read back as a restore reads the topic
        read_entry({"s": reader}, e.key, e.value, entry.received_at // 1000, CODEC.store)
    read_entry({"s": reader}, b"s|orders|aquanow||gone", None, 4000, CODEC.store)
    cp = reader.result(lambda data: decode_record(CODEC.store, data))
    assert cp.finished == {
        ("orders", old.key()): 1000,
        ("orders", recent.key()): 9000,
        ("positions", untimed.key()): 4000,  # no event time: the entry's (µs → ms)
    }
    changelog = Changelog(StateSettings(), SimpleNamespace(), CODEC.store, 1)  # type: ignore[arg-type]
    state = StreamState("s", "aquanow", Recorder(), forget_after_ms=4500)
    state.restore(cp)
    changelog.add("s", SimpleNamespace(name="aquanow"), state, cp)
    assert list(state.finished) == [("orders", recent.key())]
    assert set(state.digests["orders"]) == {recent.key(), opened.key()}
    forgotten = [e for e in changelog.entries() if isinstance(e, StateTombstone)]
    assert sorted(e.record_key for e in forgotten) == sorted([old.key(), untimed.key()])
    assert {e.venue for e in forgotten} == {"aquanow"}


def _one_stream_app() -> tuple[App, Stream]:
    settings = validate_settings(
        {
            "streams": [
                {
                    "name": "s",
                    "venue": "aquanow",
                    "url": "wss://venue.invalid",
                    "api_key": "k",
                    "api_secret": "x",
                }
            ]
        }
    )
    app = App(settings)
    return app, app.build_stream(settings.streams[0], Recorder())  # type: ignore[arg-type]


def test_the_restored_keys_gauge_counts_what_the_stream_kept() -> None:
    """`bridge_state_restored_keys` is what the stream restored and kept: a key the catch-up
    added (a finished order published before the last flush, forgotten since) and the
    start-up forgets again at once is not counted."""
    app, stream = _one_stream_app()
    stale, recent = _ending("1", 1000), _ending("2", 10**12)
    cp = Checkpoint("s", last_order_ms=10**12)
    for record in (stale, recent):
        cp.digests.setdefault("orders", {})[record.key()] = "digest"
        cp.ended(("orders", record.key()), record.event_time)
    changelog = Changelog(StateSettings(), SimpleNamespace(), CODEC.store, 1)  # type: ignore[arg-type]
    app.seed(stream, cp, changelog)
    assert set(stream.state.digests["orders"]) == {recent.key()}
    assert app.metrics.restored_keys.labels("s", "aquanow").get() == 1


async def test_the_state_keys_gauge_reads_what_the_stream_remembers_at_scrape_time() -> None:
    """`bridge_state_keys`: the keys a stream holds now (what grows the bridge's memory)."""
    app, stream = _one_stream_app()
    labels = {"stream": "s", "venue": "aquanow"}
    assert app.metrics.registry.get_sample_value("bridge_state_keys", labels) == 0
    assert await stream.state.publish(_ending("1", 1000, final=False))
    assert await stream.state.publish(_ending("2", 1000))
    assert await stream.state.publish(_ending("1", 1100))  # the same key, ended
    assert app.metrics.registry.get_sample_value("bridge_state_keys", labels) == 2


# -- shards ------------------------------------------------------------------------------------
def test_shards_are_stable_shared_per_key_and_reveal_nothing() -> None:
    key = shard_key("aquanow", "the-api-key")
    assert key == shard_key("aquanow", "the-api-key")
    assert key.startswith("aquanow:")
    assert "the-api-key" not in key
    assert key != shard_key("satori", "the-api-key")
    # Fixed across processes and versions (not Python's salted hash): pinned values.
    assert shard_of("aquanow:0123456789abcdef", 12) == shard_of("aquanow:0123456789abcdef", 12)
    assert [shard_of(f"v:{i}", 12) for i in range(6)] == PINNED
    counts = [0] * 12
    for i in range(1200):
        counts[shard_of(shard_key("v", str(i)), 12)] += 1
    assert min(counts) > 60  # spread over every shard
    with pytest.raises(ValueError, match="at least 1"):
        shard_of("x", 0)


PINNED = [1, 0, 5, 8, 2, 5]  # SHA-256 based: these never change


async def test_a_large_flush_gives_the_loop_turns_between_slices() -> None:
    """A flush publishes every entry of every stream; with a sink that never has to wait
    (room in the buffer), it must still let pushes, pings and /healthz run (FLUSH_SLICE)."""

    class BusySink:
        async def publish(self, entry: object) -> None:
            until = time.monotonic() + 0.001  # encoding and batching, no suspension
            while time.monotonic() < until:
                pass

    changelog = Changelog(StateSettings(), BusySink(), CODEC.store, 1)  # type: ignore[arg-type]
    entries: list[StateEntry | StateTombstone] = [
        *_drained(make.balance(stream="s", asset="USD"))[:1] * 30
    ]
    changelog.entries = lambda final=False: entries  # type: ignore[method-assign]
    async with LoopTurns() as turns:
        assert await changelog.flush() == 30
    assert turns.count >= 30 * 0.001 // FLUSH_SLICE  # one turn per slice at least


async def test_entries_of_a_cancelled_flush_are_written_by_the_next() -> None:
    """The shutdown cancels the periodic flush, then flushes one last time: entries the
    cancelled flush had drained but not published must not be lost (the checkpoint would lag
    and a quiet restart publish again)."""
    published: list[object] = []
    gate = asyncio.Event()

    class GatedSink:
        async def publish(self, entry: object) -> None:
            if len(published) == 2 and not gate.is_set():
                await gate.wait()  # the buffer is full: the flush waits here
            published.append(entry)

    changelog = Changelog(StateSettings(), GatedSink(), CODEC.store, 1)  # type: ignore[arg-type]
    tracker = Tracker()
    for asset in ("A1", "A2", "A3", "A4"):
        tracker.acked(make.balance(stream="s", asset=asset))
    first = tracker.drain(1, encode, lambda stream: {})
    changelog.entries = lambda final=False: first  # type: ignore[method-assign]
    flushing = asyncio.create_task(changelog.flush())
    await wait_until(lambda: len(published) == 2, "two entries written, the third waiting")
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    gate.set()
    changelog.entries = lambda final=False: []  # type: ignore[method-assign]
    assert await changelog.flush(final=True) == len(first) - 2
    assert published == first
