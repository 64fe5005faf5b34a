"""`make bench`: simulator → bridge → real broker, measured. Never part of the test run.

Each figure prints the command that reproduces it and lands in tests/bench/results/ (JSON and
a PNG). A figure whose run lost its connection, missed its target count or killed the bridge
raises `BenchFailed`: the command exits non-zero and writes no results (measure.py).

- breakdown: µs of CPU per record, stage by stage, in this process, old way and new way.
- throughput: one stream at maximum rate. CPU time of the `bridge run` process per record
  (from the first push to the last ack), against two ceilings measured the same way in the
  same run: a bare aiokafka producer sending the same pre-encoded records with `send()` and
  with the batch API. Three repeats each (min/median/max); reported as ratios
  ceiling ÷ bridge, never as bare rates. /healthz response times bound the loop's lag.
- latency: frame received → broker append, p50/p99/p99.9, at 1,000 records/s (the bench
  topics use LogAppendTime: a record's Kafka timestamp is the broker's append time).
- fanout: N streams at R push/s each (1,000 and 3,000 at 1/s, 10,000 at 0.1/s) over TLS (a CA
  made at run time), each account's pushes at its own moment of the second as independent
  accounts' are (1,000 also in a burst: every account in the same instant, the loop's worst
  lag): RSS, every push published, no reconnect; CPU over a window of the streams
  alone, then a window with a scrape every 2 s from another process (as Prometheus scrapes),
  which times the scrapes and gives a scrape's CPU; the CPU figure is the streams' plus one
  scrape per 30 s (the chart's interval).
- recovery: from the venue accepting connections again to resubscribed with the snapshot
  published, minus the configured backoff delay.
- fleet: fleet mode's failover time, streams restarted per membership change, and the latency
  cost of its transactions (fencing) against a plain bridge in the same run
  (tests/bench/fleet.py).
- restore: a stream's state restored from its checkpoint at start, 1,000 and 100,000 keys:
  seconds and memory, against scanning the state topics instead (tests/bench/restore.py).
- diskbuffer: the throughput round without the disk buffer and with it (fsync never,
  interval, always): CPU µs per record and records/s, as ratios to the run without it
  (tests/bench/diskbuffer.py).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from bridge.dev.kafka import kafka_bootstrap
from tests.bench import figures
from tests.bench.diskbuffer import disk_buffer_bench
from tests.bench.figures import KAFKA_OVERRIDES, SERIALIZATION, TARGETS
from tests.bench.fleet import fleet_bench
from tests.bench.restore import restore_bench

RESULTS = Path(__file__).resolve().parent / "results"
FIGURES = [
    "breakdown",
    "throughput",
    "latency",
    "fanout",
    "recovery",
    "restore",
    "diskbuffer",
    "fleet",
]


# Fan-out runs of a full `make bench`: the targets' 1,000 and 3,000 streams at 1 push/s, and
# 10,000 mostly idle ones (the simulator, in this process, cannot push 10,000/s over TLS).
FANOUT_SIZES: Final = [
    (1000, 1.0, False, False),
    (1000, 1.0, True, False),  # the burst
    (1000, 1.0, False, True),  # metrics.stream_histograms: false
    (3000, 1.0, False, False),
    (10_000, 0.1, False, False),
]
FanoutSize = tuple[int, float, bool, bool]  # streams, pushes/s each, burst, venue histograms


def fanout_size(text: str) -> FanoutSize:
    """`N@R`: N streams at R pushes/s each, spread over the second; `:burst` after it: all at
    once; `:venue`: with `metrics.stream_histograms: false`."""
    size, *shapes = text.split(":")
    streams, _, rate = size.partition("@")
    if set(shapes) - {"burst", "venue"}:
        raise argparse.ArgumentTypeError(f"{text}: after ':' only 'burst' or 'venue'")
    return int(streams), float(rate or 1), "burst" in shapes, "venue" in shapes


def verdicts(results: dict[str, Any]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    if "throughput" in results:
        t = results["throughput"]
        out["ratio_send"] = t["ratio_send_ceiling"]["median"] >= TARGETS["ratio_send"]
        out["ratio_batch"] = t["ratio_batch_ceiling"]["median"] >= TARGETS["ratio_batch"]
        out["bridge_cpu_us"] = t["bridge_cpu_us_per_record"]["median"] <= TARGETS["bridge_cpu_us"]
    if "latency" in results:
        out["latency_p99_ms"] = results["latency"]["p99_ms"] <= TARGETS["latency_p99_ms"]
    for run in results.get("fanout", []):
        if not run["spread"] or not run.get("stream_histograms", True):
            continue  # reported; the targets are about independent accounts, default settings
        if run["streams"] == 1000:
            out["fanout_1000_rss_mb"] = run["rss_mb_max"] <= TARGETS["fanout_1000_rss_mb"]
            out["fanout_1000_cpu"] = run["cpu_core_fraction"] <= TARGETS["fanout_1000_cpu"]
            out["fanout_1000_scrape_s"] = run["scrape_s"]["max"] <= TARGETS["scrape_s"]
        if run["streams"] == 3000:
            out["fanout_3000_cpu"] = run["cpu_core_fraction"] <= 1.0
    if "recovery" in results:
        out["recovery_beyond_backoff_s"] = (
            results["recovery"]["beyond_backoff_max_s"] <= TARGETS["recovery_beyond_backoff_s"]
        )
    return out


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    if "throughput" in results:
        t = results["throughput"]
        names = ["bridge", "send()", "batch API"]
        keys = ["bridge_cpu_us_per_record", "send_ceiling_cpu_us", "batch_ceiling_cpu_us"]
        axes[0].bar(names, [t[k]["median"] for k in keys], color=["#3b7dd8", "#999", "#bbb"])
        axes[0].set_title(f"CPU µs/record (send ratio {t['ratio_send_ceiling']['median']})")
    if "latency" in results:
        lat = results["latency"]
        axes[1].bar(["p50", "p99", "p99.9"], [lat["p50_ms"], lat["p99_ms"], lat["p999_ms"]])
        axes[1].axhline(TARGETS["latency_p99_ms"], color="red", linestyle="--")
        axes[1].set_title(f"frame → broker (ms), {lat['rate_per_s']}/s")
    if results.get("fanout"):
        runs = [r for r in results["fanout"] if r["spread"] and r.get("stream_histograms", True)]
        axes[2].plot([r["streams"] for r in runs], [r["rss_mb_max"] for r in runs], marker="o")
        axes[2].set_xlabel("TLS streams")
        axes[2].set_title("fan-out RSS (MB)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "targets": TARGETS,
        "decoder": SERIALIZATION.get("decoder", "msgspec"),
    }
    quick = args.quick
    if "breakdown" in args.only:
        results["breakdown"] = await figures.breakdown(5_000 if quick else 20_000)
        print(json.dumps(results["breakdown"]), flush=True)
    with kafka_bootstrap() as kafka:
        bootstrap = kafka.bootstrap_servers
        if "throughput" in args.only:
            records = args.records or (20_000 if quick else 100_000)
            results["throughput"] = await figures.throughput(bootstrap, records, args.repeats)
            print(json.dumps(results["throughput"]), flush=True)
        if "latency" in args.only:
            results["latency"] = await figures.latency(bootstrap, 10 if quick else 30)
            print(json.dumps(results["latency"]), flush=True)
        if "fanout" in args.only:
            sizes = args.fanout_streams or ([(200, 1.0, False, False)] if quick else FANOUT_SIZES)
            results["fanout"] = []
            for streams, rate, burst, venue in sizes:
                window = 10 if quick else 30
                run = await figures.fanout(
                    bootstrap, streams, window, rate, burst, venue, owners=args.owners
                )
                results["fanout"].append(run)
                print(json.dumps(run), flush=True)
        if "recovery" in args.only:
            results["recovery"] = await figures.recovery(bootstrap, 3 if quick else 5)
            print(json.dumps(results["recovery"]), flush=True)
        if "restore" in args.only:
            sizes = (1_000,) if quick else (1_000, 100_000)
            results["restore"] = await restore_bench(bootstrap, sizes)
            print(json.dumps(results["restore"]), flush=True)
        if "diskbuffer" in args.only:
            records = args.records or (5_000 if quick else 20_000)
            results["diskbuffer"] = await disk_buffer_bench(bootstrap, records, args.repeats)
            print(json.dumps(results["diskbuffer"]), flush=True)
        if "fleet" in args.only:
            with tempfile.TemporaryDirectory(prefix="bench-fleet-") as workdir:
                results["fleet"] = await fleet_bench(kafka, Path(workdir), quick)
            print(json.dumps(results["fleet"]), flush=True)
    results["verdicts"] = verdicts(results)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=FIGURES, default=FIGURES)
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    parser.add_argument("--records", type=int, help="records per throughput round")
    parser.add_argument("--repeats", type=int, default=3, help="throughput rounds")
    parser.add_argument(
        "--fanout-streams",
        type=fanout_size,
        nargs="+",
        help="fan-out sizes, N, N@R, N@R:burst, N@R:venue (N streams at R pushes/s each, "
        "spread over the second or all at once; venue: metrics.stream_histograms false; "
        "default " + " ".join(figures.size_text(*size) for size in FANOUT_SIZES) + ")",
    )
    parser.add_argument(
        "--owners",
        action="store_true",
        help="fan-out runs also report what the bridge's memory is held by, per stream "
        "(tests/bench/owners/sitecustomize.py, after the measured windows)",
    )
    parser.add_argument(
        "--max-batch-bytes", type=int, help="producer batch size, bridge and ceilings alike"
    )
    parser.add_argument(
        "--decoder",
        choices=["msgspec", "stdlib"],
        help="the bridge's serialization.decoder (stdlib: the reader before issue 17 phase 2)",
    )
    parser.add_argument(
        "--compression",
        action="store_true",
        help="the streams offer permessage-deflate (the default before issue 17 phase 3)",
    )
    args = parser.parse_args()
    if args.compression:
        figures.STREAM["compression"] = True
    if args.decoder:
        SERIALIZATION["decoder"] = args.decoder
    if args.max_batch_bytes:
        KAFKA_OVERRIDES["max_batch_bytes"] = args.max_batch_bytes
    report = asyncio.run(main(args))  # BenchFailed: exits non-zero, nothing written
    RESULTS.mkdir(exist_ok=True)
    stamp = report["when"].replace(":", "").replace("-", "")
    written = RESULTS / f"bench-{stamp}.json"
    written.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["verdicts"], indent=2))
    if sorted(args.only) != sorted(FIGURES):  # latest.json and its chart: full runs only
        print(f"results: {written} (a partial run: latest.json keeps the last full one)")
    else:
        (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
        chart(report, RESULTS / "latest.png")
        print(f"results: {written}, latest.json and latest.png")
