"""Registry mode's start-up: the few Confluent Schema Registry API calls the bridge makes.

A thin typed client over aiohttp (already the bridge's HTTP stack) rather than a library: the
bridge calls the registry only at start (register or look up each schema version, set the
subject's compatibility) and `bridge tail` fetches writer schemas by id. Every answer is
translated here into `RegistryError` / `IncompatibleSchema`, whose `retriable` flag the app's
start-up loop acts on. The API is Confluent's (`/subjects/…`, `/schemas/ids/…`, `/config/…`);
Apicurio Registry serves the same under `/apis/ccompat/v7`.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote

import aiohttp

from bridge.codec import SchemaStore, SchemaVersion, confluent_prefix
from bridge.errors import IncompatibleSchema, RegistryError
from bridge.logs import get_logger
from bridge.oauth import OidcTokens, StaticToken, TokenError, TokenSource
from bridge.records import PRIVATE_TOPICS
from bridge.sections import Compatibility, SerializationSettings
from bridge.tls import client_context

CONTENT_TYPE: Final = "application/vnd.schemaregistry.v1+json"
# Confluent's error codes (also Apicurio's ccompat API): subject / version / schema not found.
SUBJECT_NOT_FOUND: Final = 40401
SCHEMA_NOT_FOUND: Final = 40403


def subject_for(topic_name: str) -> str:
    """Confluent's default TopicNameStrategy: the value schema of topic T lives under T-value."""
    return f"{topic_name}-value"


