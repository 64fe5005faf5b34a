"""µs of CPU per record, stage by stage, in this process (no network): each stage the way it
was before issue 17 and the way it is now, so the README's before/after table has a command.
Each figure is the minimum of three repeats."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from bridge.checkpoint import STATE_TOPICS, Tracker, is_open, state_digest
from bridge.codec import Codec, SchemaStore
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.satori import SatoriSimulator
from bridge.metrics import LATENCY_BUCKETS, Metrics
from bridge.records import _EVENT_NAMESPACE, make_event_id
from bridge.settings import KafkaSettings
from bridge.sink import Sink
from bridge.stream import StreamState
from bridge.venues.aquanow import AquanowVenue
from bridge.venues.base import Frame
from bridge.venues.decoder import FAST, REFERENCE, Json, read_json
from bridge.venues.fields import loads_exact
from bridge.venues.satori.venue import SatoriVenue
from tests.data import satori

KEY, SECRET = "bench-key", "bench-secret-not-real"


def cpu_us(work: Callable[[], object], n: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return round(best / n * 1e6, 2)


def uuid5_event_id(*parts: object) -> str:
    """event_id as computed before: the standard library's uuid5 (same ids)."""
    name = json.dumps(
        [
            None if p is None else format(p.normalize(), "f") if isinstance(p, Decimal) else str(p)
            for p in parts
        ],
        separators=(",", ":"),
    )
    return str(uuid.uuid5(_EVENT_NAMESPACE, name))


class InstantAcks:
    """A producer whose deliveries are acknowledged at once: isolates the bridge's own CPU per
    record (parse → record → encode → batch → ack bookkeeping) from Kafka's. Measurement only."""

    def __init__(self, **_: Any) -> None:
        pass

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(KafkaSettings().max_batch_bytes, 0)  # aiokafka's own, C records

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def record_init(records: list[Any]) -> dict[str, float]:
    """Building the records, per record: the frozen dataclass's own `__init__` (each field
    through `object.__setattr__`, before session 8) and the records' (bridge/records.py
    `_fast_init`), with the same values."""
    made = [(type(r), {f.name: getattr(r, f.name) for f in dataclasses.fields(r)}) for r in records]
    plain = {
        kind: dataclasses.make_dataclass(
            f"Dataclass{kind.__name__}",
            [(f.name, Any) for f in dataclasses.fields(kind)],
            frozen=True,
            slots=True,
            kw_only=True,
        )
        for kind in {kind for kind, _ in made}
    }
    n = len(made)
    gc.disable()  # 40,000 new objects: else collections of the whole bench's heap count too
    try:
        return {
            "before": cpu_us(lambda: [plain[kind](**values) for kind, values in made], n),
            "after": cpu_us(lambda: [kind(**values) for kind, values in made], n),
        }
    finally:
        gc.enable()


def metrics_per_record(n: int) -> dict[str, float]:
    """What the sink observes per acknowledged record: a count and two histograms."""
    registry = CollectorRegistry()
    old_count = Counter("c_total", "c", ("s", "v", "t"), registry=registry).labels("s", "v", "t")
    old_lat = Histogram("l", "l", ("s", "v"), buckets=LATENCY_BUCKETS, registry=registry)
    old_lag = Histogram("g", "g", ("s", "v"), buckets=LATENCY_BUCKETS, registry=registry)
    lat, lag = old_lat.labels("s", "v"), old_lag.labels("s", "v")
    new = Metrics()
    count = new.records_published.labels("s", "v", "t")
    new_lat, new_lag = new.pipeline_latency.labels("s", "v"), new.event_lag.labels("s", "v")

    def old() -> None:
        for _ in range(n):
            old_count.inc()
            lat.observe(0.004)
            lag.observe(0.3)

    def now() -> None:
        for _ in range(n):
            count.inc()
            new_lat.observe(0.004)
            new_lag.observe(0.3)

    return {"before": cpu_us(old, n), "after": cpu_us(now, n)}


def scrape_1000_streams() -> dict[str, float]:
    """One /metrics rendering of 1,000 streams: prometheus_client's generate_latest over the
    same series (what a scrape cost before) against the bridge's own renderer."""
    metrics = Metrics()
    for i in range(1000):
        metrics.add_stream(f"acct-{i:04d}", "aquanow")
    return {
        "before_s": round(cpu_us(lambda: generate_latest(metrics.registry), 1) / 1e6, 3),
        "after_s": round(cpu_us(metrics.render, 1) / 1e6, 3),
    }


def tls_memory(variant: str) -> int:
    """KiB per idle wss:// connection (both ends), tests/bench/tls_memory.py."""
    argv = [sys.executable, "-m", "tests.bench.tls_memory", variant]
    done = subprocess.run(argv, capture_output=True, check=True, timeout=300)
    return int(json.loads(done.stdout)["kib_per_connection_both_ends"])


def parse_all(make: Callable[[Json], Any], reader: Json, frames: list[str]) -> None:
    venue = make(reader)  # a new venue each time: Satori's watermarks start afresh
    for f in frames:
        venue.parse(Frame(f, 1, 0.0))


def one_venue(make: Callable[[Json], Any], frames: list[str]) -> dict[str, Any]:
    n = sum(len(make(FAST).parse(Frame(f, 1, 0.0)).records) for f in frames)
    return {
        "records_per_frame": round(n / len(frames), 2),
        "json_exact_us_per_frame": {
            "before": cpu_us(lambda: [loads_exact(f) for f in frames], len(frames)),
            "after": cpu_us(lambda: [read_json(f) for f in frames], len(frames)),
        },
        "venue_parse_us_per_record": {
            "before": cpu_us(partial(parse_all, make, REFERENCE, frames), n),
            "after": cpu_us(partial(parse_all, make, FAST, frames), n),
        },
    }


