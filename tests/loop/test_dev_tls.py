"""The lab's private CA (bridge/dev/tls.py) makes certificates that strict verification accepts:
Python 3.13's default SSL context verifies with VERIFY_X509_STRICT, which refused the first
ones (no authority key identifier). The flag is set here explicitly, so every Python the
package supports checks what 3.13 checks: TLS handshakes over loopback, server and mTLS."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from bridge.dev.tls import CLIENT_CN, PrivateCA

pytestmark = pytest.mark.loop


def strict_client(ca: PrivateCA, *, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.ca))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    if with_cert:
        context.load_cert_chain(
            ca.path("client.crt"), ca.path("client.key"), password=ca.client_key_password
        )
    return context


def server(ca: PrivateCA, *, require_client: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.ca))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_cert_chain(ca.path("server.crt"), ca.path("server.key"))
    context.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_NONE
    return context


@pytest.mark.parametrize("mtls", [False, True], ids=["server-tls", "mtls"])
async def test_strict_verification_accepts_the_private_ca(tmp_path: Path, mtls: bool) -> None:
    ca = PrivateCA(tmp_path / "ca")
    peers: list[object] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peercert"))
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    listener = await asyncio.start_server(
        handle, "127.0.0.1", 0, ssl=server(ca, require_client=mtls)
    )
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        for host in ("127.0.0.1", "localhost"):  # both names the server certificate covers
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                port,
                ssl=strict_client(ca, with_cert=mtls),
                server_hostname=host,
            )
            writer.write(b"ping\n")
            assert await reader.readline() == b"ping\n"
            writer.close()
            await writer.wait_closed()
    if mtls:
        subjects = [dict(x[0] for x in p["subject"]) for p in peers]  # type: ignore[index]
        assert subjects == [{"commonName": CLIENT_CN}] * 2
