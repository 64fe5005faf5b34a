"""The disk buffer's cost (`make bench ARGS="--only diskbuffer"`): the throughput round of
figures.py (one stream at maximum rate, a real broker) without the disk buffer and with it,
for each fsync policy, the variants interleaved in every repeat so that load on the machine
falls on all of them alike. Reported per variant: CPU µs per record of the `bridge run`
process and records per second (first push to last ack, polled every 0.1 s), min/median/max;
and each one's cost as a ratio of the same repeat's run without the disk buffer. Also, in
this process, µs per frame of the log alone (append, seal, one ack: the frame's whole life in
the log) for each fsync policy, on real simulator frames: steadier than the process figures on
a shared machine."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.diskbuffer import DiskBuffer
from bridge.metrics import Metrics
from bridge.sections import DiskBufferSettings
from bridge.venues.base import Frame
from tests.bench.figures import KEY, SECRET, bridge_round, command
from tests.bench.measure import spread

# `None`: the disk buffer off (the baseline). sync_interval 1 s is the default.
VARIANTS: dict[str, dict[str, Any] | None] = {
    "off": None,
    "fsync_never": {"enabled": True, "fsync": "never"},
    "fsync_interval": {"enabled": True, "fsync": "interval"},
    "fsync_always": {"enabled": True, "fsync": "always"},
}


async def disk_buffer_bench(bootstrap: str, records: int, repeats: int) -> dict[str, Any]:
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    rate: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(repeats):
        for name, section in VARIANTS.items():
            run = await bridge_round(bootstrap, records, section)
            cpu[name].append(run["cpu_us_per_record"])
            rate[name].append(records / run["wall_s"])
    result: dict[str, Any] = {"records": records, "repeats": repeats}
    for name in VARIANTS:
        result[name] = {
            "cpu_us_per_record": spread(cpu[name]),
            "records_per_s": spread(rate[name], 0),
        }
        if name != "off":
            result[name]["cpu_ratio_to_off"] = spread(
                [c / o for c, o in zip(cpu[name], cpu["off"], strict=True)], 3
            )
            result[name]["rate_ratio_to_off"] = spread(
                [r / o for r, o in zip(rate[name], rate["off"], strict=True)], 3
            )
    result["log_alone_us_per_frame"] = await log_alone_figures()
    result["command"] = command("diskbuffer")
    return result


async def log_alone(fsync: str, count: int, repeats: int = 3) -> dict[str, float]:
    """µs of wall time per frame through the log alone: append, seal, its one record acked
    (the release). `interval` includes its syncs (one per 0.05 s of the run here, far more often
    than the default 1 s, so that a short run pays several)."""
    sim = AquanowSimulator(KEY, SECRET, seed=1)
    frames = [Frame(sim.next_event().text, time.time_ns() // 1000, 0.0) for _ in range(count)]
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            settings = DiskBufferSettings(
                enabled=True, path=Path(tmp), fsync=fsync, sync_interval=0.05
            )
            disk = DiskBuffer(settings, Metrics())
            disk.open()
            started = last_sync = time.perf_counter()
            for frame in frames:
                ticket = await disk.append("tp", frame)
                ticket.hold()
                ticket.seal()
                ticket.done()
                if time.perf_counter() - last_sync >= settings.sync_interval:
                    disk.sync()
                    last_sync = time.perf_counter()
            runs.append((time.perf_counter() - started) / count * 1e6)
            disk.close()
    return spread(runs, 2)


async def log_alone_figures() -> dict[str, Any]:
    """`log_alone` for each fsync policy (2,000 frames with always: ~1 ms each)."""
    policies = ("never", "interval", "always")
    return {p: await log_alone(p, 2_000 if p == "always" else 20_000) for p in policies}


if __name__ == "__main__":  # the log alone, no broker: python -m tests.bench.diskbuffer
    import asyncio
    import json

    from bridge.logs import configure

    configure("warning", "json")
    print(json.dumps(asyncio.run(log_alone_figures())))