def venue_parse(frames_count: int) -> dict[str, Any]:
    """JSON per frame, and JSON plus venue parse per record (records built, event_id
    included), for both venues' simulator frames: the reference reader
    (`serialization.decoder: stdlib`, the only one before phase 2) and msgspec."""
    pairs = ("ETH-USD", "BTC-USD")
    sat = SatoriSimulator(satori.API_KEY, satori.WALLET, seed=21, pairs=pairs)
    aq = AquanowSimulator(KEY, SECRET, seed=5)

    def satori_venue(reader: Json) -> SatoriVenue:
        return SatoriVenue("bd", satori.API_KEY, satori.PRIVATE_KEY, pairs=pairs, json=reader)

    return {
        "aquanow": one_venue(
            lambda reader: AquanowVenue("bd", KEY, SECRET, json=reader),
            [aq.next_event().text for _ in range(frames_count)],
        ),
        "satori": one_venue(satori_venue, [sat.next_event().text for _ in range(frames_count)]),
    }


def checkpoint_per_record(records: list[Any], codec: Codec) -> dict[str, float]:
    """The checkpoint's work per acknowledged record (ack, then the entries at drain): making
    the digest and an open record's bytes again (before issue 17 phase 3), or taking the ones
    the publish path made (the admission digest, the acknowledged value) with them."""
    state = [r for r in records if r.TOPIC in STATE_TOPICS]
    made = [(r, codec.value(r), state_digest(r)) for r in state]

    def encode(record: Any) -> bytes:
        return codec.value(record)

    def before() -> None:
        tracker = Tracker()
        for record in state:
            tracker.acked(record)
        tracker.drain(1, encode, lambda stream: {})

    def after() -> None:
        tracker = Tracker()
        for record, value, digest in made:
            tracker.acked(
                record, codec.single_object(record, value) if is_open(record) else None, digest
            )
        tracker.drain(1, encode, lambda stream: {})

    n = len(state)
    return {"before": cpu_us(before, n), "after": cpu_us(after, n)}


class _Nowhere:
    async def publish(self, record: Any, received_mono: float | None = None) -> None:
        return None


async def state_memory(frames: list[str]) -> dict[str, Any]:
    """What a stream keeps of the records it published (traced bytes): digests, finished keys
    (kept `forget_after_ms`, a day by default) and open orders with their records. For
    sizing: a bridge holds this for every key its streams saw within the horizon."""
    venue = AquanowVenue("bd", KEY, SECRET)
    state = StreamState("bd", "aquanow", _Nowhere(), forget_after_ms=10**12)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for text in frames:
            for record in venue.parse(Frame(text, 1, 0.0)).records:
                await state.publish(record)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        opened = len(state.open_orders)
        state.open_orders.clear()
        gc.collect()
        keys_only = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    keys = state.keys
    return {
        "pushes": len(frames),
        "keys": keys,
        "finished_keys": len(state.finished),
        "open_orders": opened,
        "bytes_per_key": round(keys_only / keys),
        "bytes_per_open_order_record": round((held - keys_only) / opened),
    }


async def breakdown(frames_count: int) -> dict[str, Any]:
    sim = AquanowSimulator(KEY, SECRET, seed=5)
    frames = [sim.next_event().text for _ in range(frames_count)]
    venue = AquanowVenue("bd", KEY, SECRET)
    generated, reference = Codec(SchemaStore.load()), Codec(SchemaStore.load(), encoder="fastavro")
    records = [r for f in frames for r in venue.parse(Frame(f, 1, 0.0)).records]
    parts = ("aquanow", "CA1000051R", "order", "8d0f3c1e-4f5", "COMPLETE", Decimal("0.5"), 16e11)
    n = len(records)
    out: dict[str, Any] = {
        "json_float_us": cpu_us(lambda: [json.loads(f) for f in frames], len(frames)),
        "decode": venue_parse(frames_count),
        "event_id_us": {
            "before": cpu_us(lambda: [uuid5_event_id(*parts) for _ in range(n)], n),
            "after": cpu_us(lambda: [make_event_id(*parts) for _ in range(n)], n),
        },
        "avro_encode_us": {
            "before": cpu_us(lambda: [reference.encode(r) for r in records], n),
            "after": cpu_us(lambda: [generated.encode(r) for r in records], n),
        },
        "metrics_per_record_us": metrics_per_record(n),
        "record_init_us": record_init(records),
        "scrape_1000_streams": scrape_1000_streams(),
        "checkpoint_us": checkpoint_per_record(records, generated),
        "state_memory": await state_memory(frames),
        "tls_kib_per_connection": {
            variant: tls_memory(variant)
            for variant in ("per-connection", "shared", "shared-small-buffer", "no-deflate")
        },
    }
    sink = Sink(KafkaSettings(), generated, Metrics(), producer_factory=InstantAcks)
    await sink.start()
    state = StreamState("bench", "aquanow", sink)
    started = time.process_time()
    for text in frames:
        frame = Frame(text, time.time_ns() // 1000, time.monotonic())
        for record in venue.parse(frame).records:
            await state.publish(record, frame.received_mono)
    await sink.flush()
    out["parse_to_ack_us"] = round((time.process_time() - started) / n * 1e6, 1)
    await sink.stop()
    out["command"] = 'make bench ARGS="--only breakdown"'
    return out
