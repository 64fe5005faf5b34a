"""The metrics module against the contract in DESIGN.md and against the code that observes it:
names and label sets, the fixed `reason` vocabularies, series created at zero, and lag observed
on the broker's ack (not on the send call)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.codec import Codec, SchemaStore
from bridge.metrics import (
    DEADLETTER_REASONS,
    LATENCY_BUCKETS,
    RECONNECT_REASONS,
    TOPICS,
    Health,
    Metrics,
    bound_port,
    memory_limit_bytes,
    start_http_server,
)
from bridge.settings import KafkaSettings
from bridge.sink import Sink
from bridge.stream import StreamState
from tests.data.metrics import CONTRACT
from tests.fakes import PendingProducer
from tests.records import live_balance as balance

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def families(metrics: Metrics) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def test_every_contract_metric_with_its_type_and_labels() -> None:
    metrics = Metrics()
    metrics.add_stream("s1", "aquanow")
    found = families(metrics)
    for name, (kind, labels) in CONTRACT.items():
        family = found[name.removesuffix("_total")]
        assert family.type == kind, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == set(labels), (name, sample.labels)
    bridge_names = {n for n in found if n.startswith("bridge_")}
    assert bridge_names == {n.removesuffix("_total") for n in CONTRACT}, "undocumented metric"
    assert "process_start_time_seconds" in found


def test_contract_in_design_doc_matches() -> None:
    design = (ROOT / "docs" / "DESIGN.md").read_text()
    contract = design.split("**Metrics**", 1)[1].split("\n\n", 1)[0]
    named = set(re.findall(r"`(bridge_[a-z_]+)", contract))
    assert named == {n for n in CONTRACT if n not in _EXTRAS}
    decisions = design.split("**Extra metrics**", 1)[1].split("\n- ", 1)[0]
    assert set(re.findall(r"`(bridge_[a-z_]+)`", decisions)) == _EXTRAS


_EXTRAS = {
    "bridge_memory_limit_bytes",
    "bridge_state_keys",
    "bridge_ws_subscribed",
    "bridge_control_frames_total",
    "bridge_producer_buffer_capacity_records",
    "bridge_producer_oldest_unacked_age_seconds",
    "bridge_snapshot_failures_total",
    "bridge_snapshot_last_success_timestamp_seconds",
    "bridge_state_restored_keys",
    "bridge_state_restore_seconds",
    "bridge_stream_owned",
    "bridge_fleet_members",
    "bridge_fleet_shards_assigned",
    "bridge_fleet_rebalances_total",
    "bridge_fleet_stream_starts_total",
    "bridge_fleet_stream_stops_total",
    "bridge_fleet_lease_expirations_total",
}


def test_add_stream_creates_every_series_at_zero() -> None:
    metrics = Metrics()
    metrics.add_stream("s1", "satori")
    value = metrics.registry.get_sample_value
    s1 = {"stream": "s1", "venue": "satori"}
    for reason in RECONNECT_REASONS:
        assert value("bridge_ws_reconnects_total", {**s1, "reason": reason}) == 0
    for why in DEADLETTER_REASONS:
        assert value("bridge_deadletter_total", {**s1, "reason": why}) == 0
    for topic in TOPICS:
        assert value("bridge_records_published_total", {**s1, "topic": topic}) == 0
        assert value("bridge_publish_errors_total", {**s1, "topic": topic}) == 0
    for name in (
        "bridge_ws_connected",
        "bridge_ws_subscribed",
        "bridge_ws_last_message_timestamp_seconds",
        "bridge_ws_messages_received_total",
        "bridge_auth_failures_total",
        "bridge_snapshot_records_total",
        "bridge_control_frames_total",
        "bridge_event_lag_seconds_count",
        "bridge_pipeline_latency_seconds_count",
    ):
        assert value(name, s1) == 0, name


async def test_lag_and_published_count_are_observed_on_the_broker_ack() -> None:
    producer = PendingProducer()
    metrics = Metrics()
    sink = Sink(KafkaSettings(), Codec(SchemaStore.load()), metrics, lambda **_: producer)
    await sink.start()
    await sink.publish(balance("BTC", "1"), received_mono=time.monotonic())
    value = metrics.registry.get_sample_value
    s1 = {"stream": "s1", "venue": "aquanow"}
    await asyncio.wait_for(producer.sent.get(), 5)
    assert len(producer.futures) == 1
    assert value("bridge_producer_buffer_records") == 1
    # handed to the producer, not yet acknowledged: nothing observed
    assert value("bridge_event_lag_seconds_count", s1) is None
    assert value("bridge_pipeline_latency_seconds_count", s1) is None
    assert value("bridge_records_published_total", {**s1, "topic": "balances"}) is None
    await asyncio.sleep(0.05)
    producer.futures[0].set_result(None)
    await asyncio.sleep(0)
    assert value("bridge_event_lag_seconds_count", s1) == 1
    assert value("bridge_pipeline_latency_seconds_count", s1) == 1
    # the wait for the ack is part of the latency
    assert value("bridge_pipeline_latency_seconds_sum", s1) >= 0.05  # type: ignore[operator]
    assert value("bridge_records_published_total", {**s1, "topic": "balances"}) == 1
    assert value("bridge_producer_buffer_records") == 0
    assert await sink.stop(1)


async def test_venue_histograms_cut_a_streams_series_and_still_see_every_ack() -> None:
    """`metrics.stream_histograms: false`: the two latency histograms are the venue's, shared
    by its streams; every other series stays per stream."""
    per_stream, per_venue = Metrics(), Metrics(stream_histograms=False)
    for metrics in (per_stream, per_venue):
        for stream in ("s1", "s2"):
            metrics.add_stream(stream, "aquanow")

    def lines(metrics: Metrics, stream: str) -> int:
        return metrics.render().decode().count(f'stream="{stream}"')

    assert lines(per_stream, "s1") == 92
    assert lines(per_venue, "s1") == 92 - 2 * (len(LATENCY_BUCKETS) + 3)
    producer = PendingProducer()
    sink = Sink(KafkaSettings(), Codec(SchemaStore.load()), per_venue, lambda **_: producer)
    await sink.start()
    records = [balance("BTC", "1"), dataclasses.replace(balance("ETH", "2"), stream="s2")]
    for record in records:
        await sink.publish(record, received_mono=time.monotonic())
    await asyncio.wait_for(producer.sent.get(), 5)  # one batch: one topic and partition
    assert producer.batches == [[Codec(SchemaStore.load()).value(r) for r in records]]
    producer.futures[0].set_result(None)
    await asyncio.sleep(0)
    value = per_venue.registry.get_sample_value
    assert value("bridge_pipeline_latency_seconds_count", {"venue": "aquanow"}) == 2
    assert value("bridge_event_lag_seconds_count", {"venue": "aquanow"}) == 2
    s2 = {"stream": "s2", "venue": "aquanow", "topic": "balances"}
    assert value("bridge_records_published_total", s2) == 1
    assert await sink.stop(1)


async def test_snapshot_records_count_but_do_not_feed_the_lag() -> None:
    producer = PendingProducer()
    metrics = Metrics()
    sink = Sink(KafkaSettings(), Codec(SchemaStore.load()), metrics, lambda **_: producer)
    await sink.start()
    old = balance("ETH", "2")
    snapshot = dataclasses.replace(old, source="snapshot", event_time=1_000)
    await sink.publish(snapshot)
    (await asyncio.wait_for(producer.sent.get(), 5)).set_result(None)
    await asyncio.sleep(0)
    s1 = {"stream": "s1", "venue": "aquanow"}
    assert metrics.registry.get_sample_value("bridge_snapshot_records_total", s1) == 1
    assert not metrics.registry.get_sample_value("bridge_event_lag_seconds_count", s1)
    assert await sink.stop(1)


async def test_backpressure_is_logged_once_per_episode(capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.logs import configure

    configure("info", "json")
    producer = PendingProducer(max_records=1)  # one future per record
    settings = KafkaSettings(buffer_records=2)
    metrics = Metrics()
    sink = Sink(settings, Codec(SchemaStore.load()), metrics, lambda **_: producer)
    gauge = metrics.registry.get_sample_value
    await sink.start()
    records = [balance(f"A{i}", "1") for i in range(4)]
    await sink.publish(records[0])
    await sink.publish(records[1])
    first, second = await producer.sent.get(), await producer.sent.get()
    waiting = [asyncio.create_task(sink.publish(r)) for r in records[2:]]
    # The buffer is full: the next two records must wait for acknowledgements.
    assert not sink.ledger.has_room
    assert gauge("bridge_producer_buffer_records") == 2
    assert gauge("bridge_producer_buffer_capacity_records") == 2
    first.set_result(None)
    third = await producer.sent.get()  # one ack, one slot: the first waiting record got it ...
    assert len(producer.futures) == 3, "... and only that one"
    assert not sink.ledger.has_room
    assert gauge("bridge_producer_buffer_records") == 2
    second.set_result(None)
    fourth = await producer.sent.get()
    third.set_result(None)
    fourth.set_result(None)
    await asyncio.gather(*waiting)
    assert await sink.stop(1)
    assert gauge("bridge_producer_buffer_records") == 0
    events = [line for line in capsys.readouterr().err.splitlines() if "backpressure" in line]
    assert [e.split('"event": "')[1].split('"')[0] for e in events] == [
        "backpressure on",
        "backpressure off",
    ]
    assert '"stream": "s1"' in events[0]


def test_readiness_needs_the_producer_and_every_stream() -> None:
    health = Health()
    assert health.ready() == (False, "producer not started")
    health.producer_started = True
    a, b = (StreamState(name, "satori", sink=None) for name in "ab")  # type: ignore[arg-type]
    a.subscribed = True
    health.streams += [a, b]
    assert health.ready() == (False, "not subscribed: b")
    b.subscribed = True
    assert health.ready() == (True, "ready")
    health.stopping = True
    assert health.ready() == (False, "shutting down")


async def test_frame_data_never_becomes_a_label() -> None:
    """No label may carry frame data: after a record went through the sink and was acked, no
    label value of any series is one of its ids or values, and only the bounded label names
    exist. (Before, this checked that an id nothing had published was absent: it could not
    fail.)"""
    producer = PendingProducer()
    metrics = Metrics()
    metrics.add_stream("s1", "aquanow")
    sink = Sink(KafkaSettings(), Codec(SchemaStore.load()), metrics, lambda **_: producer)
    await sink.start()
    record = balance("ZZTOP", "1.5", raw='{"symbol":"ZZTOP"}')
    await sink.publish(record, received_mono=time.monotonic())
    await asyncio.wait_for(producer.sent.get(), 5)  # the batch went out after the linger
    producer.futures[0].set_result(None)
    await asyncio.sleep(0)  # the ack callback runs on the next loop iteration
    assert await sink.stop(1)
    s1 = {"stream": "s1", "venue": "aquanow", "topic": "balances"}
    assert metrics.registry.get_sample_value("bridge_records_published_total", s1) == 1
    labels = {
        (name, value)
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
        for name, value in sample.labels.items()
    }
    assert {name for name, _ in labels} <= {"stream", "venue", "reason", "topic", "le", "version"}
    frame_values = {record.event_id, record.account, record.asset, record.raw, "1.5"}
    assert {value for _, value in labels} & frame_values == set()


async def test_a_scraper_that_leaves_mid_scrape_is_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """/metrics is streamed: a scraper that gives up halfway (its scrape_timeout) leaves
    nothing in the log above debug, and the next scrape reads the whole text."""
    metrics = Metrics()
    for i in range(1000):
        metrics.add_stream(f"acct-{i:04d}", "aquanow")
    runner = await start_http_server(metrics, Health(), "127.0.0.1", 0)
    request = b"GET /metrics HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n"
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(2):
                reader, writer = await asyncio.open_connection("127.0.0.1", bound_port(runner))
                writer.write(request)
                await reader.readexactly(65536)
                writer.transport.abort()
            reader, writer = await asyncio.open_connection("127.0.0.1", bound_port(runner))
            writer.write(request)
            whole = await asyncio.wait_for(reader.read(), 30)
            writer.close()
    finally:
        await runner.cleanup()
    assert [r.getMessage() for r in caplog.records] == []
    head, _, body = whole.partition(b"\r\n\r\n")
    assert b"200 OK" in head.split(b"\r\n")[0]
    assert b"bridge_records_published_total" in body
    assert b"acct-0999" in body


MEMINFO = "MemTotal:       24683568 kB\nMemFree:        1000 kB\n"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"sys/fs/cgroup/memory.max": "536870912\n"}, 536870912.0),  # v2, a limit
        ({"sys/fs/cgroup/memory.max": "max\n"}, 24683568 * 1024.0),  # v2, none: the machine
        ({"sys/fs/cgroup/memory/memory.limit_in_bytes": "268435456\n"}, 268435456.0),  # v1
        # v1 says "none" with a number larger than the machine
        (
            {"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"},
            24683568 * 1024.0,
        ),
        ({}, 24683568 * 1024.0),  # no cgroup files (not Linux containers)
    ],
)
def test_the_memory_limit_is_the_cgroups_else_the_machines(
    tmp_path: Path, files: dict[str, str], expected: float
) -> None:
    """`bridge_memory_limit_bytes`, which BridgeMemoryNearLimit divides the RSS by."""
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text(MEMINFO)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert memory_limit_bytes(tmp_path) == expected


def test_the_memory_limit_is_on_the_scrape() -> None:
    metrics = Metrics()
    limit = metrics.registry.get_sample_value("bridge_memory_limit_bytes")
    assert limit is not None
    assert limit == memory_limit_bytes() > 0