class RegistryClient:
    """Async client for the Confluent Schema Registry API (only the calls the bridge needs).

    Auth: HTTP basic (`username`/`password`) or a bearer token (`token`: static or from an
    identity provider, asked before each request so a refreshed one is used). `tls`: a
    context with a private CA and/or a client certificate (mTLS). Proxies come from the
    environment (HTTPS_PROXY, NO_PROXY), as for the venues' websockets."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        token: TokenSource | None = None,
        tls: ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE, **(headers or {})}
        if username:
            basic = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {basic}"
        self._token = token
        self._tls: ssl.SSLContext | bool = tls if tls is not None else True
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, headers=self._headers, trust_env=True
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def register(self, subject: str, schema: str) -> int:
        """Register `schema` under `subject` (idempotent: an already registered schema gets its
        existing id back). 409 means the subject's compatibility rule refused it."""
        path = f"/subjects/{_q(subject)}/versions"
        try:
            body = await self._request("POST", path, {"schema": schema})
        except RegistryError as exc:
            if exc.status == 409:
                raise IncompatibleSchema(subject, _detail(exc)) from None
            raise
        return int(body["id"])

    async def lookup(self, subject: str, schema: str) -> int | None:
        """The id of `schema` if it is registered under `subject`, else None."""
        try:
            body = await self._request("POST", f"/subjects/{_q(subject)}", {"schema": schema})
        except RegistryError as exc:
            if exc.status == 404 and exc.error_code in (SUBJECT_NOT_FOUND, SCHEMA_NOT_FOUND):
                return None
            raise
        return int(body["id"])

    async def schema_by_id(self, schema_id: int) -> str:
        """The schema text a Confluent-framed record names."""
        body = await self._request("GET", f"/schemas/ids/{schema_id}")
        return str(body["schema"])

    async def set_compatibility(self, subject: str, level: Compatibility) -> None:
        await self._request("PUT", f"/config/{_q(subject)}", {"compatibility": level})

    async def compatibility(self, subject: str) -> str | None:
        """The subject's own compatibility level; None when it has none (registry default)."""
        try:
            body = await self._request("GET", f"/config/{_q(subject)}")
        except RegistryError as exc:
            if exc.status == 404:
                return None
            raise
        # GET answers compatibilityLevel (Confluent); some servers answer compatibility.
        level = body.get("compatibilityLevel", body.get("compatibility"))
        return None if level is None else str(level)

    async def is_compatible(self, subject: str, schema: str, version: str = "latest") -> bool:
        path = f"/compatibility/subjects/{_q(subject)}/versions/{_q(version)}"
        body = await self._request("POST", path, {"schema": schema})
        return bool(body["is_compatible"])

    async def subjects(self) -> list[str]:
        return [str(subject) for subject in await self._request("GET", "/subjects")]

    async def versions(self, subject: str) -> list[int]:
        """The subject's version numbers ([] when the subject does not exist)."""
        try:
            body = await self._request("GET", f"/subjects/{_q(subject)}/versions")
        except RegistryError as exc:
            if exc.status == 404 and exc.error_code == SUBJECT_NOT_FOUND:
                return []
            raise
        return [int(v) for v in body]

    async def _request(
        self, method: str, path: str, payload: Mapping[str, Any] | None = None
    ) -> Any:
        if self._session is None:
            raise RuntimeError("use RegistryClient as an async context manager")
        what = f"{method} {self.url}{path}"
        headers = {"Authorization": f"Bearer {await self._bearer()}"} if self._token else None
        try:
            async with self._session.request(
                method,
                self.url + path,
                data=None if payload is None else json.dumps(payload),
                headers=headers,
                ssl=self._tls,
            ) as response:
                text = await response.text()
                status = response.status
        except aiohttp.ClientConnectorCertificateError as exc:
            # A configuration error, not an outage: retrying cannot make the certificate valid.
            raise RegistryError(
                f"schema registry {self.url}: the certificate was not accepted: "
                f"{exc.certificate_error} (serialization.registry_cafile must hold the CA "
                "that signed it)"
            ) from exc
        except aiohttp.ClientSSLError as exc:
            raise RegistryError(
                f"schema registry {self.url}: TLS handshake failed: {exc} (a client "
                "certificate required? serialization.registry_certfile / registry_keyfile)"
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RegistryError(
                f"schema registry unreachable: {what}: {exc!r}", retriable=True
            ) from exc
        body = _json_or_none(text)
        if status >= 400:
            error_code = body.get("error_code") if isinstance(body, dict) else None
            message = body.get("message") if isinstance(body, dict) else None
            raise RegistryError(
                f"{what}: HTTP {status}: {message or text[:500]}",
                status=status,
                error_code=error_code if isinstance(error_code, int) else None,
                retriable=status >= 500 or status in (408, 429),
            )
        if body is None:
            raise RegistryError(f"{what}: HTTP {status} answer is not JSON: {text[:200]!r}")
        return body

    async def _bearer(self) -> str:
        assert self._token is not None
        try:
            return await self._token.token()
        except TokenError as exc:
            raise RegistryError(f"schema registry token: {exc}", retriable=exc.retriable) from exc


def registry_client(settings: SerializationSettings) -> RegistryClient:
    """The client for the configured registry: auth, TLS and headers from `serialization`.
    Raises `ConfigError` (naming the key) when a CA, certificate or key cannot be loaded."""
    s = settings
    assert s.registry_url is not None  # settings validation guarantees it in registry mode
    tls = None
    if s.registry_cafile or s.registry_certfile:
        tls = client_context(
            cafile=s.registry_cafile,
            certfile=s.registry_certfile,
            keyfile=s.registry_keyfile,
            password=s.registry_key_password,
            keys=(
                "serialization.registry_cafile",
                "serialization.registry_certfile",
                "serialization.registry_key_password",
            ),
        )
    token: TokenSource | None = None
    if s.registry_token is not None:
        token = StaticToken(s.registry_token.get_secret_value())
    elif s.registry_oauth is not None:
        token = OidcTokens(s.registry_oauth)
    return RegistryClient(
        s.registry_url,
        username=s.registry_username,
        password=s.registry_password.get_secret_value() if s.registry_password else None,
        timeout=s.registry_timeout,
        token=token,
        tls=tls,
        headers=s.registry_headers,
    )


def _q(part: str) -> str:
    return quote(part, safe="")


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _detail(exc: RegistryError) -> str:
    return str(exc).split(": HTTP 409: ", 1)[-1]


@dataclass(frozen=True, slots=True)
class Registration:
    """Where each schema version lives in the registry: `ids[(topic, version)]`."""

    ids: dict[tuple[str, int], int]
    subjects: dict[str, str]  # logical topic → subject

    def prefix_for(self, sv: SchemaVersion) -> bytes:
        return confluent_prefix(self.ids[sv.topic, sv.version])


async def register_schemas(
    client: RegistryClient,
    store: SchemaStore,
    topic_names: Mapping[str, str],
    *,
    compatibility: Compatibility | None,
    auto_register: bool,
) -> Registration:
    """Make the registry's history of each subject match `schemas/`: set the subject's
    compatibility first (so the registry itself checks every version we add), then register
    v1, v2, … in order (or, with `auto_register` off, only look them up). Raises
    `IncompatibleSchema` naming the subject when the registry refuses a version."""
    log = get_logger(component="registry")
    ids: dict[tuple[str, int], int] = {}
    subjects: dict[str, str] = {}
    for topic in store.topics():
        if topic in PRIVATE_TOPICS:  # the bridge's own state: never a registry subject
            continue
        subject = subject_for(topic_names[topic])
        subjects[topic] = subject
        if compatibility is not None and auto_register:
            await client.set_compatibility(subject, compatibility)
        for sv in store.versions(topic):
            if auto_register:
                try:
                    schema_id = await client.register(subject, sv.text)
                except IncompatibleSchema as exc:
                    what = f"schemas/{topic}/v{sv.version}.avsc"
                    raise IncompatibleSchema(subject, exc.detail, what) from None
            else:
                found = await client.lookup(subject, sv.text)
                if found is None:
                    raise RegistryError(
                        f"subject {subject}: schemas/{topic}/v{sv.version}.avsc is not "
                        "registered, and serialization.auto_register is false"
                    )
                schema_id = found
            ids[topic, sv.version] = schema_id
        newest = store.latest(topic)
        log.info(
            "schemas registered" if auto_register else "schemas found",
            subject=subject,
            versions=len(store.versions(topic)),
            writer_version=newest.version,
            writer_id=ids[topic, newest.version],
        )
    return Registration(ids, subjects)
