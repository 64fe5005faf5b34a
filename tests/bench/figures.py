"""The benchmark's figures (see run.py): each drives simulators → `bridge run` → a real broker
and returns its numbers, or raises `BenchFailed`."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import trustme
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bridge.codec import Codec, SchemaStore
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.venues.aquanow import AquanowVenue
from bridge.venues.base import Frame
from tests.bench.breakdown import breakdown
from tests.bench.measure import (
    BenchFailed,
    Guard,
    HealthProbe,
    cpu_seconds,
    quantile,
    rss_mb,
    spread,
)
from tests.helpers import AvroReader, BridgeProcess, metric_sum, unique_topics, wait_until

__all__ = [
    "KAFKA_OVERRIDES",
    "SERIALIZATION",
    "TARGETS",
    "breakdown",
    "fanout",
    "latency",
    "recovery",
    "throughput",
]

KEY, SECRET = "bench-key", "bench-secret-not-real"
TARGETS: dict[str, float] = {
    "bridge_cpu_us": 100,  # CPU µs per record, `bridge run` process, over a websocket
    "ratio_send": 0.6,  # send() ceiling ÷ bridge, CPU per record
    "ratio_batch": 0.15,  # batch-API ceiling ÷ bridge
    "latency_p99_ms": 20,
    "fanout_1000_rss_mb": 150,
    "fanout_1000_cpu": 0.25,
    "scrape_s": 0.2,
    "recovery_beyond_backoff_s": 2.0,
}
KAFKA_OVERRIDES: dict[str, Any] = {}  # --max-batch-bytes: the same for the bridge and ceilings
SERIALIZATION: dict[str, Any] = {}  # --decoder stdlib: the reference reader (before phase 2)
STREAM: dict[str, Any] = {}  # --compression: permessage-deflate on (the default before phase 3)


def command(name: str, more: str = "") -> str:
    decoder = f" --decoder {SERIALIZATION['decoder']}" if SERIALIZATION else ""
    compression = " --compression" if STREAM.get("compression") else ""
    return f'make bench ARGS="--only {name}{more}{decoder}{compression}"'


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


def bridge_config(
    bootstrap: str, topics: dict[str, str], streams: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    kafka = {"bootstrap_servers": bootstrap, "topics": topics, **KAFKA_OVERRIDES}
    return {
        "kafka": kafka,
        "serialization": dict(SERIALIZATION),
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
        **STREAM,
        **extra,
    }


VENUE_TOPICS = ("balances", "orders", "positions", "trades", "credit", "deadletter")
SCRAPE_EVERY_S = 2.0  # the fan-out's scrape window: enough scrapes to time
CHART_SCRAPE_S = 30.0  # helm/bridge/values.yaml serviceMonitor.interval
OWNERS_HOOK = Path(__file__).resolve().parent / "owners"  # --owners: the bridge loads it
POLL_S = 0.25  # between two scrapes while waiting: a scrape costs the bridge ~1 ms of CPU


def venue_records(metrics: str) -> float:
    """Records acknowledged on the venue topics, from one /metrics text (the bridge's own
    control and state topics carry records of their own)."""
    return sum(metric_sum(metrics, "bridge_records_published_total", topic=t) for t in VENUE_TOPICS)


def live_records(metrics: str) -> float:
    """Records acknowledged on the venue topics that came from pushes (not from snapshots)."""
    return venue_records(metrics) - metric_sum(metrics, "bridge_snapshot_records_total")


async def wait_published(
    bridge: BridgeProcess,
    guard: Guard,
    count: float,
    timeout: float,
    published: Callable[[str], float] = venue_records,
) -> None:
    """Until `count` records are acknowledged (`published` counts them in a /metrics text);
    fails on a deadline, a death or a reconnect. One scrape per poll serves the guard and the
    count."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = await guard.check("waiting for the records")
        published_now = published(metrics)
        if published_now >= count:
            return
        if time.monotonic() > deadline:
            frames = metric_sum(metrics, "bridge_ws_messages_received_total")
            control = metric_sum(metrics, "bridge_control_frames_total")
            buffered = metric_sum(metrics, "bridge_producer_buffer_records")
            raise BenchFailed(
                f"{published_now:.0f} of {count} records published within {timeout} s "
                f"(frames received {frames:.0f}, control frames {control:.0f}, "
                f"buffer {buffered:.0f})"
            )
        await asyncio.sleep(POLL_S)


