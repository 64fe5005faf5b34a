"""The checkpoint's I/O: written behind the broker's acknowledgements, read back at start.

What the entries mean is bridge/checkpoint.py. Here: the checkpoint topic's partition count is
the shard count (the topic is compacted and created like the bridge's other topics,
bridge/topics.py); each stream's shard's partition is read from its beginning to its end offset
at start (`restore`), and while the bridge runs the entries describing acknowledged records are
written every `state.flush_interval` seconds (`Changelog`), each to its stream's shard
partition, through the same sink as every record.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bridge.checkpoint import (
    ENDING_TOPICS,
    Checkpoint,
    CheckpointReader,
    Tracker,
    ended_at,
    is_open,
    state_digest,
)
from bridge.codec import Codec, SchemaStore, decode_record, decode_single_object
from bridge.errors import KafkaAccessError, SinkError
from bridge.kafka import KafkaAccess
from bridge.logs import get_logger
from bridge.records import Envelope, Order, Position, StateEntry, StateTombstone, VenueRecord
from bridge.sections import StateSettings
from bridge.shards import shard_of
from bridge.sink import Sink
from bridge.stream import StreamState
from bridge.venues.base import Venue

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# How long before its newest checkpoint entry a record may have been created (its Kafka
# timestamp, set when the producer took it) and still be acknowledged after that entry was
# written: a record in flight while the broker answers slowly (aiokafka's request timeout is
# 40 s; a resend takes a new timestamp).
CATCH_UP_MARGIN_MS: Final = 60_000
# A flush gives the loop a turn after every this many seconds of publishing: 1,000 streams'
# entries held it up to 0.12 s in one go (tests/bench fan-out, issue 17 session 5).
FLUSH_SLICE: Final = 0.005


async def state_partitions(access: KafkaAccess, topic: str) -> int:
    """The checkpoint topic's partition count: the shard count. The topic exists by now: it is
    one of the bridge's topics, checked (and, with `kafka.create_topics`, created with
    `kafka.new_topics.state_partitions` partitions) at start (bridge/topics.py)."""
    (found,) = await access.topics([topic])
    if not found.exists or not found.partitions:
        raise KafkaAccessError("topics", f"kafka: the state topic {topic} does not exist")
    return found.partitions


async def restore(
    options: dict[str, Any], topic: str, shards: Mapping[str, int], store: SchemaStore
) -> dict[str, Checkpoint]:
    """Each stream's checkpoint (`shards`: stream → its partition), reading only those
    partitions, each from its beginning up to the end offset it had when reading began."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **options)
    readers = {stream: CheckpointReader(stream) for stream in shards}
    partitions = sorted({TopicPartition(topic, p) for p in shards.values()})
    try:
        await consumer.start()
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        left = {tp for tp in partitions if await consumer.position(tp) < end[tp]}
        while left:
            batches = await consumer.getmany(*left, timeout_ms=1000)
            for messages in batches.values():
                for message in messages:
                    _apply(readers, message.key, message.value, message.timestamp, store)
            left = {tp for tp in left if await consumer.position(tp) < end[tp]}
    except KafkaError as exc:
        raise SinkError(f"cannot read the state topic {topic}: {exc!r}") from exc
    finally:
        await consumer.stop()
    return {s: r.result(lambda data: decode_record(store, data)) for s, r in readers.items()}


async def catch_up(
    options: dict[str, Any],
    partitions: Mapping[str, int],
    checkpoints: Mapping[str, Checkpoint],
    decode: Callable[[bytes], Envelope],
) -> int:
    """Bring each checkpoint up to the data topics: the checkpoint is written behind the acks,
    every `state.flush_interval`, so a crash loses the entries of the last records Kafka
    acknowledged. An order published as open in that window and ended while the bridge was
    down would stay open on Kafka forever (Satori's REST lists open orders only): the stream
    must know it to look it up. Those records were acknowledged after the process's last
    flush, so after the newest entry of any of its streams: the orders and positions topics
    (`partitions`: topic → partition count) are read from `CATCH_UP_MARGIN_MS` before that
    entry to their end (a cost in records published since, not in the downtime), and the last
    record per key of each restored stream replaces what its checkpoint says of that key
    (digest, open or not). Returns the records applied."""
    written = [cp.written_at for cp in checkpoints.values() if cp.written_at is not None]
    if not written:
        return 0  # nothing was ever checkpointed: a first start
    since = max(written) // 1000 - CATCH_UP_MARGIN_MS
    tps = [TopicPartition(t, p) for t, count in partitions.items() for p in range(count)]
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **options)
    applied = 0
    try:
        await consumer.start()
        consumer.assign(tps)
        found = await consumer.offsets_for_times(dict.fromkeys(tps, since))
        end = await consumer.end_offsets(tps)
        left = set()
        for tp in tps:
            at = found.get(tp)
            if at is not None and at.offset < end[tp]:
                consumer.seek(tp, at.offset)
                left.add(tp)
        while left:
            batches = await consumer.getmany(*left, timeout_ms=1000)
            for tp, messages in batches.items():
                for m in messages:
                    if m.offset < end[tp] and m.value is not None:
                        applied += _catch_up_one(checkpoints, decode, m.value)
            left = {tp for tp in left if await consumer.position(tp) < end[tp]}
    except KafkaError as exc:
        raise SinkError(f"cannot read {sorted(partitions)} to catch up: {exc!r}") from exc
    finally:
        await consumer.stop()
    return applied


