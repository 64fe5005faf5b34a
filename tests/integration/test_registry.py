"""The registry client and start-up registration against a real schema registry (Apicurio's
Confluent-compatible API, or `SCHEMA_REGISTRY_URL`), cross-checked with Confluent's own client.

Each test uses its own subjects (a unique topic prefix) so tests sharing the session's registry
never see each other.
"""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from bridge.codec import SchemaStore
from bridge.dev.registry import (
    CCOMPAT_PATH,
    DevRegistryError,
    LocalRegistry,
    RegistryEndpoint,
    registry_endpoint,
)
from bridge.errors import IncompatibleSchema, RegistryError
from bridge.records import PRIVATE_TOPICS
from bridge.registry import RegistryClient, register_schemas, subject_for
from tests.helpers import BRIDGE_TOPICS, free_port

pytestmark = pytest.mark.integration

RECORD = {"type": "record", "name": "Thing", "namespace": "test", "fields": []}


def _schema(*fields: dict[str, object]) -> str:
    return json.dumps({**RECORD, "fields": list(fields)})


V1 = _schema({"name": "id", "type": "long"})
V2_OPTIONAL = _schema(
    {"name": "id", "type": "long"}, {"name": "note", "type": ["null", "string"], "default": None}
)
V2_REQUIRED = _schema({"name": "id", "type": "long"}, {"name": "note", "type": "string"})


def _topics() -> dict[str, str]:
    prefix = uuid.uuid4().hex[:8]
    return {t: f"r{prefix}.{t}" for t in BRIDGE_TOPICS}


async def test_register_lookup_and_fetch_by_id(registry: RegistryEndpoint) -> None:
    subject = f"s{uuid.uuid4().hex[:8]}-value"
    async with RegistryClient(registry.url) as client:
        assert await client.lookup(subject, V1) is None  # no such subject yet
        assert await client.versions(subject) == []
        first = await client.register(subject, V1)
        assert await client.register(subject, V1) == first  # idempotent
        assert await client.lookup(subject, V1) == first
        assert await client.lookup(subject, V2_OPTIONAL) is None  # subject known, schema not
        assert json.loads(await client.schema_by_id(first)) == json.loads(V1)
        with pytest.raises(RegistryError) as missing:
            await client.schema_by_id(first + 10_000)
        assert (missing.value.status, missing.value.retriable) == (404, False)


async def test_full_compatibility_refuses_a_breaking_version(registry: RegistryEndpoint) -> None:
    subject = f"s{uuid.uuid4().hex[:8]}-value"
    async with RegistryClient(registry.url) as client:
        await client.set_compatibility(subject, "FULL")
        assert await client.compatibility(subject) == "FULL"
        await client.register(subject, V1)
        assert await client.is_compatible(subject, V2_OPTIONAL)
        assert not await client.is_compatible(subject, V2_REQUIRED)
        with pytest.raises(IncompatibleSchema) as refused:
            await client.register(subject, V2_REQUIRED)
        assert refused.value.subject == subject
        assert not refused.value.retriable
        assert str(refused.value).startswith(f"subject {subject}: the registry refused")
        assert await client.register(subject, V2_OPTIONAL) > 0
        assert await client.versions(subject) == [1, 2]