# -- throughput ------------------------------------------------------------------------------
async def throughput(bootstrap: str, records: int, repeats: int) -> dict[str, Any]:
    frames = AquanowSimulator(KEY, SECRET, seed=1)
    texts = [frames.next_event().text for _ in range(records)]
    bridge, send, batch, lag = [], [], [], []
    for _ in range(repeats):
        run = await bridge_round(bootstrap, records)
        bridge.append(run["cpu_us_per_record"])
        lag.append(run["healthz"])
        send.append(await ceiling_round(bootstrap, texts, "send"))
        batch.append(await ceiling_round(bootstrap, texts, "batch"))
    ratio_send = [s / b for s, b in zip(send, bridge, strict=True)]
    ratio_batch = [s / b for s, b in zip(batch, bridge, strict=True)]
    return {
        "records": records,
        "repeats": repeats,
        "bridge_cpu_us_per_record": spread(bridge),
        "send_ceiling_cpu_us": spread(send),
        "batch_ceiling_cpu_us": spread(batch),
        "ratio_send_ceiling": spread(ratio_send, 3),
        "ratio_batch_ceiling": spread(ratio_batch, 3),
        "healthz_ms_p99": spread([h["p99_ms"] for h in lag], 2),
        "healthz_ms_max": spread([h["max_ms"] for h in lag], 2),
        "command": command("throughput"),
    }


