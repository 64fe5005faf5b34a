"""`make bench`: simulator → bridge → real broker, measured. Never part of the test run.

Four figures, each with the command line that reproduces it, written as JSON under
tests/bench/results/ with a PNG chart:

- throughput: one stream at maximum rate, records acked per second, and the ceiling: a bare
  aiokafka producer sending the same pre-encoded records (same keys, headers, producer
  settings) to the same broker. Reported as the ratio bridge / ceiling.
- latency: frame received → broker append, p50/p99/p99.9, at 1,000 records/s steady. Measured
  from the data alone: the bench topics use LogAppendTime, so each record's Kafka timestamp is
  the broker's append time (ms resolution), and the record carries `received_at` (µs).
- fan-out: 1,000 streams at 1 push/s each in one process: RSS and CPU.
- recovery: from the venue accepting connections again to resubscribed with the snapshot
  published, minus the configured backoff delay.
- restore: a stream's state restored from its checkpoint at start, 1,000 and 100,000 keys:
  seconds and memory, against scanning the state topics instead (tests/bench/restore.py).

The bridge runs as its own process (`bridge run`); the simulator and measurement run here.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bridge.codec import Codec, SchemaStore
from bridge.dev.kafka import kafka_bootstrap
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.kafka import producer_options
from bridge.settings import KafkaSettings, TopicNames
from bridge.venues.aquanow import AquanowVenue
from bridge.venues.base import Frame
from tests.bench.restore import restore_bench
from tests.helpers import BridgeProcess, unique_topics, wait_until

RESULTS = Path(__file__).resolve().parent / "results"
KEY, SECRET = "bench-key", "bench-secret-not-real"
TARGETS = {
    "throughput_ratio": 0.7,
    "throughput_records_per_s": 30_000,
    "latency_p99_ms": 20,
    "fanout_rss_mb": 300,
    "fanout_cpu_core_fraction": 0.5,
    "recovery_beyond_backoff_s": 2.0,
}


def command(name: str) -> str:
    return f'make bench ARGS="--only {name}"'


async def create_topics(bootstrap: str, topics: dict[str, str]) -> None:
    """LogAppendTime: a record's timestamp is when the broker appended it (≈ the ack)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"message.timestamp.type": "LogAppendTime"}
        await admin.create_topics(
            [NewTopic(t, 1, 1, topic_configs=config) for t in topics.values()]
        )
    finally:
        await admin.close()


KAFKA_OVERRIDES: dict[str, Any] = {}  # --max-batch-bytes: the same for the bridge and the ceiling


