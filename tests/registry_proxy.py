"""A TLS front for the dev schema registry, checking auth as managed registries do.

Serves HTTPS with a certificate from a private CA (`bridge.dev.tls`) and forwards every
request to the real registry behind it once the caller passed the chosen check: HTTP basic
auth, a bearer token (one of `tokens`, e.g. those a test token endpoint issued), or a client
certificate signed by the same CA (mTLS). Refusals answer 401 like Confluent's.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable
from typing import Literal

import aiohttp
from aiohttp import web

from bridge.dev.tls import PrivateCA

Auth = Literal["basic", "bearer", "mtls"]
USER, PASSWORD = "registry-user", "registry-password-not-real"


class RegistryProxy:
    def __init__(
        self,
        upstream: str,
        ca: PrivateCA,
        auth: Auth,
        tokens: Callable[[], list[str]] = list,
    ) -> None:
        self._upstream = upstream.rstrip("/")
        self._ca = ca
        self._auth = auth
        self._tokens = tokens
        self._runner: web.AppRunner | None = None
        self.seen: list[str] = []  # the auth scheme of each forwarded request
        self.url = ""

    async def __aenter__(self) -> RegistryProxy:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self._ca.path("server.crt"), self._ca.path("server.key"))
        if self._auth == "mtls":
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self._ca.ca)
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context).start()
        self.url = f"https://127.0.0.1:{self._runner.addresses[0][1]}"
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._session.close()
        assert self._runner is not None
        await self._runner.cleanup()

    def _allowed(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if self._auth == "basic":
            expected = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            return header == f"Basic {expected}"
        if self._auth == "bearer":
            return header.removeprefix("Bearer ") in self._tokens()
        return request.transport is not None and bool(request.transport.get_extra_info("peercert"))

    async def _forward(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            return web.json_response({"error_code": 401, "message": "Unauthorized"}, status=401)
        self.seen.append(request.headers.get("Authorization", "cert").split(" ")[0])
        async with self._session.request(
            request.method,
            self._upstream + request.rel_url.path_qs,
            data=await request.read(),
            headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
        ) as answer:
            body = await answer.read()
            return web.Response(body=body, status=answer.status, content_type="application/json")