async def bridge_round(
    bootstrap: str, records: int, disk_buffer: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One stream at maximum rate: CPU µs per record of `bridge run`, and the wall seconds
    from the first push to the last ack. `disk_buffer`: that section, its path in the run's
    directory (tests/bench/diskbuffer.py)."""
    topics = unique_topics()
    await create_topics(bootstrap, topics)
    sim = AquanowSimulator(KEY, SECRET, rate=0, count=records, seed=1, slow_consumer_timeout=20)
    sim.preload(records)
    sim.pause()
    async with sim:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = bridge_config(bootstrap, topics, [aquanow_stream("tp", sim)])
            if disk_buffer is not None:
                cfg["disk_buffer"] = {**disk_buffer, "path": str(Path(tmp) / "buffer")}
            with BridgeProcess(Path(tmp), cfg) as bridge:
                assert bridge.process is not None
                await bridge.wait_ready()
                guard = Guard(bridge, [sim])
                await guard.start()
                cpu = cpu_seconds(bridge.process.pid)
                with HealthProbe(bridge.metrics_port) as probe:
                    started = time.monotonic()
                    sim.pause(False)
                    await wait_published(bridge, guard, records, timeout=600)
                    wall = time.monotonic() - started
                cpu = cpu_seconds(bridge.process.pid) - cpu
                await guard.check("after the run")
                if bridge.stop() != 0:
                    raise BenchFailed(f"bridge exit code {bridge.process.returncode}")
    return {
        "cpu_us_per_record": cpu / records * 1e6,
        "wall_s": wall,
        "healthz": probe.summary(),
    }


async def ceiling_round(bootstrap: str, texts: list[str], mode: str) -> float:
    """CPU µs per record of a bare producer (its own process) sending the bridge's records."""
    topics = unique_topics()
    await create_topics(bootstrap, topics)
    venue, codec = AquanowVenue("tp", KEY, SECRET), Codec(SchemaStore.load())
    encoded = []
    for text in texts:
        for record in venue.parse(Frame(text, time.time_ns() // 1000, time.monotonic())).records:
            e = codec.encode(record)
            encoded.append((topics[e.topic], e.key, e.value, e.headers))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.pickle"
        path.write_bytes(pickle.dumps(encoded))
        kafka = json.dumps({"bootstrap_servers": bootstrap, **KAFKA_OVERRIDES})
        argv = [sys.executable, "-m", "tests.bench.ceiling", mode, kafka, str(path)]
        done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, timeout=600)
    if done.returncode != 0:
        raise BenchFailed(f"ceiling {mode} failed:\n{done.stderr.decode()[-2000:]}")
    return float(json.loads(done.stdout)["cpu_us_per_record"]) * len(encoded) / len(texts)


# -- latency ---------------------------------------------------------------------------------
async def latency(bootstrap: str, seconds: int, rate: int = 1000) -> dict[str, Any]:
    topics = unique_topics()
    await create_topics(bootstrap, topics)
    count = seconds * rate
    sim = AquanowSimulator(KEY, SECRET, rate=rate, count=count, seed=2, slow_consumer_timeout=20)
    sim.preload(count)
    sim.pause()
    async with sim:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = bridge_config(bootstrap, topics, [aquanow_stream("lat", sim)])
            with BridgeProcess(Path(tmp), cfg) as bridge:
                await bridge.wait_ready()
                guard = Guard(bridge, [sim])
                await guard.start()
                with HealthProbe(bridge.metrics_port) as probe:
                    sim.pause(False)
                    await wait_published(bridge, guard, count, timeout=seconds + 60)
                if bridge.stop() != 0:
                    raise BenchFailed("the bridge did not exit cleanly")
    delays = await append_delays(bootstrap, topics, count)
    warm = sorted(delays[len(delays) // 20 :])  # the first 5 % include connection warm-up
    return {
        "rate_per_s": rate,
        "records": len(delays),
        "p50_ms": round(quantile(warm, 0.5), 2),
        "p99_ms": round(quantile(warm, 0.99), 2),
        "p999_ms": round(quantile(warm, 0.999), 2),
        "max_ms": round(warm[-1], 2),
        "resolution_ms": 1,
        "healthz": probe.summary(),
        "command": command("latency"),
    }


async def append_delays(bootstrap: str, topics: dict[str, str], count: int) -> list[float]:
    reader = AvroReader()
    venue_topics = [n for t, n in topics.items() if t not in ("control", "state")]
    consumer = AIOKafkaConsumer(
        *venue_topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
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


# -- fan-out ---------------------------------------------------------------------------------
def tls_server(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A CA made now and a certificate for 127.0.0.1; the bridge trusts the CA through
    SSL_CERT_FILE (the system's CA bundle with it), as it would a venue's public CA."""
    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    system = Path("/etc/ssl/certs/ca-certificates.crt")  # a real store's size, plus ours
    ca_file.write_bytes((system.read_bytes() if system.exists() else b"") + ca.cert_pem.bytes())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context, ca_file


def size_text(streams: int, rate: float, burst: bool, venue: bool) -> str:
    """A fan-out size as `--fanout-streams` takes it."""
    return f"{streams}@{rate:g}{':burst' if burst else ''}{':venue' if venue else ''}"


async def fanout(
    bootstrap: str,
    streams: int,
    seconds: int,
    rate: float = 1.0,
    burst: bool = False,
    venue_histograms: bool = False,
    owners: bool = False,
) -> dict[str, Any]:
    """`owners`: also what the bridge's memory is held by, per stream, written by
    tests/bench/owners/sitecustomize.py after the measured windows."""
    topics = unique_topics()
    await create_topics(bootstrap, topics)
    # One API key per simulated account, as at the venue: nonces are checked per key.
    keys = {f"bench-key-{i:05d}": f"bench-secret-{i:05d}" for i in range(streams)}
    with tempfile.TemporaryDirectory() as tmp:
        context, ca_file = tls_server(Path(tmp))
        sim = AquanowSimulator(
            KEY,
            SECRET,
            rate=rate,
            seed=3,
            extra_credentials=keys,
            ssl=context,
            slow_consumer_timeout=20,
            spread=not burst,  # each account's push at its own moment of the second
        )
        async with sim:
            accounts = [
                aquanow_stream(f"acct-{i:05d}", sim, api_key=key, api_secret=secret)
                for i, (key, secret) in enumerate(keys.items())
            ]
            cfg = bridge_config(bootstrap, topics, accounts)
            cfg["metrics"] = {"stream_histograms": not venue_histograms}
            env = {"SSL_CERT_FILE": str(ca_file)}
            owners_path = Path(tmp) / "owners.json"
            if owners:
                path = [str(OWNERS_HOOK), *filter(None, [os.environ.get("PYTHONPATH")])]
                env |= {"PYTHONPATH": os.pathsep.join(path), "BENCH_OWNERS_OUT": str(owners_path)}
            with BridgeProcess(Path(tmp), cfg, env=env) as bridge:
                assert bridge.process is not None
                started = time.monotonic()
                await wait_ready(bridge, timeout=600)
                ready_s = time.monotonic() - started
                await asyncio.sleep(5)  # settle after the connection storm, then measure
                guard = Guard(bridge, [sim])
                await guard.start()
                pid = bridge.process.pid
                pushes0 = len(sim.sent)
                # Two windows: the streams alone, then the same with a scrape every
                # SCRAPE_EVERY_S from another process (as Prometheus scrapes). The CPU figure is
                # the streams' plus a scrape's CPU at the chart's interval.
                with HealthProbe(bridge.metrics_port, interval=0.2) as probe:
                    rss, elapsed, cpu = await sample_window(pid, seconds)
                    with HealthProbe(bridge.metrics_port, SCRAPE_EVERY_S, "/metrics") as scraper:
                        more_rss, scraped_s, scraped_cpu = await sample_window(pid, seconds)
                    rss += more_rss
                    await sim.quiesce()
                    pushed = len(sim.sent) - pushes0
                    # Every push the venue ever made, published: counted from the start, as a
                    # count taken at t0 would race the pushes landing while it is read.
                    await wait_published(bridge, guard, len(sim.sent), 60, live_records)
                scrapes = [ms / 1000 for ms in scraper.times_ms]
                if len(scrapes) < 3:
                    raise BenchFailed(f"{len(scrapes)} scrapes answered in {seconds} s")
                scrape_cpu = max(0.0, (scraped_cpu - cpu) * scraped_s / len(scrapes))
                await guard.check(f"{streams} streams")
                held = await memory_owners(bridge, owners_path) if owners else None
                if bridge.stop(60) != 0:
                    raise BenchFailed("the bridge did not exit cleanly")
    return {
        "streams": streams,
        "rate_per_stream": rate,
        "spread": not burst,
        "stream_histograms": not venue_histograms,
        "tls": True,
        "pushes_per_s": round(pushed / (elapsed + scraped_s), 1),
        "published_all": True,
        "ready_after_s": round(ready_s, 1),
        "rss_mb_max": round(max(rss), 1),
        "rss_mb_median": round(statistics.median(rss), 1),
        "cpu_core_fraction": round(cpu + scrape_cpu / CHART_SCRAPE_S, 3),
        "cpu_streams_core_fraction": round(cpu, 3),
        "scrape_cpu_s": round(scrape_cpu, 3),
        "scrape_s": spread(scrapes, 3),
        "healthz": probe.summary(),
        "window_s": seconds,
        **({"owners": held} if held is not None else {}),
        "command": command(
            "fanout",
            f" --fanout-streams {size_text(streams, rate, burst, venue_histograms)}"
            + (" --owners" if owners else ""),
        ),
    }


async def wait_ready(bridge: BridgeProcess, timeout: float) -> None:
    """/readyz 200 within `timeout`. A request that times out is "not yet": while thousands of
    TLS handshakes run, the bridge answers late, and that is what is being measured."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert bridge.process is not None
        if bridge.process.poll() is not None:
            raise BenchFailed(f"the bridge exited with {bridge.process.returncode}")
        try:
            status, _ = await bridge.get("/readyz")
            if status == 200:
                return
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.5)
    raise BenchFailed(f"not ready within {timeout} s")


async def memory_owners(bridge: BridgeProcess, path: Path) -> dict[str, Any]:
    """Ask the bridge (SIGUSR1) what its memory is held by; the report its hook wrote."""
    process = bridge.process
    assert process is not None
    rss = rss_mb(process.pid)  # before the walk, which allocates as it goes
    process.send_signal(signal.SIGUSR1)  # without the hook its default action ends the bridge
    await wait_until(
        lambda: path.exists() or process.poll() is not None, "the memory owners report", 300
    )
    if process.poll() is not None:
        raise BenchFailed("the bridge ended on SIGUSR1: tests/bench/owners was not loaded")
    report: dict[str, Any] = json.loads(await asyncio.to_thread(path.read_text))
    return {"rss_mb": round(rss, 1), **report}


async def sample_window(pid: int, seconds: float) -> tuple[list[float], float, float]:
    """RSS samples (MB) every 2 s for `seconds`, the window's length and the bridge's CPU over
    it (a fraction of a core)."""
    cpu0, t0, rss = cpu_seconds(pid), time.monotonic(), []
    while time.monotonic() - t0 < seconds:
        rss.append(rss_mb(pid))
        await asyncio.sleep(2)
    elapsed = time.monotonic() - t0
    return rss, elapsed, (cpu_seconds(pid) - cpu0) / elapsed


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
            reconnect = {"initial_delay": backoff, "max_delay": backoff, "jitter": 0}
            cfg = bridge_config(
                bootstrap, topics, [stream], reconnect={**reconnect, "healthy_after": 0.5}
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
                    more = lambda: sim.refused >= refused + 2  # noqa: B023, E731 (awaited here)
                    await wait_until(more, "2 more refusals", timeout=30)
                    accepting_at = time.time()
                    sim.refusing = False
                    done_at = await bridge.wait_metric(
                        "bridge_snapshot_last_success_timestamp_seconds", accepting_at, stream="rec"
                    )
                    results.append(done_at - accepting_at)
                    connect_to_snapshot.append(done_at - sim.last_connected_at)
                if bridge.stop() != 0:
                    raise BenchFailed("the bridge did not exit cleanly")
    return {
        "backoff_delay_s": backoff,
        "rounds": rounds,
        "recovery_s": [round(r, 3) for r in results],
        "recovery_median_s": round(statistics.median(results), 3),
        "beyond_backoff_max_s": round(max(results) - backoff, 3),
        # The bridge's own work: accepted connection → subscribed → snapshot acknowledged.
        "connect_to_snapshot_s": [round(r, 3) for r in connect_to_snapshot],
        "command": command("recovery"),
    }
