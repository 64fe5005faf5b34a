"""The checkpoint reuses what the publish path already made (issue 17 phase 3): the digest a
state record was admitted with (bridge/stream.py) and the value bytes Kafka acknowledged
(bridge/sink.py) ride the sink's `on_acked` to the changelog, which neither digests nor
encodes the record again. The entries must be exactly the ones made from scratch, in both
framings (single-object, and registry mode's Confluent prefix turned back into single-object)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.changelog import Changelog
from bridge.checkpoint import Tracker, state_digest
from bridge.codec import Codec, SchemaStore, confluent_prefix
from bridge.metrics import Metrics
from bridge.records import SOURCE_SNAPSHOT, Balance, CreditBalance, Envelope, Order, Position, Trade
from bridge.sections import StateSettings
from bridge.settings import KafkaSettings
from bridge.sink import Sink
from bridge.stream import StreamState
from tests import records as make
from tests.strategies import records_of
from tests.unit.test_sink_recovery import Producers, next_send

pytestmark = pytest.mark.unit

STORE = SchemaStore.load()
REFERENCE = Codec(STORE)  # what the drain would encode with (single-object)
CODECS = {
    "single-object": REFERENCE,
    "registry": Codec(STORE, prefix_for=lambda sv: confluent_prefix(1000 + sv.version)),
}
STATE_RECORDS = st.one_of(
    *(records_of(t) for t in (Balance, Order, Position, CreditBalance)), records_of(Trade)
)


def _never(record: Envelope) -> bytes:
    raise AssertionError(f"encoded again at drain: {record!r}")


@settings(max_examples=60)
@given(records=st.lists(STATE_RECORDS, min_size=1, max_size=8))
@pytest.mark.parametrize("framing", sorted(CODECS))
def test_entries_from_the_sinks_bytes_and_digest_are_the_entries_made_again(
    framing: str, records: list[Envelope]
) -> None:
    codec = CODECS[framing]
    sink = SimpleNamespace(single_object=codec.single_object)
    changelog = Changelog(StateSettings(), sink, STORE, 1)  # type: ignore[arg-type]
    reference = Tracker()
    for record in records:
        digest = None if isinstance(record, Trade) else state_digest(record)  # type: ignore[arg-type]
        changelog.acked(record, codec.value(record), digest)
        reference.acked(record)
    facts = lambda stream: {"f": stream}  # noqa: E731
    reused = changelog.tracker.drain(7, _never, facts)
    assert reused == reference.drain(7, lambda r: REFERENCE.value(r), facts)


class DigestRecorder:
    """A sink that, like bridge.sink.Sink, takes the admission digest."""

    takes_digest = True

    def __init__(self) -> None:
        self.handed: list[tuple[Envelope, str | None]] = []

    async def publish(
        self,
        record: Envelope,
        received_mono: float | None = None,
        ticket: object = None,
        digest: str | None = None,
    ) -> None:
        self.handed.append((record, digest))


async def test_the_stream_hands_the_sink_the_digest_it_admitted_the_record_with() -> None:
    recorder = DigestRecorder()
    state = StreamState("s", "aquanow", recorder)
    first = make.order(stream="s", order_id="1", is_final=False, filled_quantity=None)
    second = make.order(stream="s", order_id="1", is_final=True, status="filled")
    fill = make.own_fill(stream="s", account="a")
    for record in (first, second, fill):
        assert await state.publish(record)
    snapshot_copy = make.order(
        stream="s", order_id="1", is_final=True, status="filled", source=SOURCE_SNAPSHOT
    )
    state.begin_snapshot()
    assert not await state.publish(snapshot_copy)  # unchanged: not handed over at all
    assert recorder.handed == [
        (first, state_digest(first)),
        (second, state_digest(second)),
        (fill, None),
    ]


async def test_the_sink_reports_each_ack_with_the_value_kafka_holds_and_the_digest() -> None:
    producers = Producers(max_records=1)
    codec = CODECS["registry"]
    sink = Sink(KafkaSettings(), codec, Metrics(), producers)
    heard: list[tuple[Envelope, bytes | None, str | None]] = []
    sink.on_acked = lambda record, value, digest: heard.append((record, value, digest))
    await sink.start()
    producer = producers.new.get_nowait()
    order = make.order(order_id="5", is_final=False)
    fill = make.own_fill(account="a", trade_id="t1")
    await sink.publish(order, digest="d-order")
    await sink.publish(fill)
    for _ in range(2):
        _, future = await next_send(producer)
        future.set_result(None)
    await asyncio.wait_for(sink.flush(), 5)
    assert heard == [
        (order, codec.value(order), "d-order"),
        (fill, codec.value(fill), None),
    ]
    assert REFERENCE.decode(sink.single_object(order, codec.value(order))) == order
    assert await sink.stop(1)
