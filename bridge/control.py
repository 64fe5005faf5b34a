"""The control topic (`kafka.topics.control`, schemas/control/): what consumers need to know
about a stream besides its facts, as Debezium's heartbeat and signalling topics give them.

- **Gap markers.** `subscribed` on every (re)subscribe: facts between `gap_start` (the last
  frame of the previous session, or after a restart the stream's last checkpoint) and
  `gap_end` may be missing until the reconciliation that follows; `reconciled` when a
  reconciliation completed (`trigger` subscribe, schedule or resync): every state key then
  equals the venue's state as of `gap_end`; `records_corrected` records made it so, `drift`
  of them no push explained.
- **Heartbeats.** A `heartbeat` per subscribed stream that handed no record to Kafka for
  `control.heartbeat_interval` seconds: a consumer tells a quiet account from a dead bridge.
- **Signals.** `bridge resync STREAM` writes a `resync_requested` record (`source` operator);
  the bridge running that stream reads the control topic from its end and answers with a
  `reconciled` record carrying the same `request_id`. A request is recognised from its Kafka
  headers alone (`source: operator`, `stream`, `event_id` = the request id), so reading
  signals never needs a schema registry.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bridge.errors import KafkaAccessError
from bridge.kafka import KafkaAccess
from bridge.logs import get_logger
from bridge.records import SOURCE_BRIDGE, SOURCE_OPERATOR, ControlRecord, make_event_id
from bridge.sections import ControlSettings
from bridge.snapshot import Reconciliation
from bridge.stream import StreamState

SUBSCRIBED: Final = "subscribed"
RECONCILED: Final = "reconciled"
HEARTBEAT: Final = "heartbeat"
RESYNC_REQUESTED: Final = "resync_requested"
SIGNALS_RETRY: Final = 5.0  # seconds before listening again after a Kafka error


def build_subscribed(state: StreamState) -> ControlRecord:
    now = time.time_ns() // 1000
    return ControlRecord(
        venue=state.venue,
        stream=state.name,
        received_at=now,
        source=SOURCE_BRIDGE,
        event_id=make_event_id(state.venue, state.name, SUBSCRIBED, state.gap_end),
        kind=SUBSCRIBED,
        gap_start=state.gap_start,
        gap_end=state.gap_end,
    )


def build_reconciled(
    state: StreamState, result: Reconciliation, request_id: str | None = None
) -> ControlRecord:
    now = time.time_ns() // 1000
    return ControlRecord(
        venue=state.venue,
        stream=state.name,
        received_at=now,
        source=SOURCE_BRIDGE,
        event_id=make_event_id(state.venue, state.name, RECONCILED, result.began_at, request_id),
        kind=RECONCILED,
        trigger=result.trigger,
        gap_start=result.gap_start,
        gap_end=result.began_at,
        records_corrected=result.corrected,
        drift=None if result.trigger == "subscribe" else len(result.drift),
        request_id=request_id,
    )


def build_heartbeat(state: StreamState) -> ControlRecord:
    now = time.time_ns() // 1000
    return ControlRecord(
        venue=state.venue,
        stream=state.name,
        received_at=now,
        source=SOURCE_BRIDGE,
        event_id=make_event_id(state.venue, state.name, HEARTBEAT, now),
        kind=HEARTBEAT,
        last_record_at=state.last_record_at,
    )


def build_resync_request(venue: str, stream: str, detail: str | None = None) -> ControlRecord:
    """What `bridge resync` writes; its `event_id` is the request id the answer carries."""
    return ControlRecord(
        venue=venue,
        stream=stream,
        received_at=time.time_ns() // 1000,
        source=SOURCE_OPERATOR,
        event_id=str(uuid.uuid4()),
        kind=RESYNC_REQUESTED,
        request_id=None,
        detail=detail,
    )


def resync_request(
    headers: Sequence[tuple[str, bytes]], streams: dict[str, StreamState]
) -> tuple[StreamState, str] | None:
    """(stream, request id) when a control record's headers make it a resync request for
    one of `streams`; None for anything else (markers, heartbeats, other bridges' streams)."""
    found = {k: v.decode("utf-8", "replace") for k, v in headers}
    state = streams.get(found.get("stream", ""))
    if found.get("source") != SOURCE_OPERATOR or state is None or "event_id" not in found:
        return None
    return state, found["event_id"]


class Control:
    """The control records of every stream of this process."""

    def __init__(self, settings: ControlSettings, states: Sequence[StreamState]) -> None:
        self._settings = settings
        self._states = {s.name: s for s in states}
        self._log = get_logger(component="control")

    def add(self, state: StreamState) -> None:
        """A stream this process runs from now on (fleet mode: its shard was assigned)."""
        self._states[state.name] = state

    def remove(self, state: StreamState) -> None:
        if self._states.get(state.name) is state:
            del self._states[state.name]

    async def subscribed(self, state: StreamState) -> None:
        await state.announce(build_subscribed(state))

    async def reconciled(self, state: StreamState, result: Reconciliation) -> None:
        for request_id in result.requests or (None,):
            await state.announce(build_reconciled(state, result, request_id))
            if request_id is not None:
                self._log.info("resync answered", stream=state.name, request_id=request_id)

    async def heartbeats(self) -> None:
        """Forever: a heartbeat for each subscribed stream quiet for `heartbeat_interval`."""
        interval = self._settings.heartbeat_interval
        last: dict[str, float] = {}
        while True:
            await asyncio.sleep(interval / 4)
            now = time.monotonic()
            for state in list(self._states.values()):
                since = max(
                    state.last_record_mono or 0.0, state.subscribed_mono, last.get(state.name, 0.0)
                )
                if state.subscribed and now - since >= interval:
                    last[state.name] = now
                    await state.announce(build_heartbeat(state))

    async def signals(self, access: KafkaAccess, topic: str) -> None:
        """Forever: read the control topic from its end and hand each resync request to its
        stream; after a Kafka error, start again (requests written meanwhile are missed: the
        operator sees no answer and asks again)."""
        while True:
            try:
                await self._listen(access, topic)
            except (KafkaError, KafkaAccessError) as exc:
                self._log.warning("signals: kafka error; listening again", error=repr(exc))
                await asyncio.sleep(SIGNALS_RETRY)

    async def _listen(self, access: KafkaAccess, topic: str) -> None:
        partitions = await _partitions(access, topic)
        consumer = AIOKafkaConsumer(enable_auto_commit=False, **access.consumer_options())
        await consumer.start()
        try:
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            for tp in partitions:
                await consumer.position(tp)
            self._log.info("listening for signals", topic=topic, partitions=len(partitions))
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for messages in batches.values():
                    for message in messages:
                        self._on_message(list(message.headers or ()))
        finally:
            await consumer.stop()

    def _on_message(self, headers: list[tuple[str, bytes]]) -> None:
        request = resync_request(headers, self._states)
        if request is not None:
            state, request_id = request
            self._log.info("resync requested", stream=state.name, request_id=request_id)
            state.request_resync(request_id)


async def _partitions(access: KafkaAccess, topic: str) -> list[TopicPartition]:
    """The topic's partitions, waiting until the cluster has it (without creating it)."""
    log = get_logger(component="control")
    warned = False
    while True:
        (found,) = await access.topics([topic])
        if found.exists and found.partitions:
            return [TopicPartition(topic, p) for p in range(found.partitions)]
        if not warned:
            log.info("control topic not found yet; signals wait for it", topic=topic)
            warned = True
        await asyncio.sleep(1.0)
