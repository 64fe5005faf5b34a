import asyncio, ssl, sys, tempfile, os
import trustme
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from tests.bench.measure import rss_mb
from bridge.connection import limit_tls_read_buffers

async def main(shared: bool, n: int):
    limit_tls_read_buffers(16384)
    ca = trustme.CA()
    tmp = tempfile.mkdtemp(); ca.cert_pem.write_to_path(f"{tmp}/ca.pem")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH); ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    def client_ctx():
        c = ssl.create_default_context(); c.load_verify_locations(f"{tmp}/ca.pem"); return c
    async def handler(ws):
        await ws.wait_closed()
    async with serve(handler, "127.0.0.1", 0, ssl=server_ctx) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        before = rss_mb(os.getpid())
        one = client_ctx()
        conns = [await connect(f"wss://127.0.0.1:{port}/", ssl=one if shared else client_ctx()) for _ in range(n)]
        after = rss_mb(os.getpid())
        print("shared" if shared else "per-connection", "context (system CA store):", round((after-before)*1024/n), "KiB per connection (client+server)")
        for c in conns: await c.close()
asyncio.run(main(sys.argv[1] == "shared", 200))
