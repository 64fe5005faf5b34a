"""`bridge simulate` prints the exact stream entry `bridge run` needs: a newcomer pastes it into
a config, `bridge check` accepts it, and `bridge run` with it publishes to a real broker."""

from __future__ import annotations

import asyncio
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.dev.kafka import KafkaEndpoint
from tests.helpers import ROOT, BridgeProcess, unique_topics

pytestmark = pytest.mark.e2e


async def printed_block(process: asyncio.subprocess.Process) -> str:
    """stdout up to the first blank line: the YAML `bridge simulate` prints."""
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(30):
        while (line := (await process.stdout.readline()).decode()).strip():
            lines.append(line)
    return "".join(lines)


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def exists(path: Path) -> bool:
    return path.exists()


def bridge_check(path: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "bridge", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest.mark.parametrize("venue", ["aquanow", "satori"])
async def test_the_printed_block_is_what_bridge_run_needs(
    kafka: KafkaEndpoint, tmp_path: Path, venue: str
) -> None:
    simulate = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bridge", "simulate", venue, "--rate", "20"),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        block = yaml.safe_load(await printed_block(simulate))
        (stream,) = block["streams"]
        secret = Path(stream["api_secret_file" if venue == "aquanow" else "private_key_file"])
        assert file_mode(secret) == 0o600
        assert stream["url"].startswith("ws://127.0.0.1:")
        assert stream["rest_url"].startswith("http://127.0.0.1:")

        config: dict[str, Any] = {
            "kafka": {"bootstrap_servers": kafka.bootstrap_servers, "topics": unique_topics()},
            **block,
        }
        check = bridge_check(tmp_path / "check.yaml", config)
        assert check.returncode == 0, check.stderr
        assert f"{stream['name']:<20} {venue:<8} {stream['url']}" in check.stdout
        assert f"snapshots from {stream['rest_url']}" in check.stdout

        with BridgeProcess(tmp_path, config) as bridge:
            await bridge.wait_ready()
            await bridge.wait_metric("bridge_records_published_total", 3, stream=stream["name"])
            # the REST URL and the secret work too: a snapshot succeeded
            await bridge.wait_metric(
                "bridge_snapshot_last_success_timestamp_seconds", 1, stream=stream["name"]
            )
            assert await bridge.metric("bridge_auth_failures_total") == 0
            assert bridge.stop() == 0, bridge.log_text()[-3000:]
    finally:
        if simulate.returncode is None:
            simulate.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(simulate.wait(), 30)
    assert code == 0
    assert not exists(secret.parent), "the secret file goes with the simulator"