async def test_start_up_registers_every_version_in_order(
    registry: RegistryEndpoint, confluent_registry: SchemaRegistryClient
) -> None:
    """The registry's history of each subject matches schemas/: v1, v2, … with FULL set."""
    store = SchemaStore.load()
    topics = _topics()
    async with RegistryClient(registry.url) as client:
        registration = await register_schemas(
            client, store, topics, compatibility="FULL", auto_register=True
        )
        again = await register_schemas(
            client, store, topics, compatibility="FULL", auto_register=False
        )
    assert again.ids == registration.ids  # a restart finds the same ids
    # Confluent's own client (a different implementation) sees the same history.
    confluent = confluent_registry
    for topic in store.topics():
        if topic in PRIVATE_TOPICS:  # the bridge's checkpoint: never registered
            assert topic not in registration.subjects
            continue
        subject = subject_for(topics[topic])
        assert registration.subjects[topic] == subject
        assert confluent.get_versions(subject) == [sv.version for sv in store.versions(topic)]
        for sv in store.versions(topic):
            registered = confluent.get_version(subject, sv.version)
            assert registered.schema_id == registration.ids[topic, sv.version]
            assert json.loads(registered.schema.schema_str or "") == json.loads(sv.text)
        newest = store.latest(topic)
        assert registration.prefix_for(newest) == b"\x00" + registration.ids[
            topic, newest.version
        ].to_bytes(4, "big")
    assert len(store.versions("balances")) >= 2, "balances ships a v2: the evolution path"


async def test_every_shipped_version_is_full_compatible_in_the_registry(
    registry: RegistryEndpoint,
) -> None:
    """The registry's own checker agrees with tests/unit/test_evolution.py: each version is
    FULL-compatible with the one before."""
    store = SchemaStore.load()
    async with RegistryClient(registry.url) as client:
        for topic in store.topics():
            subject = f"c{uuid.uuid4().hex[:8]}.{topic}-value"
            await client.set_compatibility(subject, "FULL")
            versions = store.versions(topic)
            await client.register(subject, versions[0].text)
            for sv in versions[1:]:
                assert await client.is_compatible(subject, sv.text), f"{topic} v{sv.version}"
                await client.register(subject, sv.text)


async def test_lookup_only_mode_names_the_missing_version(registry: RegistryEndpoint) -> None:
    store = SchemaStore.load()
    topics = _topics()
    async with RegistryClient(registry.url) as client:
        with pytest.raises(RegistryError, match=r"schemas/balances/v1\.avsc is not registered"):
            await register_schemas(client, store, topics, compatibility="FULL", auto_register=False)
        assert await client.versions(subject_for(topics["balances"])) == []  # nothing written


async def test_an_incompatible_history_is_refused_naming_subject_and_file(
    registry: RegistryEndpoint,
) -> None:
    store = SchemaStore.load()
    topics = _topics()
    subject = subject_for(topics["balances"])
    async with RegistryClient(registry.url) as client:
        await client.set_compatibility(subject, "FULL")
        # Someone else's record under our subject: our Balance cannot be read as it, or back.
        await client.register(subject, V2_REQUIRED)
        with pytest.raises(IncompatibleSchema) as refused:
            await register_schemas(client, store, topics, compatibility="FULL", auto_register=True)
    message = str(refused.value)
    assert message.startswith(
        f"subject {subject}: the registry refused schemas/balances/v1.avsc as incompatible: "
    )
    assert "Incompatible" in message  # the registry's own explanation follows


async def test_unreachable_registry_is_retriable() -> None:
    async with RegistryClient(f"http://127.0.0.1:{free_port()}", timeout=2) as client:
        with pytest.raises(RegistryError) as down:
            await client.versions("x-value")
    assert down.value.retriable
    assert "schema registry unreachable" in str(down.value)


def test_external_registry_that_does_not_answer_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", f"http://127.0.0.1:{free_port()}")
    with (
        pytest.raises(DevRegistryError, match="did not answer GET /subjects within 1s"),
        registry_endpoint(startup_timeout=1),
    ):
        pass


def test_local_registry_starts_answers_and_stops() -> None:
    """A second, private server: started on a free port, answering, gone after close()."""
    server = LocalRegistry(startup_timeout=90)
    with server:
        assert server.startup_seconds is not None
        assert server.url.endswith(CCOMPAT_PATH)
        with urllib.request.urlopen(f"{server.url}/subjects", timeout=5) as response:  # noqa: S310
            assert json.loads(response.read()) == []
        assert "started in" in server.log_tail(400)
        work = server.log_path.parent
    assert not server.is_running
    assert not work.exists()
