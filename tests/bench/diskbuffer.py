"""The disk buffer's cost (`make bench ARGS="--only diskbuffer"`): the throughput round of
figures.py (one stream at maximum rate, a real broker) without the disk buffer and with it,
for each fsync policy, the variants interleaved in every repeat so that load on the machine
falls on all of them alike. Reported per variant: CPU µs per record of the `bridge run`
process and records per second (first push to last ack, polled every 0.1 s), min/median/max;
and each one's cost as a ratio of the same repeat's run without the disk buffer."""

from __future__ import annotations

from typing import Any

from tests.bench.figures import bridge_round, command
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
    result["command"] = command("diskbuffer")
    return result
