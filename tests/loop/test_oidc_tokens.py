"""The OIDC client-credentials token source against a token endpoint on loopback: one request
per token lifetime (refreshed at 80 %), the scope sent, and failures turned into the Kafka
errors aiokafka's connection code expects (a refused client is an authentication failure)."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

from bridge.oauth import KafkaTokenProvider, OidcTokens, TokenError
from bridge.sections import OidcSettings
from tests.helpers import free_port
from tests.oidc import CLIENT_ID, CLIENT_SECRET, TokenEndpoint

pytestmark = pytest.mark.loop


def settings(url: str, secret: str = CLIENT_SECRET) -> OidcSettings:
    return OidcSettings(
        token_endpoint=url, client_id=CLIENT_ID, client_secret=secret, scope="kafka"
    )


async def test_one_request_per_lifetime_refreshed_before_expiry() -> None:
    now = [0.0]
    async with TokenEndpoint(lifetime=100) as idp:
        tokens = OidcTokens(settings(idp.url), clock=lambda: now[0])
        first = await tokens.token()
        now[0] = 79.0
        assert await tokens.token() == first
        now[0] = 81.0  # past 80 % of 100 s
        second = await tokens.token()
    assert idp.issued == [first, second]
    assert [r["scope"] for r in idp.requests] == ["kafka", "kafka"]


async def test_a_refused_client_is_an_authentication_failure_for_kafka() -> None:
    async with TokenEndpoint() as idp:
        tokens = OidcTokens(settings(idp.url, secret="wrong"))
        with pytest.raises(TokenError) as caught:
            await tokens.token()
        assert not caught.value.retriable
        assert "invalid_client" in str(caught.value)
        assert "wrong" not in str(caught.value)
        with pytest.raises(SaslAuthenticationFailed):
            await KafkaTokenProvider(tokens).token()


async def test_an_unreachable_provider_is_a_connection_error_for_kafka() -> None:
    tokens = OidcTokens(settings(f"http://127.0.0.1:{free_port()}/token"))
    with pytest.raises(KafkaConnectionError):
        await KafkaTokenProvider(tokens, {"logicalCluster": "lkc-1"}).token()