def bridge_config(
    bootstrap: str, topics: dict[str, str], streams: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    kafka = {"bootstrap_servers": bootstrap, "topics": topics, **KAFKA_OVERRIDES}
    return {
        "kafka": kafka,
        "log": {"level": "warning", "format": "json"},
        "streams": streams,
        **extra,
    }


def aquanow_stream(name: str, sim: AquanowSimulator, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "venue": "aquanow",
        "url": sim.url,
        "api_key": KEY,
        "api_secret": SECRET,
        "ack_grace": 0.5,
        **extra,
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- throughput ------------------------------------------------------------------------------
async def throughput(bootstrap: str, records: int, profile: Path | None = None) -> dict[str, Any]:
    topics = unique_topics()
    await create_topics(bootstrap, topics)
    sim = AquanowSimulator(KEY, SECRET, rate=0, count=records, seed=1)
    sim.preload(records)
    frames = [event.text for event in sim._preloaded]
    async with sim:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = bridge_config(bootstrap, topics, [aquanow_stream("tp", sim)])
            profiler = ("-m", "pyinstrument", "-r", "text", "-o", str(profile)) if profile else ()
            with BridgeProcess(Path(tmp), cfg, python_args=profiler) as bridge:
                assert bridge.process is not None
                samples: list[tuple[float, float]] = []
                cpu0, t0 = None, 0.0
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline:
                    try:
                        count = await bridge.metric("bridge_records_published_total")
                    except aiohttp.ClientError:  # the metrics server is not up yet
                        await asyncio.sleep(0.1)
                        continue
                    now = time.monotonic()
                    if count > 0 and cpu0 is None:
                        cpu0, t0 = cpu_seconds(bridge.process.pid), now
                    samples.append((now, count))
                    if count >= records:
                        break
                    await asyncio.sleep(0.25)
                cpu = (cpu_seconds(bridge.process.pid) - (cpu0 or 0)) / max(
                    samples[-1][0] - t0, 1e-9
                )
                assert bridge.stop() == 0
    rate = steady_rate(samples, records)
    ceiling = await bare_producer(bootstrap, frames)
    return {
        "records": records,
        "bridge_records_per_s": round(rate),
        "ceiling_records_per_s": round(ceiling),
        "ratio": round(rate / ceiling, 3),
        "bridge_cpu_core_fraction": round(cpu, 3),
        "command": command("throughput"),
    }


def steady_rate(samples: list[tuple[float, float]], total: int) -> float:
    """Acked records per second between 10 % and 90 % of the run (ramp-up and tail excluded)."""
    window = [(t, c) for t, c in samples if 0.1 * total <= c <= 0.9 * total]
    if len(window) < 2:
        window = [s for s in samples if s[1] > 0]
    (t_a, c_a), (t_b, c_b) = window[0], window[-1]
    return (c_b - c_a) / max(t_b - t_a, 1e-9)


async def bare_producer(bootstrap: str, frames: list[str]) -> float:
    """The ceiling: the same records, pre-encoded, sent by a bare aiokafka producer."""
    venue, codec = AquanowVenue("tp", KEY, SECRET), Codec(SchemaStore.load())
    topics = TopicNames(**unique_topics())
    encoded = []
    for text in frames:
        for record in venue.parse(Frame(text, time.time_ns() // 1000, time.monotonic())).records:
            encoded.append(codec.encode(record))
    settings = KafkaSettings(bootstrap_servers=bootstrap, topics=topics, **KAFKA_OVERRIDES)
    producer = AIOKafkaProducer(**producer_options(settings))
    await producer.start()
    try:
        started = time.monotonic()
        futures = [
            await producer.send(topics.name(e.topic), e.value, key=e.key, headers=e.headers)
            for e in encoded
        ]
        await asyncio.gather(*futures)
        return len(encoded) / (time.monotonic() - started)
    finally:
        await producer.stop()


# -- latency ---------------------------------------------------------------------------------
async def latency(bootstrap: str, seconds: int, rate: int = 1000) -> dict[str, Any]:
    topics = unique_topics()
    await create_topics(bootstrap, topics)
    count = seconds * rate
    sim = AquanowSimulator(KEY, SECRET, rate=rate, count=count, seed=2)
    sim.preload(count)
    async with sim:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = bridge_config(bootstrap, topics, [aquanow_stream("lat", sim)])
            with BridgeProcess(Path(tmp), cfg) as bridge:
                await sim.finished.wait()
                await bridge.wait_metric("bridge_records_published_total", count, timeout=60)
                assert bridge.stop() == 0
    delays = await append_delays(bootstrap, topics, count)
    warm = delays[len(delays) // 20 :]  # the first 5 % include connection and JIT-free warm-up
    warm.sort()
    return {
        "rate_per_s": rate,
        "records": len(delays),
        "p50_ms": quantile(warm, 0.5),
        "p99_ms": quantile(warm, 0.99),
        "p999_ms": quantile(warm, 0.999),
        "max_ms": warm[-1],
        "resolution_ms": 1,
        "command": command("latency"),
    }


async def append_delays(bootstrap: str, topics: dict[str, str], count: int) -> list[float]:
    from tests.helpers import AvroReader

    reader = AvroReader()
    consumer = AIOKafkaConsumer(
        *topics.values(), bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    delays: list[tuple[int, float]] = []
    try:
        async with asyncio.timeout(120):
            while len(delays) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    for m in messages:
                        _, _, record = reader.decode(m.value)
                        received_ms = record["received_at"].timestamp() * 1000
                        delays.append((m.timestamp, m.timestamp - received_ms))
    finally:
        await consumer.stop()
    delays.sort()  # in append order
    return [d for _, d in delays]


def quantile(ordered: list[float], q: float) -> float:
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


# -- fan-out ---------------------------------------------------------------------------------
async def fanout(bootstrap: str, streams: int, seconds: int) -> dict[str, Any]:
    topics = unique_topics()
    await create_topics(bootstrap, topics)
    # One API key per simulated account, as at the venue: nonces are checked per key, and
    # 1,000 streams sharing one key would refuse each other's concurrent subscriptions.
    keys = {f"bench-key-{i:04d}": f"bench-secret-{i:04d}" for i in range(streams)}
    sim = AquanowSimulator(KEY, SECRET, rate=1, seed=3, extra_credentials=keys)
    async with sim:
        with tempfile.TemporaryDirectory() as tmp:
            accounts = [
                aquanow_stream(f"acct-{i:04d}", sim, api_key=key, api_secret=secret)
                for i, (key, secret) in enumerate(keys.items())
            ]
            cfg = bridge_config(bootstrap, topics, accounts)
            with BridgeProcess(Path(tmp), cfg) as bridge:
                assert bridge.process is not None
                started = time.monotonic()
                await bridge.wait_ready(timeout=300)
                ready_s = time.monotonic() - started
                await asyncio.sleep(5)  # settle after the connection storm, then measure
                cpu0, t0, pushes0 = cpu_seconds(bridge.process.pid), time.monotonic(), len(sim.sent)
                rss_samples = []
                while time.monotonic() - t0 < seconds:
                    rss_samples.append(rss_mb(bridge.process.pid))
                    await asyncio.sleep(1)
                elapsed = time.monotonic() - t0
                cpu = (cpu_seconds(bridge.process.pid) - cpu0) / elapsed
                pushes = (len(sim.sent) - pushes0) / elapsed
                assert bridge.stop() == 0
    return {
        "streams": streams,
        "pushes_per_s": round(pushes, 1),
        "ready_after_s": round(ready_s, 1),
        "rss_mb_max": round(max(rss_samples), 1),
        "rss_mb_median": round(statistics.median(rss_samples), 1),
        "cpu_core_fraction": round(cpu, 3),
        "window_s": seconds,
        "command": command("fanout"),
    }


# -- recovery --------------------------------------------------------------------------------
async def recovery(bootstrap: str, rounds: int, backoff: float = 1.0) -> dict[str, Any]:
    topics = unique_topics()
    await create_topics(bootstrap, topics)
    sim = AquanowSimulator(KEY, SECRET, rate=20, seed=4)
    results, connect_to_snapshot = [], []
    async with sim:
        with tempfile.TemporaryDirectory() as tmp:
            stream = aquanow_stream(
                "rec", sim, rest_url=sim.rest_url, snapshot={"rate_per_second": 50, "burst": 50}
            )
            cfg = bridge_config(
                bootstrap,
                topics,
                [stream],
                reconnect={
                    "initial_delay": backoff,
                    "max_delay": backoff,
                    "jitter": 0,
                    "healthy_after": 0.5,
                },
            )
            with BridgeProcess(Path(tmp), cfg) as bridge:
                await bridge.wait_ready()
                await bridge.wait_metric(
                    "bridge_snapshot_last_success_timestamp_seconds", 1, stream="rec"
                )
                for _ in range(rounds):
                    refused = sim.refused
                    sim.refusing = True
                    await sim.drop_connections()
                    await wait_until(
                        lambda r=refused: sim.refused >= r + 2, "2 more refusals", timeout=30
                    )
                    accepting_at = time.time()
                    sim.refusing = False
                    done_at = await bridge.wait_metric(
                        "bridge_snapshot_last_success_timestamp_seconds", accepting_at, stream="rec"
                    )
                    results.append(done_at - accepting_at)
                    connect_to_snapshot.append(done_at - sim.last_connected_at)
                assert bridge.stop() == 0
    return {
        "backoff_delay_s": backoff,
        "rounds": rounds,
        "recovery_s": [round(r, 3) for r in results],
        "recovery_median_s": round(statistics.median(results), 3),
        "beyond_backoff_max_s": round(max(results) - backoff, 3),
        # The part that is the bridge's own work: accepted connection → subscribed (first push
        # or ack_grace) → REST snapshot published and acknowledged.
        "connect_to_snapshot_s": [round(r, 3) for r in connect_to_snapshot],
        "command": command("recovery"),
    }


# -- breakdown -------------------------------------------------------------------------------
class _InstantAcks:
    """A producer whose futures are already done: isolates the bridge's own CPU per record
    (parse → record → encode → publish → ack bookkeeping) from Kafka's. Measurement only."""

    def __init__(self, **_: Any) -> None:
        pass

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, *_: Any, **__: Any) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def breakdown(frames_count: int) -> dict[str, Any]:
    """Microseconds of CPU per record, stage by stage, in this process (no network)."""
    import json as json_module

    from bridge.metrics import Metrics
    from bridge.sink import Sink
    from bridge.stream import StreamState
    from bridge.venues.fields import loads_exact

    sim = AquanowSimulator(KEY, SECRET, seed=5)
    frames = [sim.next_event().text for _ in range(frames_count)]
    venue, codec = AquanowVenue("bd", KEY, SECRET), Codec(SchemaStore.load())

    def per_record(work: Any, n: int) -> float:
        started = time.perf_counter()
        work()
        return round((time.perf_counter() - started) / n * 1e6, 1)

    records: list[Any] = []
    out = {
        "json_parse_us": per_record(lambda: [loads_exact(f) for f in frames], len(frames)),
        "json_parse_float_us": per_record(
            lambda: [json_module.loads(f) for f in frames], len(frames)
        ),
        "venue_parse_us": per_record(
            lambda: records.extend(
                r for f in frames for r in venue.parse(Frame(f, 0, 0.0)).records
            ),
            len(frames),
        ),
        "avro_encode_us": per_record(lambda: [codec.encode(r) for r in records], len(records)),
    }
    sink = Sink(KafkaSettings(), codec, Metrics(), producer_factory=_InstantAcks)
    await sink.start()
    publisher = StreamState("bench", "aquanow", sink)
    started = time.perf_counter()
    for text in frames:
        frame = Frame(text, time.time_ns() // 1000, time.monotonic())
        for record in venue.parse(frame).records:
            await publisher.publish(record, frame.received_mono)
    await sink.flush()
    out["parse_to_ack_us"] = round((time.perf_counter() - started) / len(frames) * 1e6, 1)
    out["command"] = command("breakdown")
    return out


# -- report ----------------------------------------------------------------------------------
def verdicts(results: dict[str, Any]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    if "throughput" in results:
        out["throughput_ratio"] = results["throughput"]["ratio"] >= TARGETS["throughput_ratio"]
        out["throughput_records_per_s"] = (
            results["throughput"]["bridge_records_per_s"] >= TARGETS["throughput_records_per_s"]
        )
    if "latency" in results:
        out["latency_p99_ms"] = results["latency"]["p99_ms"] <= TARGETS["latency_p99_ms"]
    if "fanout" in results:
        out["fanout_rss_mb"] = results["fanout"]["rss_mb_max"] <= TARGETS["fanout_rss_mb"]
        out["fanout_cpu_core_fraction"] = (
            results["fanout"]["cpu_core_fraction"] <= TARGETS["fanout_cpu_core_fraction"]
        )
    if "recovery" in results:
        out["recovery_beyond_backoff_s"] = (
            results["recovery"]["beyond_backoff_max_s"] <= TARGETS["recovery_beyond_backoff_s"]
        )
    return out


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    if "throughput" in results:
        t = results["throughput"]
        axes[0].bar(
            ["bridge", "bare producer"],
            [t["bridge_records_per_s"], t["ceiling_records_per_s"]],
            color=["#3b7dd8", "#999"],
        )
        axes[0].set_title(f"throughput (ratio {t['ratio']})")
        axes[0].set_ylabel("records/s")
    if "latency" in results:
        lat = results["latency"]
        axes[1].bar(
            ["p50", "p99", "p99.9"], [lat["p50_ms"], lat["p99_ms"], lat["p999_ms"]], color="#3b7dd8"
        )
        axes[1].axhline(TARGETS["latency_p99_ms"], color="red", linestyle="--", label="p99 target")
        axes[1].set_title(f"frame → broker, {lat['rate_per_s']}/s")
        axes[1].set_ylabel("ms")
        axes[1].legend()
    if "fanout" in results:
        f = results["fanout"]
        axes[2].bar(
            ["RSS MB", "CPU % core"],
            [f["rss_mb_max"], 100 * f["cpu_core_fraction"]],
            color="#3b7dd8",
        )
        axes[2].set_title(f"{f['streams']} streams @ 1 push/s")
    if "recovery" in results:
        r = results["recovery"]
        axes[3].plot(range(1, len(r["recovery_s"]) + 1), r["recovery_s"], marker="o")
        axes[3].axhline(
            r["backoff_delay_s"] + TARGETS["recovery_beyond_backoff_s"],
            color="red",
            linestyle="--",
            label="target",
        )
        axes[3].set_title("recovery (accepting → snapshot done)")
        axes[3].set_ylabel("s")
        axes[3].set_xlabel("round")
        axes[3].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main(only: list[str], quick: bool, profile: Path | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "targets": TARGETS,
    }
    if "breakdown" in only:
        results["breakdown"] = await breakdown(5_000 if quick else 20_000)
        print(json.dumps(results["breakdown"]), flush=True)
    with kafka_bootstrap() as kafka:
        bootstrap = kafka.bootstrap_servers
        if "throughput" in only:
            results["throughput"] = await throughput(
                bootstrap, 30_000 if quick else 100_000, profile
            )
            print(json.dumps(results["throughput"]), flush=True)
        if "latency" in only:
            results["latency"] = await latency(bootstrap, 10 if quick else 30)
            print(json.dumps(results["latency"]), flush=True)
        if "fanout" in only:
            results["fanout"] = await fanout(bootstrap, 200 if quick else 1000, 10 if quick else 30)
            print(json.dumps(results["fanout"]), flush=True)
        if "recovery" in only:
            results["recovery"] = await recovery(bootstrap, 3 if quick else 5)
            print(json.dumps(results["recovery"]), flush=True)
        if "restore" in only:
            sizes = (1_000,) if quick else (1_000, 100_000)
            results["restore"] = await restore_bench(bootstrap, sizes)
            print(json.dumps(results["restore"]), flush=True)
    results["verdicts"] = verdicts(results)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    figures = ["breakdown", "throughput", "latency", "fanout", "recovery", "restore"]
    parser.add_argument("--only", nargs="+", choices=figures, default=figures)
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    parser.add_argument(
        "--profile", type=Path, help="pyinstrument text profile of the bridge (throughput)"
    )
    parser.add_argument(
        "--max-batch-bytes", type=int, help="producer batch size, bridge and ceiling alike"
    )
    args = parser.parse_args()
    if args.max_batch_bytes:
        KAFKA_OVERRIDES["max_batch_bytes"] = args.max_batch_bytes
    report = asyncio.run(main(args.only, args.quick, args.profile))
    RESULTS.mkdir(exist_ok=True)
    stamp = report["when"].replace(":", "").replace("-", "")
    (RESULTS / f"bench-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    chart(report, RESULTS / "latest.png")
    print(json.dumps(report["verdicts"], indent=2))
    print(f"results: {RESULTS / 'latest.json'} and latest.png")
