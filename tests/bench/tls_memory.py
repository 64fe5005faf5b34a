"""Memory of idle wss:// connections, per connection (client and server ends, one process):
with a TLS context per connection (what asyncio does for `ssl=True`: the system CA store
loaded each time) or one shared context, and asyncio's TLS read buffer at its 256 KiB default
or the bridge's 16 KiB, and with permessage-deflate (websockets' default) or without it (the
bridge's default since issue 17 phase 3: `no-deflate`). Each variant runs in a fresh process (the buffer size is
process-wide and freed memory is not given back).

    python -m tests.bench.tls_memory per-connection|shared|shared-small-buffer|no-deflate [N]
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import tempfile
from pathlib import Path
from typing import Any

import trustme
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from bridge.connection import limit_tls_read_buffers
from tests.bench.measure import rss_mb


async def main(variant: str, n: int) -> dict[str, Any]:
    if variant in ("shared-small-buffer", "no-deflate"):
        limit_tls_read_buffers()
    ca = trustme.CA()
    ca_file = Path(tempfile.mkdtemp()) / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)

    def client() -> ssl.SSLContext:
        context = ssl.create_default_context()  # the system CA store, as for a real venue
        context.load_verify_locations(ca_file)
        return context

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:  # an echo: the client's decoder is used too
            await ws.send(message)

    deflate = None if variant == "no-deflate" else "deflate"
    async with serve(handler, "127.0.0.1", 0, ssl=server) as listening:
        port = next(iter(listening.sockets)).getsockname()[1]
        shared = client()
        before = rss_mb(os.getpid())
        connections: list[ClientConnection] = []
        for _ in range(n):
            context = client() if variant == "per-connection" else shared
            ws = await connect(f"wss://127.0.0.1:{port}/", ssl=context, compression=deflate)
            await ws.send('{"action":"subscribe"}')  # a frame each way: what a stream has done
            await ws.recv()
            connections.append(ws)
        kib = (rss_mb(os.getpid()) - before) * 1024 / n
        for ws in connections:
            await ws.close()
    return {"variant": variant, "connections": n, "kib_per_connection_both_ends": round(kib)}


if __name__ == "__main__":
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    print(json.dumps(asyncio.run(main(sys.argv[1], count))))