def _catch_up_one(
    checkpoints: Mapping[str, Checkpoint], decode: Callable[[bytes], Envelope], value: bytes
) -> int:
    try:
        record = decode(value)
    except ValueError:
        return 0  # not written by this bridge
    cp = checkpoints.get(getattr(record, "stream", ""))
    if cp is None:
        return 0  # another process's stream
    if isinstance(record, Order):
        opened: dict[str, Any] = cp.open_orders
        ident = record.order_id
    elif isinstance(record, Position):
        opened, ident = cp.open_positions, record.position_id
    else:
        return 0
    state_key = (record.TOPIC, record.key())
    cp.digests.setdefault(record.TOPIC, {})[state_key[1]] = state_digest(record)
    if is_open(record):
        opened[ident] = record
        cp.ended(state_key, None)
    else:
        opened.pop(ident, None)
        cp.ended(state_key, ended_at(record))
    return 1


def _apply(
    readers: dict[str, CheckpointReader],
    key: bytes | None,
    value: bytes | None,
    timestamp_ms: int,
    store: SchemaStore,
) -> None:
    stream, _, rest = (key or b"").decode("utf-8", "replace").partition("|")
    reader = readers.get(stream)
    if reader is None:
        return  # another stream of the same shard
    topic, _, record_key = rest.partition("|")
    if value is None:
        reader.apply(topic, record_key, None)
        return
    entry = decode_single_object(store, value)
    entry["received_at"] = timestamp_ms * 1000
    for name in ("last_order_time", "event_time"):  # timestamp-millis: back to epoch ms
        if isinstance(entry[name], dt.datetime):
            entry[name] = (entry[name] - _EPOCH) // dt.timedelta(milliseconds=1)
    reader.apply(topic, record_key, entry)


class Changelog:
    """Writes the checkpoint behind the acknowledgements the sink reports (`acked`)."""

    def __init__(
        self, settings: StateSettings, sink: Sink, store: SchemaStore, partitions: int
    ) -> None:
        self._settings = settings
        self._sink = sink
        self._codec = Codec(store)  # single-object framing for the records entries carry
        self._partitions = partitions
        self._shards: dict[str, int] = {}
        self._venues: dict[str, Venue] = {}
        self._states: dict[str, StreamState] = {}
        self.tracker = Tracker()
        self._unwritten: list[StateEntry | StateTombstone] = []  # drained by a cancelled flush
        self._log = get_logger(component="state")

    def add(self, shard_key: str, venue: Venue, state: StreamState, cp: Checkpoint) -> int:
        """A stream whose checkpoint this writes (seeded with what it restored); the finished
        keys it forgot at once (behind the horizon since the last run)."""
        self._shards[state.name] = shard_of(shard_key, self._partitions)
        self._venues[state.name] = venue
        self._states[state.name] = state
        self.tracker.seed(venue.name, cp)
        state.on_forget = lambda topic, key: self.tracker.forget(state.name, topic, key)
        return state.forget_finished()

    def partition_of(self, record: Envelope) -> int | None:
        """The sink's partitioner: checkpoint entries go to their stream's shard."""
        if isinstance(record, (StateEntry, StateTombstone)):
            return self._shards.get(record.stream)
        return None

    def acked(
        self, record: Envelope, value: bytes | None = None, digest: str | None = None
    ) -> None:
        """The sink's `on_acked`: the value Kafka holds and the admission digest ride along,
        so the drain neither encodes an open record again nor digests it again (fleet mode's
        transactions give the record alone: both are made at drain)."""
        if isinstance(record, (StateEntry, StateTombstone)):
            return
        if isinstance(record, VenueRecord) and self._forgotten(record):
            # acknowledged after the stream forgot it (a finished order already behind the
            # horizon when it was published): the checkpoint must not remember it either
            self.tracker.acked(record)
            self.tracker.forget(record.stream, record.TOPIC, record.key())
        elif value is not None and isinstance(record, VenueRecord) and is_open(record):
            self.tracker.acked(record, self._sink.single_object(record, value), digest)
        else:
            self.tracker.acked(record, None, digest)

    def _forgotten(self, record: VenueRecord) -> bool:
        state = self._states.get(record.stream)
        if state is None or record.TOPIC not in ENDING_TOPICS:
            return False
        return record.key() not in state.digests[record.TOPIC]

    async def run(self) -> None:
        """Forever: flush every `flush_interval` seconds."""
        while True:
            await asyncio.sleep(self._settings.flush_interval)
            await self.flush()

    async def flush(self, final: bool = False) -> int:
        """Write what was acknowledged since the last flush; the number of entries. `final`:
        the last before the process ends (every meta entry up to date)."""
        entries, self._unwritten = [*self._unwritten, *self.entries(final)], []
        started, written = time.monotonic(), 0
        try:
            for entry in entries:
                await self._sink.publish(entry)  # suspends only when the buffer is full
                written += 1
                if time.monotonic() - started > FLUSH_SLICE:
                    await asyncio.sleep(0)  # pushes, pings and /healthz go on meanwhile
                    started = time.monotonic()
        except asyncio.CancelledError:
            self._unwritten = entries[written:]  # the shutdown's last flush writes them
            raise
        return len(entries)

    def entries(self, final: bool = False) -> list[StateEntry | StateTombstone]:
        """The entries for what was acknowledged (or forgotten) since the last call."""
        return self.tracker.drain(
            time.time_ns() // 1000,
            self._codec.value,
            lambda stream: self._venues[stream].checkpoint_facts(),
            lambda stream: self._held(stream),
            final,
        )

    def _held(self, stream: str) -> tuple[int | None] | None:
        state = self._states.get(stream)
        return state.held() if state is not None else None
