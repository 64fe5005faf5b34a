"""The bridge against a real broker's secured listeners (bridge.dev.kafka.secured: SASL_SSL with
SCRAM and PLAIN, SSL with required client certificates, SASL_SSL with OAUTHBEARER, SASL_PLAINTEXT
with SCRAM-256; a private CA made at test time; auto-create off as on Confluent Cloud and MSK).

Each README platform row is one case of `test_a_record_through_each_platform_setup`: its config
file (file paths relative to it, as in a Kubernetes mount), a record published by the bridge's
own sink and read back with the same settings. Then the first-day mistakes, through the real
`bridge` command: a wrong password and missing topics exit 2 naming the cause; `bridge topics
create` creates them with the configured cleanup policy and partitions (read back with the admin
client); a topic deleted under a running sink never escapes as an exception.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from bridge.codec import Codec, SchemaStore
from bridge.dev.kafka.secured import PASSWORD, USER, SecuredKafka
from bridge.dev.tls import CLIENT_KEY_PASSWORD
from bridge.kafka import KafkaAccess
from bridge.kafka_check import KafkaWatch
from bridge.metrics import Metrics
from bridge.settings import KafkaSettings, TopicNames, load_reader_settings
from bridge.sink import Sink
from bridge.topics import ensure_topics
from tests.helpers import ROOT, wait_until
from tests.oidc import CLIENT_ID, CLIENT_SECRET, TokenEndpoint
from tests.records import live_balance, order

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secured() -> Iterator[SecuredKafka]:
    """One broker with every listener, for the whole module."""
    with SecuredKafka() as broker:
        yield broker


def topic_names(prefix: str) -> dict[str, str]:
    return {t: f"{prefix}.{t}" for t in TopicNames.model_fields}


def mount(broker: SecuredKafka, directory: Path) -> None:
    """The CA, client certificate and key next to the config, as a Secret mount has them."""
    for name in ("ca.pem", "client.crt", "client.key"):
        shutil.copy(broker.certificates.path(name), directory / name)
    (directory / "kafka-password").write_text(PASSWORD + "\n")
    (directory / "key-password").write_text(CLIENT_KEY_PASSWORD)
    (directory / "oidc-secret").write_text(CLIENT_SECRET)


# The README's platform table, one block each (host, port and file names as in a mount).
PLATFORMS: dict[str, tuple[str, dict[str, Any]]] = {
    "confluent-cloud-api-key": (
        "SCRAM",
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "PLAIN",
            "sasl_username": USER,
            "sasl_password_file": "kafka-password",
            "ssl_cafile": "ca.pem",  # Confluent Cloud: leave out (public CA)
        },
    ),
    "msk-scram": (
        "SCRAM",
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": USER,
            "sasl_password_file": "kafka-password",
            "ssl_cafile": "ca.pem",
        },
    ),
    "strimzi-scram": (
        "SCRAM",
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": USER,
            "sasl_password_file": "kafka-password",
            "ssl_cafile": "ca.pem",
        },
    ),
    "redpanda-scram": (
        "SASLPLAIN",
        {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": USER,
            "sasl_password_file": "kafka-password",
        },
    ),
    "strimzi-tls": (
        "MTLS",
        {
            "security_protocol": "SSL",
            "ssl_cafile": "ca.pem",
            "ssl_certfile": "client.crt",
            "ssl_keyfile": "client.key",
            "ssl_key_password_file": "key-password",
        },
    ),
    "self-hosted-mtls": (
        "MTLS",
        {
            "security_protocol": "SSL",
            "ssl_cafile": "ca.pem",
            "ssl_certfile": "client.crt",
            "ssl_keyfile": "client.key",
            "ssl_key_password_file": "key-password",
        },
    ),
    "confluent-cloud-oauth": (
        "OAUTH",
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "OAUTHBEARER",
            "ssl_cafile": "ca.pem",
            "oauth": {
                "provider": "oidc",
                "token_endpoint": "{token_endpoint}",
                "client_id": CLIENT_ID,
                "client_secret_file": "oidc-secret",
                "scope": "kafka",
                "extensions": {"logicalCluster": "lkc-test", "identityPoolId": "pool-test"},
            },
        },
    ),
}


def write_config(directory: Path, kafka: dict[str, Any]) -> Path:
    path = directory / "bridge.yaml"
    path.write_text(yaml.safe_dump({"kafka": kafka}))
    return path


async def publish_one(settings: KafkaSettings) -> None:
    sink = Sink(settings, Codec(SchemaStore.load()), Metrics())
    await sink.start()
    try:
        await sink.publish(live_balance("USD", "1.5"))
        assert await sink.flush(30)
    finally:
        await sink.stop(10)


async def read_back(settings: KafkaSettings, topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **KafkaAccess(settings).consumer_options(),
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=10_000)
        return [m.key for records in batches.values() for m in records if m.key is not None]
    finally:
        await consumer.stop()


@pytest.mark.parametrize("platform", list(PLATFORMS))
async def test_a_record_through_each_platform_setup(
    secured: SecuredKafka, tmp_path: Path, platform: str
) -> None:
    listener, block = PLATFORMS[platform]
    mount(secured, tmp_path)
    topics = topic_names(f"{platform}.{uuid.uuid4().hex[:6]}")
    async with TokenEndpoint() as idp:
        kafka = yaml.safe_load(yaml.safe_dump(block).replace("{token_endpoint}", idp.url))
        kafka |= {"bootstrap_servers": secured.address(listener), "topics": topics}
        config = write_config(tmp_path, {**kafka, "create_topics": True})
        settings = load_reader_settings(config).kafka  # paths resolved against bridge.yaml
        assert settings.ssl_cafile is None or settings.ssl_cafile.parent == tmp_path
        created = await ensure_topics(KafkaAccess(settings), create=True)
        assert sorted(created) == sorted(topics.values())
        await publish_one(settings)
        keys = await read_back(settings, topics["balances"])
        if platform == "confluent-cloud-oauth":
            assert idp.requests
            assert idp.requests[0]["scope"] == "kafka"
    assert keys == [live_balance("USD", "1.5").key().encode()]


def run_bridge(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def bridge_config(directory: Path, kafka: dict[str, Any]) -> Path:
    streams = [
        {"name": "aq", "venue": "aquanow", "url": "ws://127.0.0.1:9/", "api_key": "k"}
        | {"api_secret": "s"}
    ]
    path = directory / "bridge.yaml"
    path.write_text(yaml.safe_dump({"kafka": kafka, "streams": streams, "log": {"format": "json"}}))
    return path


def scram(broker: SecuredKafka, password_file: str = "kafka-password") -> dict[str, Any]:
    return {
        "bootstrap_servers": broker.address("SCRAM"),
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": USER,
        "sasl_password_file": password_file,
        "ssl_cafile": "ca.pem",
        "create_topics": True,
    }


def test_a_wrong_password_exits_2_naming_sasl_authentication(
    secured: SecuredKafka, tmp_path: Path
) -> None:
    mount(secured, tmp_path)
    (tmp_path / "wrong-password").write_text("not-the-password")
    config = bridge_config(tmp_path, scram(secured, "wrong-password"))
    result = run_bridge("run", "--config", str(config))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "bridge: kafka error (auth)" in result.stderr
    assert "authentication failed" in result.stderr
    assert "SCRAM-SHA-512 as 'bridge'" in result.stderr
    assert "invalid credentials" in result.stderr  # the broker's own reason
    assert "not-the-password" not in result.stdout + result.stderr


def test_missing_topics_exit_2_naming_them_then_topics_create_makes_them(
    secured: SecuredKafka, tmp_path: Path
) -> None:
    mount(secured, tmp_path)
    topics = topic_names(f"missing.{uuid.uuid4().hex[:6]}")
    kafka = scram(secured) | {
        "topics": topics,
        "create_topics": False,
        "new_topics": {"partitions": 3, "min_insync_replicas": 1},
    }
    config = bridge_config(tmp_path, kafka)
    result = run_bridge("run", "--config", str(config))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "bridge: kafka error (topics)" in result.stderr
    assert all(name in result.stderr for name in topics.values())
    assert f"bridge topics create --config {config}" in result.stderr

    created = run_bridge("topics", "create", "--config", str(config))
    assert created.returncode == 0, created.stderr[-2000:]
    assert "created: " in created.stdout

    found = asyncio.run(admin_view(secured.bootstrap_servers, list(topics.values())))
    policies = {name: policy for name, (_, policy) in found.items()}
    assert {name: partitions for name, (partitions, _) in found.items()} == {
        **dict.fromkeys(topics.values(), 3),
        topics[
            "state"
        ]: 12,  # the checkpoint: one partition per shard (new_topics.state_partitions)
    }
    assert policies == {
        topics["balances"]: "compact",
        topics["orders"]: "compact",
        topics["positions"]: "compact",
        topics["credit"]: "compact",
        topics["trades"]: "delete",
        topics["deadletter"]: "delete",
        topics["control"]: "delete",
        topics["state"]: "compact",
    }


async def admin_view(bootstrap: str, names: list[str]) -> dict[str, tuple[int, str]]:
    """Partitions and cleanup.policy of each topic, as the plain admin client reads them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
        partitions = {t["topic"]: len(t["partitions"]) for t in described}
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, n, {"cleanup.policy": None}) for n in names
        ]
        responses = await admin.describe_configs(resources)
    finally:
        await admin.close()
    policies = {
        resource[3]: entry[1]
        for response in responses
        for resource in response.resources
        for entry in resource[4]
    }
    return {n: (partitions[n], policies[n]) for n in names}


