"""The registry client against the dev registry behind a TLS front with a private CA (as a
self-hosted or managed registry is): basic auth, a static bearer token, bearer tokens from an
identity provider, and mTLS each register the bridge's schemas; an untrusted certificate is
a configuration error naming the URL and the verification failure, never retried."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from bridge.codec import SchemaStore
from bridge.dev.registry import RegistryEndpoint
from bridge.dev.tls import CLIENT_KEY_PASSWORD, PrivateCA
from bridge.errors import RegistryError
from bridge.records import PRIVATE_TOPICS
from bridge.registry import register_schemas, registry_client
from bridge.sections import SerializationSettings
from tests.oidc import CLIENT_ID, CLIENT_SECRET, TokenEndpoint
from tests.registry_proxy import PASSWORD, USER, RegistryProxy

pytestmark = pytest.mark.integration

STORE = SchemaStore.load()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    return PrivateCA(tmp_path_factory.mktemp("registry-ca"))


async def register(settings: dict[str, Any]) -> dict[tuple[str, int], int]:
    prefix = uuid.uuid4().hex[:8]
    topics = {t: f"{prefix}.{t}" for t in STORE.topics()}
    ser = SerializationSettings(mode="registry", **settings)
    async with registry_client(ser) as client:
        registration = await register_schemas(
            client, STORE, topics, compatibility="FULL", auto_register=True
        )
    return registration.ids


async def test_basic_auth_through_a_private_ca(registry: RegistryEndpoint, ca: PrivateCA) -> None:
    async with RegistryProxy(registry.url, ca, "basic") as proxy:
        ids = await register(
            {
                "registry_url": proxy.url,
                "registry_username": USER,
                "registry_password": PASSWORD,
                "registry_cafile": ca.ca,
            }
        )
    public = [t for t in STORE.topics() if t not in PRIVATE_TOPICS]
    assert len(ids) == sum(len(STORE.versions(t)) for t in public)
    assert set(proxy.seen) == {"Basic"}


async def test_a_static_bearer_token(registry: RegistryEndpoint, ca: PrivateCA) -> None:
    async with RegistryProxy(registry.url, ca, "bearer", tokens=lambda: ["static-token"]) as proxy:
        await register(
            {"registry_url": proxy.url, "registry_token": "static-token", "registry_cafile": ca.ca}
        )
    assert set(proxy.seen) == {"Bearer"}


async def test_bearer_tokens_from_an_identity_provider(
    registry: RegistryEndpoint, ca: PrivateCA
) -> None:
    async with (
        TokenEndpoint() as idp,
        RegistryProxy(registry.url, ca, "bearer", tokens=lambda: idp.issued) as proxy,
    ):
        oauth = {"token_endpoint": idp.url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        await register(
            {
                "registry_url": proxy.url,
                "registry_oauth": oauth,
                "registry_cafile": ca.ca,
                "registry_headers": {"target-sr-cluster": "lsrc-test"},
            }
        )
    assert len(idp.issued) == 1  # one token, reused for every request
    assert set(proxy.seen) == {"Bearer"}


async def test_mtls(registry: RegistryEndpoint, ca: PrivateCA) -> None:
    async with RegistryProxy(registry.url, ca, "mtls") as proxy:
        await register(
            {
                "registry_url": proxy.url,
                "registry_cafile": ca.ca,
                "registry_certfile": ca.path("client.crt"),
                "registry_keyfile": ca.path("client.key"),
                "registry_key_password": CLIENT_KEY_PASSWORD,
            }
        )
        assert set(proxy.seen) == {"cert"}
        forwarded = len(proxy.seen)
        # Without the certificate the server resets the connection after the handshake: to
        # the client that is indistinguishable from a network fault, so it stays retriable.
        # aiohttp words it "Connection reset" on 3.11/3.12, "Server disconnected" on 3.13.
        with pytest.raises(RegistryError, match=r"Connection reset|Server disconnected"):
            await register({"registry_url": proxy.url, "registry_cafile": ca.ca})
        assert len(proxy.seen) == forwarded


async def test_an_untrusted_certificate_is_a_config_error(
    registry: RegistryEndpoint, ca: PrivateCA, tmp_path: Path
) -> None:
    async with RegistryProxy(registry.url, ca, "basic") as proxy:
        with pytest.raises(RegistryError) as caught:
            await register(
                {
                    "registry_url": proxy.url,
                    "registry_username": USER,
                    "registry_password": PASSWORD,
                }
            )
    assert not caught.value.retriable
    assert proxy.url in str(caught.value)
    assert "certificate" in str(caught.value)
    assert "registry_cafile" in str(caught.value)
