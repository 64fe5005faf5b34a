"""The metrics module against the contract in DESIGN.md and against the code that observes it:
names and label sets, the fixed `reason` vocabularies, series created at zero, and lag observed
on the broker's ack (not on the send call)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.metrics import DEADLETTER_REASONS, RECONNECT_REASONS, TOPICS, Health, Metrics
from bridge.records import make_event_id
from bridge.stream import StreamState

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SV = ("stream", "venue")
# DESIGN.md's metrics contract (+ the documented extras): name → (type, labels).
CONTRACT: dict[str, tuple[str, tuple[str, ...]]] = {
    "bridge_ws_connected": ("gauge", SV),
    "bridge_ws_reconnects_total": ("counter", (*SV, "reason")),
    "bridge_ws_messages_received_total": ("counter", SV),
    "bridge_ws_last_message_timestamp_seconds": ("gauge", SV),
    "bridge_records_published_total": ("counter", (*SV, "topic")),
    "bridge_deadletter_total": ("counter", (*SV, "reason")),
    "bridge_publish_errors_total": ("counter", (*SV, "topic")),
    "bridge_event_lag_seconds": ("histogram", SV),
    "bridge_pipeline_latency_seconds": ("histogram", SV),
    "bridge_producer_buffer_records": ("gauge", ()),
    "bridge_auth_failures_total": ("counter", SV),
    "bridge_snapshot_records_total": ("counter", SV),
    "bridge_build_info": ("gauge", ("version",)),
    # extras (DESIGN.md, decisions)
    "bridge_ws_subscribed": ("gauge", SV),
    "bridge_control_frames_total": ("counter", SV),
    "bridge_producer_buffer_capacity_records": ("gauge", ()),
    "bridge_snapshot_failures_total": ("counter", (*SV, "reason")),
    "bridge_snapshot_last_success_timestamp_seconds": ("gauge", SV),
}


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


def test_event_ids_are_not_labels() -> None:
    """No label may carry frame data: a frame's ids never become series."""
    metrics = Metrics()
    metrics.add_stream("s1", "aquanow")
    text = metrics.render().decode()
    assert make_event_id("x") not in text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert set(sample.labels) <= {"stream", "venue", "reason", "topic", "le", "version"}
