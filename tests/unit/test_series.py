"""The lock-free series (bridge/series.py) against prometheus_client itself: the same
operations give the same exposition text, byte for byte, and the same samples through a
`CollectorRegistry`; a scrape yields to the event loop while it renders."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bridge.metrics import LATENCY_BUCKETS, RENDER_SLICE_S, RENDER_SLICE_SERIES, Metrics
from bridge.series import (
    CounterFamily,
    FamiliesCollector,
    GaugeFamily,
    HistogramFamily,
    render_chunks,
    render_lines,
)
from tests.helpers import LoopTurns

pytestmark = pytest.mark.unit

LABELS = ("stream", "venue")
STREAMS = st.sampled_from([("s1", "aquanow"), ("s-2", "satori"), ('we"ird\\n', "x")])
VALUES = st.floats(min_value=0, max_value=1e9, allow_nan=False) | st.sampled_from(
    [*LATENCY_BUCKETS, 0.0, 1234567.0, 1e-9]
)
OPERATIONS = st.lists(
    st.tuples(st.sampled_from(["inc", "set", "observe", "gauge"]), STREAMS, VALUES), max_size=60
)


def both(operations: list[tuple[str, tuple[str, str], float]]) -> tuple[str, str]:
    reference = CollectorRegistry()
    counter = Counter("x_events_total", "Events\nwith a \\ help", LABELS, registry=reference)
    gauge = Gauge("x_level", "Level", LABELS, registry=reference)
    histogram = Histogram("x_seconds", "Time", LABELS, buckets=LATENCY_BUCKETS, registry=reference)
    plain = Gauge("x_plain", "No labels", registry=reference)
    # Bucket labels: `le` sorts first for LABELS; a label before it ("kind"), and none at all.
    kinds = Histogram("x_kinds_seconds", "By kind", ("kind", "venue"), registry=reference)
    bare = Histogram("x_bare_seconds", "No labels", buckets=(0.5, 2.0), registry=reference)
    ours = [
        CounterFamily("x_events_total", "Events\nwith a \\ help", LABELS),
        GaugeFamily("x_level", "Level", LABELS),
        HistogramFamily("x_seconds", "Time", LABELS, LATENCY_BUCKETS),
        GaugeFamily("x_plain", "No labels"),
        HistogramFamily("x_kinds_seconds", "By kind", ("kind", "venue"), Histogram.DEFAULT_BUCKETS),
        HistogramFamily("x_bare_seconds", "No labels", (), (0.5, 2.0)),
    ]
    for op, labels, value in operations:
        if op == "inc":
            counter.labels(*labels).inc(value)
            ours[0].labels(*labels).inc(value)  # type: ignore[attr-defined]
        elif op == "set":
            gauge.labels(*labels).set(value)
            ours[1].labels(*labels).set(value)  # type: ignore[attr-defined]
        elif op == "observe":
            histogram.labels(*labels).observe(value)
            ours[2].labels(*labels).observe(value)  # type: ignore[attr-defined]
            kinds.labels(*labels).observe(value)
            ours[4].labels(*labels).observe(value)  # type: ignore[attr-defined]
            bare.observe(value)
            ours[5].labels().observe(value)  # type: ignore[attr-defined]
        else:
            plain.set(value)
            ours[3].set(value)  # type: ignore[attr-defined]
    text = "".join(line for line in generate_latest(reference).decode().splitlines(True))
    text = "".join(line for line in text.splitlines(True) if "_created" not in line)
    return text, render_lines(ours)


@settings(max_examples=150, deadline=None)
@given(operations=OPERATIONS)
def test_the_text_is_prometheus_clients_own(
    operations: list[tuple[str, tuple[str, str], float]],
) -> None:
    reference, ours = both(operations)
    assert ours == reference


def test_a_registry_sees_the_same_samples() -> None:
    family = HistogramFamily("x_seconds", "Time", LABELS, LATENCY_BUCKETS)
    for value in (0.001, 0.003, 400.0):
        family.labels("s1", "aquanow").observe(value)
    registry = CollectorRegistry()
    registry.register(FamiliesCollector(lambda: [family]))
    s1 = {"stream": "s1", "venue": "aquanow"}
    assert registry.get_sample_value("x_seconds_bucket", {**s1, "le": "0.001"}) == 1
    assert registry.get_sample_value("x_seconds_bucket", {**s1, "le": "0.005"}) == 2
    assert registry.get_sample_value("x_seconds_bucket", {**s1, "le": "+Inf"}) == 3
    assert registry.get_sample_value("x_seconds_count", s1) == 3
    assert registry.get_sample_value("x_seconds_sum", s1) == pytest.approx(400.004)


def test_a_streams_series_share_their_label_text_and_key_across_families() -> None:
    """Most families are labelled by stream and venue: one text and one key tuple a stream,
    not one per family (~4 KB a stream at 56 series, `make bench ARGS="--only fanout
    --owners"`). A family with other label names has its own."""
    messages = CounterFamily("m_total", "Frames", LABELS)
    connected = GaugeFamily("c", "Connected", LABELS)
    reasons = CounterFamily("r_total", "Reasons", (*LABELS, "reason"))
    stream = ("s" + "1", "aquanow")  # built at run time, as a stream's name is
    key = ("s1", "aquanow")
    assert messages.labels(*stream).labels is connected.labels(*key).labels
    (messages_key,), (connected_key,) = messages.children, connected.children
    assert messages_key is connected_key
    assert reasons.labels("s1", "aquanow", "x").labels == '{reason="x",stream="s1",venue="aquanow"}'
    assert messages.labels("s2", "aquanow").labels is not connected.labels(*key).labels


@pytest.mark.parametrize("step", [2 * RENDER_SLICE_S, 0.0], ids=["slices-per-read", "frozen"])
async def test_a_scrape_of_many_streams_yields_to_the_loop_whenever_a_slice_is_up(
    step: float,
) -> None:
    """The render gives the loop a turn each time `RENDER_SLICE_S` has passed (the clock is
    read once per `RENDER_SLICE_SERIES` label sets): after every chunk when each read is two
    slices later, never when the clock stands still."""
    metrics = Metrics()
    for i in range(300):
        metrics.add_stream(f"acct-{i:04d}", "aquanow")
    reads = itertools.count()
    async with LoopTurns() as turns:
        pieces = [piece async for piece in metrics.render_slices(lambda: next(reads) * step)]
    text = b"".join(pieces)
    bridge_part = text.split(b"# HELP process_")[0]
    assert bridge_part == metrics.render().split(b"# HELP process_")[0]
    assert bridge_part.count(b"\n") > 300 * 80
    chunks = len(list(render_chunks(metrics._families, RENDER_SLICE_SERIES)))
    assert chunks >= 300 * 19 // 100
    assert turns.count == (chunks if step else 0)
    assert len(pieces) == turns.count + 1