def test_check_connect_reports_each_check(secured: SecuredKafka, tmp_path: Path) -> None:
    mount(secured, tmp_path)
    (tmp_path / "wrong-password").write_text("not-the-password")
    good = bridge_config(tmp_path, scram(secured))
    result = run_bridge("check", "--config", str(good), "--connect")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓ kafka" in result.stdout
    assert "0 of 8 topics (will create" in result.stdout

    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    mount(secured, bad_dir)
    (bad_dir / "kafka-password").write_text("not-the-password")
    bad = bridge_config(bad_dir, scram(secured))
    result = run_bridge("check", "--config", str(bad), "--connect")
    assert result.returncode == 2
    assert "✗ kafka" in result.stdout
    assert "authentication failed" in result.stdout


async def test_a_topic_deleted_under_a_running_sink_holds_its_records(
    secured: SecuredKafka,
) -> None:
    topics = topic_names(f"deleted.{uuid.uuid4().hex[:6]}")
    settings = KafkaSettings(
        bootstrap_servers=secured.bootstrap_servers, topics=topics, request_timeout_ms=2000
    )
    access = KafkaAccess(settings)
    await ensure_topics(access, create=True)
    metrics = Metrics()
    watch = KafkaWatch(access, metrics, interval=3600)
    assert await watch.check_once() is None
    sink = Sink(settings, Codec(SchemaStore.load()), metrics, access=access)
    await sink.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=secured.bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_topics([topics["balances"]])
        # The broker's metadata drops the topic a moment after DeleteTopics answers.
        async with asyncio.timeout(10):
            while (problem := await watch.check_once()) is None:
                await asyncio.sleep(0.1)
        assert problem.problem == "topics"
        assert topics["balances"] in str(problem)
        assert metrics.registry.get_sample_value("bridge_kafka_up") == 0
        # The sink's producer learns it too: on stale metadata the record would be sent, fail
        # with NotLeaderForPartition and take the resend path (the sink pauses meanwhile).
        client = sink._producer.current.client
        async with asyncio.timeout(10):
            while topics["balances"] in client.cluster.topics():
                await client.force_metadata_update()
        # The first send waits for metadata, cannot find the topic, and keeps the record.
        record = live_balance("USD", "1.5")
        labels = {"stream": record.stream, "venue": record.venue, "topic": "balances"}
        publishing = asyncio.create_task(sink.publish(live_balance("USD", "1.5")))
        await wait_until(
            lambda: (
                (metrics.registry.get_sample_value("bridge_publish_errors_total", labels) or 0) >= 1
            ),
            timeout=30,
            what="a publish error for the missing topic",
        )
        assert not publishing.done()
        # Other topics go on meanwhile: an order is taken and acknowledged.
        await asyncio.wait_for(sink.publish(order(stream="s1", order_id="o1", raw="{}")), 10)
        orders = {**labels, "topic": "orders"}
        await wait_until(
            lambda: metrics.registry.get_sample_value("bridge_records_published_total", orders),
            timeout=10,
            what="the order acknowledged while the balances topic is missing",
        )
        assert not publishing.done()
        await ensure_topics(access, create=True)  # the operator recreates it
        await asyncio.wait_for(publishing, 30)
        assert await sink.flush(30)
        assert await watch.check_once() is None
        assert metrics.registry.get_sample_value("bridge_kafka_up") == 1
    finally:
        await admin.close()
        await sink.stop(10)


async def test_the_watch_counts_a_refused_sign_in(secured: SecuredKafka) -> None:
    settings = KafkaSettings(
        bootstrap_servers=secured.address("SCRAM"),
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=USER,
        sasl_password="rotated-away",
        ssl_cafile=secured.ca,
    )
    metrics = Metrics()
    metrics.kafka_up.set(1)
    watch = KafkaWatch(KafkaAccess(settings), metrics, interval=3600)
    problem = await watch.check_once()
    assert problem is not None
    assert problem.problem == "auth"
    assert metrics.registry.get_sample_value("bridge_kafka_auth_failures_total") == 1
    assert metrics.registry.get_sample_value("bridge_kafka_up") == 0
