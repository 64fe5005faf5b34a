"""What the benchmark measures with, and how a run fails instead of lying.

- CPU time of a process from /proc (user + system): steadier than rates on a shared machine.
- `Spread`: min / median / max of repeats.
- `HealthProbe`: /healthz answered by the bridge's event loop, polled from another process
  every 50 ms; its response times bound the loop's lag from above.
- `Guard`: a run is valid only if the bridge stayed up, never reconnected, and the venue cut
  no one off; otherwise `BenchFailed` is raised and nothing is reported.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import BridgeProcess, metric_sum

RECONNECTS = "bridge_ws_reconnects_total"


class BenchFailed(AssertionError):
    """A run that cannot be reported: it lost its connection, missed its target, or died."""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def spread(values: list[float], digits: int = 1) -> dict[str, float]:
    return {
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
    }


def quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class HealthProbe:
    """GET `path` every `interval` seconds from another process (tests/bench/probe.py),
    timing each answer: the bridge's event loop answers /healthz, so its times bound the loop's
    lag; /metrics times a scrape as Prometheus sees it."""

    port: int
    interval: float = 0.05
    path: str = "/healthz"
    times_ms: list[float] = field(default_factory=list)
    _process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> HealthProbe:
        argv = [
            *(sys.executable, "-m", "tests.bench.probe"),
            *(str(self.port), str(self.interval), self.path),
        ]
        self._process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        return self

    def __exit__(self, *_: object) -> None:
        assert self._process is not None
        out, _err = self._process.communicate(b"", timeout=60)
        self.times_ms = json.loads(out)

    def summary(self) -> dict[str, Any]:
        if len(self.times_ms) < 3:
            raise BenchFailed(f"{self.path} answered {len(self.times_ms)} times: the loop starved")
        ordered = sorted(self.times_ms)
        return {
            "probes": len(ordered),
            "p50_ms": round(quantile(ordered, 0.5), 2),
            "p99_ms": round(quantile(ordered, 0.99), 2),
            "max_ms": round(ordered[-1], 2),
        }


@dataclass
class Guard:
    """Fails the run when the bridge died, reconnected, or a simulator cut it off."""

    bridge: BridgeProcess
    simulators: list[Any]
    reconnects_at_start: float = 0.0
    connections_at_start: int = 0

    async def start(self) -> None:
        self.reconnects_at_start = await self.bridge.metric(RECONNECTS)
        self.connections_at_start = sum(s.connections_total for s in self.simulators)

    async def check(self, what: str) -> str:
        """The /metrics text it read, for the caller's own figures: a scrape costs the
        bridge ~1 ms of CPU, which a run's CPU per record would count."""
        process = self.bridge.process
        assert process is not None, "the bridge was never started"
        if process.poll() is not None:
            raise BenchFailed(f"{what}: the bridge exited with {process.returncode}")
        try:
            _, text = await self.bridge.get("/metrics")
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            raise BenchFailed(f"{what}: /metrics did not answer ({exc!r})") from exc
        lost = metric_sum(text, RECONNECTS) - self.reconnects_at_start
        again = sum(s.connections_total for s in self.simulators) - self.connections_at_start
        cut = sum(s.slow_consumers for s in self.simulators)
        if lost or again or cut:
            raise BenchFailed(
                f"{what}: {lost:.0f} reconnects, {again} new connections, {cut} slow consumers "
                "cut off: the run did not survive its own load"
            )
        return text
