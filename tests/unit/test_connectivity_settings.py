"""Kafka and registry security settings: the first-day mistakes are refused by `bridge check`
with the key named (review ecosystem §1.2 cases 7-9), file paths resolve against the config
file, secrets stay derived, and the topic table covers every topic."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from bridge.dev.tls import CLIENT_KEY_PASSWORD, PrivateCA
from bridge.errors import ConfigError
from bridge.kafka import KafkaAccess
from bridge.oauth import MskIamTokens
from bridge.sections import AwsMskIamSettings, KafkaSettings, TopicNames
from bridge.settings import load_settings, path_keys, secret_keys
from bridge.topics import CLEANUP_POLICY, plans
from tests.helpers import ROOT

pytestmark = pytest.mark.unit

STREAM = {"name": "a", "venue": "aquanow", "url": "ws://x", "api_key": "k", "api_secret": "s"}


def write(directory: Path, kafka: dict[str, Any], **more: Any) -> Path:
    path = directory / "bridge.yaml"
    path.write_text(yaml.safe_dump({"kafka": kafka, "streams": [STREAM], **more}))
    return path


def refused(directory: Path, kafka: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(directory, kafka))
    return str(caught.value)


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        # §1.2 case 8: SASL_SSL without a mechanism or credentials.
        (
            {"security_protocol": "SASL_SSL"},
            "kafka.sasl_mechanism: required with security_protocol SASL_SSL",
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"},
            "kafka.sasl_username: required with sasl_mechanism SCRAM-SHA-512",
        ),
        # §1.2 case 9: SASL settings under PLAINTEXT were silently ignored.
        (
            {"sasl_mechanism": "SCRAM-SHA-512"},
            "kafka.sasl_mechanism: SASL settings need security_protocol SASL_SSL or "
            "SASL_PLAINTEXT (it is PLAINTEXT)",
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"},
            "kafka.oauth: required with sasl_mechanism OAUTHBEARER",
        ),
        (
            {"ssl_cafile": "/etc/hostname"},
            "kafka.ssl_cafile: TLS settings need security_protocol SSL or SASL_SSL",
        ),
        (
            {"security_protocol": "SSL", "ssl_keyfile": "/etc/hostname"},
            "kafka.ssl_certfile: required with ssl_keyfile",
        ),
    ],
)
def test_inconsistent_security_is_refused_naming_the_key(
    tmp_path: Path, kafka: dict[str, Any], message: str
) -> None:
    assert message in refused(tmp_path, kafka)


def test_paths_resolve_against_the_config_file_and_must_be_readable(tmp_path: Path) -> None:
    """§1.2 case 7: `ssl_cafile: ca.pem` next to bridge.yaml, the bridge run from elsewhere."""
    PrivateCA(tmp_path)
    kafka = {"security_protocol": "SSL", "ssl_cafile": "ca.pem"}
    settings = load_settings(write(tmp_path, kafka))
    assert settings.kafka.ssl_cafile == tmp_path / "ca.pem"
    assert KafkaAccess(settings.kafka).options["ssl_context"] is not None
    missing = refused(tmp_path, {"security_protocol": "SSL", "ssl_cafile": "nope.pem"})
    assert f"kafka.ssl_cafile: cannot read {tmp_path / 'nope.pem'}" in missing


def test_a_wrong_key_password_is_a_config_error_naming_the_keys(tmp_path: Path) -> None:
    PrivateCA(tmp_path)
    kafka = {
        "security_protocol": "SSL",
        "ssl_cafile": "ca.pem",
        "ssl_certfile": "client.crt",
        "ssl_keyfile": "client.key",
        "ssl_key_password": "not-it",
    }
    settings = load_settings(write(tmp_path, kafka))
    with pytest.raises(ConfigError, match=r"kafka\.ssl_certfile: cannot load .*ssl_key_password"):
        KafkaAccess(settings.kafka)
    right = load_settings(write(tmp_path, kafka | {"ssl_key_password": CLIENT_KEY_PASSWORD}))
    KafkaAccess(right.kafka)


def test_bridge_check_exits_2_on_a_missing_ca(tmp_path: Path) -> None:
    config = write(tmp_path, {"security_protocol": "SASL_SSL", "ssl_cafile": "ca.pem"})
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 2
    assert "kafka.ssl_cafile: cannot read" in result.stderr


def test_new_secrets_and_paths_are_derived() -> None:
    assert {"ssl_key_password", "client_secret", "registry_token"} <= secret_keys()
    assert {"registry_key_password"} <= secret_keys()
    assert {"ssl_cafile", "ssl_certfile", "ssl_keyfile", "registry_cafile", "cafile"} <= (
        path_keys()
    )


def test_registry_auth_is_one_of_basic_token_oauth(tmp_path: Path) -> None:
    serialization = {
        "mode": "registry",
        "registry_url": "https://r",
        "registry_username": "u",
        "registry_token": "t",
    }
    with pytest.raises(ConfigError, match=r"serialization\.registry_token: give one registry auth"):
        load_settings(write(tmp_path, {}, serialization=serialization))


def test_every_topic_has_a_cleanup_policy() -> None:
    assert set(CLEANUP_POLICY) == set(TopicNames.model_fields)
    made = {
        p.logical: p.configs
        for p in plans(
            KafkaSettings(
                new_topics={
                    "min_insync_replicas": 2,
                    "configs": {"all": {"compression.type": "zstd"}, "trades": {"x": "1"}},
                }
            )
        )
    }
    assert made["balances"] == {
        "cleanup.policy": "compact",
        "min.insync.replicas": "2",
        "compression.type": "zstd",
    }
    assert made["trades"]["cleanup.policy"] == "delete"
    assert made["trades"]["x"] == "1"


# -- AWS MSK IAM: the token AWS's signer makes, and our refresh ------------------------------


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Static credentials in the environment: botocore signs locally, no AWS call."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE12")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret-not-real")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


async def test_msk_iam_token_is_a_sigv4_presigned_connect_url(aws_credentials: None) -> None:
    tokens = MskIamTokens(AwsMskIamSettings(provider="aws_msk_iam", region="eu-west-1"))
    token = await tokens.token()
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert parts.scheme == "https"
    assert parts.hostname == "kafka.eu-west-1.amazonaws.com"
    assert query["Action"] == "kafka-cluster:Connect"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Credential"].startswith("AKIAEXAMPLEEXAMPLE12/")
    assert query["X-Amz-Credential"].endswith("/eu-west-1/kafka-cluster/aws4_request")
    assert query["X-Amz-Expires"] == "900"
    assert len(query["X-Amz-Signature"]) == 64
    assert "example-secret-not-real" not in url


async def test_msk_iam_token_is_reused_then_refreshed_before_expiry() -> None:
    now = [1000.0]
    made: list[str] = []

    def generate() -> tuple[str, int]:
        made.append(f"token-{len(made)}")
        return made[-1], int((now[0] + 900) * 1000)  # AWS: 15 minutes, epoch ms

    tokens = MskIamTokens(
        AwsMskIamSettings(provider="aws_msk_iam", region="us-east-1"),
        clock=lambda: now[0],
        wall_clock=lambda: now[0],
        generate=generate,
    )
    assert await tokens.token() == "token-0"
    now[0] += 700  # < 80 % of 900 s
    assert await tokens.token() == "token-0"
    now[0] += 30  # 730 s > 720 s: refreshed while the old one is still valid
    assert await tokens.token() == "token-1"
    assert tokens.fetches == 2
