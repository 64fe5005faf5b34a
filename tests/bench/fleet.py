"""`make bench ARGS="--only fleet"`: fleet mode, measured (issue 14).

- membership: 30 streams (15 Aquanow, 15 Satori), 12 shards, session timeout 3 s. One member,
  then two more join (1 → 3); `kill -9` of one (failover: from the kill until every stream is
  owned by exactly one live member and subscribed at its venue); a rolling restart of one
  member (SIGTERM, start again under the same member id). For each change: streams started
  anywhere (bridge_fleet_stream_starts_total, summed over members) against the minimum (the
  streams whose shard had to move), and the seconds until every stream ran once again.
- fencing cost: the same 10 streams at 20 pushes/s each for 20 s, through a plain bridge and
  through a one-member fleet (transactions committed every `fleet.commit_interval`, 0.1 s by
  default), in the same run: frame received → acknowledged (fleet: its transaction committed,
  i.e. visible to read_committed consumers), the mean from the pipeline-latency histogram's
  sum and count and p50/p99 from its buckets (upper bounds).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bridge.dev.kafka import KafkaEndpoint
from bridge.metrics import LATENCY_BUCKETS
from tests.e2e.fleet_harness import Fleet, build_accounts, started_between
from tests.helpers import BridgeProcess

SESSION = 3.0


async def fleet_bench(kafka: KafkaEndpoint, workdir: Path, quick: bool) -> dict[str, Any]:
    return {
        "membership": await membership(kafka, workdir / "membership"),
        "fencing": await fencing_cost(kafka, workdir / "fencing", 10 if quick else 20),
    }


async def membership(kafka: KafkaEndpoint, workdir: Path) -> dict[str, Any]:
    accounts = build_accounts(aquanow=15, satori=15, rate=2.0)
    changes: list[dict[str, Any]] = []
    async with Fleet(kafka, workdir, accounts, shards=12, session_timeout=SESSION) as fleet:
        fleet.start("m1")
        await fleet.members["m1"].wait_ready(120)
        owners = await fleet.wait_owned_once(120)

        async def change(name: str, act: Any) -> None:
            nonlocal owners
            before, counted = owners, await fleet.stream_starts()
            t0 = time.monotonic()
            await act()
            owners = await fleet.wait_owned_once(SESSION + 60)
            seconds = time.monotonic() - t0
            now = await fleet.stream_starts()
            changes.append(
                {
                    "change": name,
                    "seconds_until_every_stream_runs_once": round(seconds, 1),
                    "streams_moved": sum(1 for s, o in owners.items() if o != before.get(s)),
                    "streams_started": started_between(counted, now),
                }
            )
            print(f"fleet {changes[-1]}", flush=True)

        async def join() -> None:
            fleet.start("m2")
            fleet.start("m3")

        async def kill() -> None:
            process = fleet.members["m2"].process
            assert process is not None
            process.send_signal(signal.SIGKILL)
            process.wait(10)

        async def restart() -> None:
            member = fleet.members["m3"]
            assert member.process is not None
            member.process.send_signal(signal.SIGTERM)
            member.process.wait(30)
            fleet.start("m3")

        await change("join 1 -> 3", join)
        await change("kill -9 of one of 3", kill)
        await change("restart of one of 2 (same member id)", restart)
    return {"session_timeout_s": SESSION, "shards": 12, "streams": 30, "changes": changes}


async def fencing_cost(kafka: KafkaEndpoint, workdir: Path, seconds: int) -> dict[str, Any]:
    accounts = build_accounts(aquanow=10, satori=0, rate=20.0)
    out: dict[str, Any] = {"streams": 10, "pushes_per_s_per_stream": 20, "seconds": seconds}
    async with Fleet(kafka, workdir, accounts, shards=12, session_timeout=SESSION) as fleet:
        for mode in ("plain", "fleet"):
            config = fleet.config()
            if mode == "plain":
                config.pop("fleet")
            where = workdir / mode
            where.mkdir(parents=True)
            bridge = BridgeProcess(where, config, env={"BRIDGE_FLEET__MEMBER_ID": "m1"}).start()
            try:
                await bridge.wait_ready(120)
                await asyncio.sleep(2)  # past the start: snapshots published
                first = await latency(bridge)
                await asyncio.sleep(seconds)
                out[mode] = delta(first, await latency(bridge))
            finally:
                assert bridge.process is not None
                bridge.process.send_signal(signal.SIGTERM)
                bridge.process.wait(60)
            print(f"fleet fencing {mode} {out[mode]}", flush=True)
    out["mean_cost_ms"] = round(out["fleet"]["mean_ms"] - out["plain"]["mean_ms"], 1)
    return out


async def latency(bridge: BridgeProcess) -> dict[str, float]:
    """The pipeline-latency histogram summed over streams, from one scrape (one scrape per
    value would count records acknowledged in between in some values only)."""
    _, text = await bridge.get("/metrics")
    found: dict[str, float] = defaultdict(float)
    name = "bridge_pipeline_latency_seconds"
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == name + "_bucket":
                found[str(float(sample.labels["le"]))] += sample.value
            elif sample.name in (name + "_sum", name + "_count"):
                found[sample.name.removeprefix(name + "_")] += sample.value
    return found


def delta(first: dict[str, float], last: dict[str, float]) -> dict[str, float]:
    count = last["count"] - first["count"]
    assert count > 0, "no record acknowledged"

    def quantile(q: float) -> float:
        for le in LATENCY_BUCKETS:
            if last[str(float(le))] - first[str(float(le))] >= q * count:
                return le * 1000
        return float("inf")

    return {
        "records": int(count),
        "mean_ms": round((last["sum"] - first["sum"]) / count * 1000, 1),
        "p50_le_ms": quantile(0.5),
        "p99_le_ms": quantile(0.99),
    }
