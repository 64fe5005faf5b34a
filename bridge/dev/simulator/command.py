"""`bridge simulate <venue>`: serve one venue simulator on loopback until Ctrl-C, and print the
stream entry `bridge run` needs to reach it.

stdout carries only YAML: comments, then a complete `streams:` block (the real bound websocket
and REST ports, the API key, the secret as a `*_file` path), then a blank line. So
`bridge simulate aquanow > sim.yaml` yields a config `bridge check` accepts, and a program can
read the block up to the first blank line. The secret file is written into a private temporary
directory (0700, the file 0600) and removed when the simulator stops.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bridge.dev.simulator import credentials
from bridge.dev.simulator.base import VenueSimulator


def simulate(args: argparse.Namespace) -> int:
    """Run the simulator `args` describe (the `simulate` options of `bridge.cli`)."""
    secrets = Path(tempfile.mkdtemp(prefix="bridge-simulate-"))  # mode 0700
    try:
        sim, stream, note = _simulator(args, secrets)
        asyncio.run(_serve(sim, stream, note))
    finally:
        shutil.rmtree(secrets, ignore_errors=True)
    return 0


def _simulator(
    args: argparse.Namespace, secrets: Path
) -> tuple[VenueSimulator, dict[str, Any], str | None]:
    """The simulator, its stream entry without the URLs (known once it listens), and a note
    for the reader when the entry needs something the simulator cannot provide."""
    common: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "rest_port": args.rest_port,
        "rate": args.rate,
        "count": args.count,
        "seed": args.seed,
    }
    sim: VenueSimulator
    if args.venue == "aquanow":
        from bridge.dev.simulator.aquanow import AquanowSimulator

        key = args.api_key or credentials.AQUANOW_KEY
        secret = args.api_secret or credentials.AQUANOW_SECRET
        sim = AquanowSimulator(key, secret, legacy=args.legacy, **common)
        stream: dict[str, Any] = {
            "name": "aquanow-sim",
            "venue": "aquanow",
            "api_key": key,
            "api_secret_file": str(_secret_file(secrets / "aquanow-api-secret", secret)),
            "channels": ["executionReport"],
        }
        return sim, stream, None

    from bridge.dev.simulator.satori import SatoriSimulator

    key = args.api_key or credentials.SATORI_KEY
    coins, pairs = args.coins.split(","), args.pairs.split(",")
    wallet = args.wallet_address or credentials.SATORI_WALLET
    sim = SatoriSimulator(key, wallet, coins=tuple(coins), pairs=tuple(pairs), **common)
    stream = {"name": "satori-sim", "venue": "satori", "api_key": key}
    note = None
    if wallet.lower() == credentials.SATORI_WALLET.lower():
        path = _secret_file(secrets / "satori-private-key", credentials.SATORI_PRIVATE_KEY)
        stream["private_key_file"] = str(path)
    else:  # the simulator knows only the wallet's address, not its key
        stream["private_key"] = "${SATORI_PRIVATE_KEY}"
        note = f"Set SATORI_PRIVATE_KEY to the private key of {wallet}."
    stream.update(coins=coins, pairs=pairs)
    return sim, stream, note


def _secret_file(path: Path, secret: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secret + "\n")
    return path


def config_block(sim: VenueSimulator, stream: dict[str, Any], note: str | None = None) -> str:
    """The YAML `bridge simulate` prints: comments, the `streams:` block, a blank line."""
    head = {k: stream[k] for k in ("name", "venue")}
    entry = {**head, "url": sim.url, "rest_url": sim.rest_url, **stream}
    lines = [
        f"# {stream['venue']} simulator: websocket {sim.url}, REST {sim.rest_url}",
        "# The stream entry `bridge run` needs for it; Ctrl-C stops the simulator and",
        "# removes the secret file.",
    ]
    if note is not None:
        lines.append(f"# {note}")
    body = yaml.safe_dump({"streams": [entry]}, sort_keys=False, default_flow_style=None)
    return "\n".join(lines) + "\n" + body + "\n"


async def _serve(sim: VenueSimulator, stream: dict[str, Any], note: str | None) -> None:
    """Serve until SIGINT or SIGTERM, then return (so the secret file is removed)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with sim:
        sys.stdout.write(config_block(sim, stream, note))
        sys.stdout.flush()
        await stop.wait()
