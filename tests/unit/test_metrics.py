"""The metrics module against the contract in DESIGN.md and against the code that observes it:
names and label sets, the fixed `reason` vocabularies, series created at zero, and lag observed
on the broker's ack (not on the send call)."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import re
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.codec import Codec, SchemaStore
from bridge.metrics import DEADLETTER_REASONS, RECONNECT_REASONS, TOPICS, Health, Metrics
from bridge.settings import KafkaSettings
from bridge.sink import Sink
from tests.data.metrics import CONTRACT
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
    "bridge_ws_subscribed",
    "bridge_control_frames_total",
    "bridge_producer_buffer_capacity_records",
    "bridge_snapshot_failures_total",
    "bridge_snapshot_last_success_timestamp_seconds",
}


def test_add_stream_creates_every_series_at_zero() -> None:
    metrics = Metrics()
    metrics.add_stream("s1", "satori")
    value = metrics.registry.get_sample_value
    s1 = {"stream": "s1", "venue": "satori"}
    for reason in RECONNECT_REASONS:
        assert value("bridge_ws_reconnects_total", {**s1, "reason": reason}) == 0
    for reason in DEADLETTER_REASONS:
        assert value("bridge_deadletter_total", {**s1, "reason": reason}) == 0
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


def _string_args(path: Path, functions: set[str], first_only: bool) -> set[str]:
    """String constants passed to calls of `functions` in `path` (through `a if c else b`)."""
    found: set[str] = set()

    def constants(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, ast.IfExp):
            return constants(node.body) + constants(node.orelse)
        return []

    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        if name in functions:
            for arg in node.args[:1] if first_only else node.args:
                found.update(constants(arg))
    return {s for s in found if re.fullmatch(r"[a-z]+(_[a-z]+)*", s)}


def test_reconnect_reasons_raised_are_the_vocabulary() -> None:
    connection = ROOT / "bridge" / "connection.py"
    raised = _string_args(connection, {"ConnectionLost", "_lost"}, first_only=True)
    # the other two routes: `reason = "a" if … else "b"` and `_classify_close`'s returns
    tree = ast.parse(connection.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "reason":
            raised.update(c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant))
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
            first = node.value.elts[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                raised.add(first.value)
    raised.add("auth_rejected")  # AuthRejected's own reason (errors.py)
    assert raised == set(RECONNECT_REASONS)


def test_deadletter_reasons_produced_are_the_vocabulary() -> None:
    produced: set[str] = set()
    paths = [*(ROOT / "bridge" / "venues").glob("*.py"), ROOT / "bridge" / "sink.py"]
    for path in [*paths, ROOT / "bridge" / "connection.py"]:
        produced |= _string_args(path, {"ParseError"}, first_only=True)
        produced |= _string_args(path, {"build_dead_letter", "_dead_letter_for"}, first_only=False)
    assert produced == set(DEADLETTER_REASONS)


class _PendingProducer:
    """A producer whose acks the test releases by hand."""

    def __init__(self, **_: Any) -> None:
        self.futures: list[asyncio.Future[Any]] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, *_: Any, **__: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


async def test_lag_and_published_count_are_observed_on_the_broker_ack() -> None:
    producer = _PendingProducer()
    metrics = Metrics()
    sink = Sink(KafkaSettings(), Codec(SchemaStore.load()), metrics, lambda **_: producer)
    await sink.start()
    await sink.publish(balance("BTC", "1"), received_mono=time.monotonic())
    value = metrics.registry.get_sample_value
    s1 = {"stream": "s1", "venue": "aquanow"}
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


async def test_snapshot_records_count_but_do_not_feed_the_lag() -> None:
    producer = _PendingProducer()
    metrics = Metrics()
    sink = Sink(KafkaSettings(), Codec(SchemaStore.load()), metrics, lambda **_: producer)
    await sink.start()
    old = balance("ETH", "2")
    snapshot = dataclasses.replace(old, source="snapshot", event_time=1_000)
    await sink.publish(snapshot)
    producer.futures[0].set_result(None)
    await asyncio.sleep(0)
    s1 = {"stream": "s1", "venue": "aquanow"}
    assert metrics.registry.get_sample_value("bridge_snapshot_records_total", s1) == 1
    assert not metrics.registry.get_sample_value("bridge_event_lag_seconds_count", s1)
    assert await sink.stop(1)


async def test_backpressure_is_logged_once_per_episode(capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.logs import configure

    configure("info", "json")
    producer = _PendingProducer()
    settings = KafkaSettings(buffer_records=2)
    sink = Sink(settings, Codec(SchemaStore.load()), Metrics(), lambda **_: producer)
    await sink.start()
    records = [balance(f"A{i}", "1") for i in range(4)]
    await sink.publish(records[0])
    await sink.publish(records[1])
    waiting = [asyncio.create_task(sink.publish(r)) for r in records[2:]]
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in waiting)
    for _ in range(4):
        while not producer.futures or all(f.done() for f in producer.futures):
            await asyncio.sleep(0.01)
        next(f for f in producer.futures if not f.done()).set_result(None)
        await asyncio.sleep(0.01)
    await asyncio.gather(*waiting)
    assert await sink.stop(1)
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
    health.streams.update(a=True, b=False)
    assert health.ready() == (False, "not subscribed: b")
    health.streams["b"] = True
    assert health.ready() == (True, "ready")
    health.stopping = True
    assert health.ready() == (False, "shutting down")


async def test_frame_data_never_becomes_a_label() -> None:
    """No label may carry frame data: after a record went through the sink and was acked, no
    label value of any series is one of its ids or values, and only the bounded label names
    exist. (Before, this checked that an id nothing had published was absent: it could not
    fail.)"""
    producer = _PendingProducer()
    metrics = Metrics()
    metrics.add_stream("s1", "aquanow")
    sink = Sink(KafkaSettings(), Codec(SchemaStore.load()), metrics, lambda **_: producer)
    await sink.start()
    record = balance("ZZTOP", "1.5", raw='{"symbol":"ZZTOP"}')
    await sink.publish(record, received_mono=time.monotonic())
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
