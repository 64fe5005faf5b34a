"""A small OAuth 2.0 token endpoint for tests (client-credentials grant, RFC 6749 §4.4).

It issues unsigned JWTs (`alg: none`), the kind the dev broker's unsecured OAUTHBEARER
validator accepts (it checks `sub`, `iat`, `exp`), refuses wrong client credentials with
RFC 6749's `invalid_client`, and remembers what it issued so a resource server (the registry
proxy) can check a bearer token.
"""

from __future__ import annotations

import base64
import json
import time

from aiohttp import web

CLIENT_ID = "bridge-client"
CLIENT_SECRET = "oidc-secret-not-real"


def unsigned_jwt(subject: str, lifetime: int, scope: str | None = None) -> str:
    def part(document: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims: dict[str, object] = {"sub": subject, "iat": now, "exp": now + lifetime}
    if scope:
        claims["scope"] = scope
    return f"{part({'alg': 'none'})}.{part(claims)}."


class TokenEndpoint:
    """POST /token with HTTP basic client auth; `lifetime` is the tokens' `expires_in`."""

    def __init__(self, lifetime: int = 3600) -> None:
        self.lifetime = lifetime
        self.issued: list[str] = []
        self.requests: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> TokenEndpoint:
        app = web.Application()
        app.router.add_post("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/token"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.requests.append({k: str(v) for k, v in form.items()})
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = unsigned_jwt(CLIENT_ID, self.lifetime, str(form.get("scope") or "") or None)
        self.issued.append(token)
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime}
        )
