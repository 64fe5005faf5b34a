"""Bearer tokens for Kafka's SASL/OAUTHBEARER and the schema registry, fetched ahead of expiry.

Two sources: an OAuth 2.0 client-credentials grant against any identity provider (RFC 6749
§4.4: Confluent Cloud OAuth, Keycloak, Okta, Entra ID, Strimzi `oauth`), and AWS MSK IAM,
whose token is a SigV4-presigned URL made by AWS's own signer package (the optional extra
`bridge[msk-iam]`). A token is reused until 80 % of its lifetime has passed (Kafka's Java
client refreshes at the same point, `sasl.login.refresh.window.factor`), so every new
connection gets a token that is still valid for a while, and the identity provider sees one
request per lifetime, not one per connection.

aiokafka calls `token()` inside its connection code, which only expects Kafka errors:
`KafkaTokenProvider` turns every failure into one (a refused client is an authentication
failure, an unreachable provider a connection error), so a provider outage never kills the
producer's background tasks.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

from bridge.errors import BridgeError
from bridge.sections import AwsMskIamSettings, OAuthSettings, OidcSettings

REFRESH_FACTOR = 0.8  # refresh once this fraction of a token's lifetime has passed
DEFAULT_LIFETIME = 300.0  # seconds, when the provider does not say (`expires_in` missing)


class TokenError(BridgeError):
    """No token: `retriable` when the provider could not be reached or answered 5xx; not when
    it refused the client (bad id or secret, unknown scope): retrying cannot fix that."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


class TokenSource(Protocol):
    async def token(self) -> str: ...


class StaticToken:
    """A token given in the config (`serialization.registry_token`)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def token(self) -> str:
        return self._token


class _Cached:
    """One token at a time, fetched again at `REFRESH_FACTOR` of its lifetime; concurrent
    callers share one fetch."""

    def __init__(self, fetch: Callable[[], Any], clock: Callable[[], float]) -> None:
        self._fetch = fetch  # async () -> (token, lifetime seconds)
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def token(self) -> str:
        async with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                started = self._clock()
                token, lifetime = await self._fetch()
                self.fetches += 1
                self._token, self._refresh_at = token, started + lifetime * REFRESH_FACTOR
            return self._token


class OidcTokens:
    """Client-credentials tokens from `settings.token_endpoint` (client id and secret sent as
    HTTP basic auth, RFC 6749 §2.3.1)."""

    def __init__(self, settings: OidcSettings, clock: Callable[[], float] = time.monotonic):
        self._settings = settings
        self._cache = _Cached(self._fetch, clock)

    @property
    def fetches(self) -> int:
        return self._cache.fetches

    async def token(self) -> str:
        return await self._cache.token()

    async def _fetch(self) -> tuple[str, float]:
        s = self._settings
        form = {"grant_type": "client_credentials"}
        if s.scope:
            form["scope"] = s.scope
        basic = f"{s.client_id}:{s.client_secret.get_secret_value()}".encode()
        headers = {"Authorization": "Basic " + base64.b64encode(basic).decode()}
        tls: ssl.SSLContext | bool = True
        if s.cafile is not None:
            tls = ssl.create_default_context(cafile=str(s.cafile))
        where = f"token endpoint {s.token_endpoint}"
        try:
            async with (
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=s.timeout), trust_env=True
                ) as session,
                session.post(s.token_endpoint, data=form, headers=headers, ssl=tls) as response,
            ):
                status, text = response.status, await response.text()
                body = await response.json(content_type=None) if status == 200 else None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TokenError(f"{where}: TLS verification failed: {exc}", retriable=False) from exc
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise TokenError(f"{where} unreachable: {exc!r}", retriable=True) from exc
        if status != 200:
            # RFC 6749 §5.2: `error` (invalid_client, invalid_scope, …), never a secret.
            raise TokenError(
                f"{where} refused client {s.client_id!r}: HTTP {status}: {text[:300]}",
                retriable=status >= 500 or status == 429,
            )
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise TokenError(f"{where}: answer has no access_token", retriable=True)
        lifetime = body.get("expires_in")
        seconds = float(lifetime) if isinstance(lifetime, int | float) else DEFAULT_LIFETIME
        return body["access_token"], seconds


class MskIamTokens:
    """AWS MSK IAM tokens from `aws-msk-iam-sasl-signer-python` (botocore's credential chain;
    run in a thread: it may call STS or the instance metadata service)."""

    def __init__(
        self,
        settings: AwsMskIamSettings,
        clock: Callable[[], float] = time.monotonic,
        generate: Callable[[], tuple[str, int]] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._generate = generate or self._signer()
        self._wall_clock = wall_clock
        self._cache = _Cached(self._fetch, clock)

    @property
    def fetches(self) -> int:
        return self._cache.fetches

    async def token(self) -> str:
        return await self._cache.token()

    def _signer(self) -> Callable[[], tuple[str, int]]:
        try:
            from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
        except ModuleNotFoundError as exc:
            raise TokenError(
                "kafka.oauth.provider aws_msk_iam needs the msk-iam extra: "
                "pip install 'bridge[msk-iam]' (aws-msk-iam-sasl-signer-python)",
                retriable=False,
            ) from exc
        s = self._settings
        if s.role_arn:
            return lambda: MSKAuthTokenProvider.generate_auth_token_from_role_arn(
                s.region, s.role_arn
            )
        if s.profile:
            return lambda: MSKAuthTokenProvider.generate_auth_token_from_profile(
                s.region, s.profile
            )
        return lambda: MSKAuthTokenProvider.generate_auth_token(s.region)

    async def _fetch(self) -> tuple[str, float]:
        try:
            token, expiry_ms = await asyncio.get_running_loop().run_in_executor(
                None, self._generate
            )
        except Exception as exc:  # botocore: no credentials, STS refused, IMDS unreachable
            raise TokenError(f"AWS MSK IAM token: {exc}", retriable=True) from exc
        return token, max(expiry_ms / 1000 - self._wall_clock(), 1.0)


def token_source(settings: OAuthSettings) -> TokenSource:
    if isinstance(settings, OidcSettings):
        return OidcTokens(settings)
    return MskIamTokens(settings)


class KafkaTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """aiokafka's OAUTHBEARER hook over a `TokenSource`, with the SASL extensions."""

    def __init__(self, source: TokenSource, extensions: dict[str, str] | None = None) -> None:
        self._source = source
        self._extensions = dict(extensions or {})

    async def token(self) -> str:
        try:
            return await self._source.token()
        except TokenError as exc:
            if exc.retriable:
                raise KafkaConnectionError(str(exc)) from exc
            raise SaslAuthenticationFailed(str(exc)) from exc

    def extensions(self) -> dict[str, str]:
        return dict(self._extensions)
