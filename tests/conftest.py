"""Shared fixtures: one real Kafka broker and one real schema registry per test session.

The broker comes from ``bridge.dev.kafka.kafka_bootstrap()`` (``KAFKA_BOOTSTRAP_SERVERS``, else
Docker via testcontainers, else a local broker from Maven Central jars); the registry from
``bridge.dev.registry.registry_endpoint()`` (``SCHEMA_REGISTRY_URL``, else Apicurio Registry
from Maven Central). Either one that cannot be had is an error, never a skip: CI must not go
green without having talked to them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
import structlog
from confluent_kafka.schema_registry import SchemaRegistryClient
from hypothesis import settings

from bridge.dev.kafka import KafkaEndpoint, kafka_bootstrap
from bridge.dev.registry import RegistryEndpoint, registry_endpoint

# `make test` draws the same property examples every run, so CI cannot fail on a draw it never
# saw before; `make fuzz` (BRIDGE_FUZZ_RANDOM=1) explores new ones and prints how to replay them.
settings.register_profile("suite", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile("explore" if os.environ.get("BRIDGE_FUZZ_RANDOM") else "suite")

_BROKER_LOG_TAIL = pytest.StashKey[str]()
_REGISTRY_LOG_TAIL = pytest.StashKey[str]()
_TAIL_LINES = 80


@pytest.fixture(scope="session")
def kafka(request: pytest.FixtureRequest) -> Iterator[KafkaEndpoint]:
    """The session's broker; ``.bootstrap_servers``, ``.kind``, and ``.local`` for local ones."""
    with kafka_bootstrap() as endpoint:
        yield endpoint
        # Grab the log before the broker's temp dir is deleted; printed in the summary below.
        if request.session.testsfailed:
            request.config.stash[_BROKER_LOG_TAIL] = (
                f"{endpoint.kind} broker at {endpoint.bootstrap_servers}\n"
                f"{endpoint.log_tail(_TAIL_LINES)}"
            )


@pytest.fixture(scope="session")
def registry(request: pytest.FixtureRequest) -> Iterator[RegistryEndpoint]:
    """The session's schema registry; ``.url`` is its Confluent-API base URL."""
    with registry_endpoint() as endpoint:
        yield endpoint
        if request.session.testsfailed:
            request.config.stash[_REGISTRY_LOG_TAIL] = (
                f"{endpoint.kind} registry at {endpoint.url}\n{endpoint.log_tail(_TAIL_LINES)}"
            )


# Every test says which layer it belongs to, so that `-m <layer>` selects everything it should.
LAYERS = ("unit", "loop", "integration", "e2e", "tools", "image")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to run a test that carries no layer marker, or more than one."""
    wrong = [
        f"{item.nodeid} ({', '.join(layers) or 'no layer marker'})"
        for item in items
        if len(layers := [m for m in LAYERS if item.get_closest_marker(m)]) != 1
    ]
    if wrong:
        raise pytest.UsageError(f"each test needs exactly one of {LAYERS}: " + "; ".join(wrong))


@pytest.fixture
def confluent_registry(registry: RegistryEndpoint) -> Iterator[SchemaRegistryClient]:
    """Confluent's own registry client (another implementation than the bridge's) on the
    session's registry; closed after the test, so its HTTP connections do not leak."""
    with SchemaRegistryClient({"url": registry.url}) as client:
        yield client


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """Show the broker log tail when a test failed: most Kafka test failures start there."""
    for key, what in ((_BROKER_LOG_TAIL, "kafka broker"), (_REGISTRY_LOG_TAIL, "schema registry")):
        tail = config.stash.get(key, None)
        if tail:
            terminalreporter.write_sep("-", f"{what} log (last {_TAIL_LINES} lines)")
            terminalreporter.write_line(tail)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Tests that call `bridge.logs.configure` bind loggers to a captured stderr: undo it, so
    later tests do not write to a closed capture."""
    handlers = logging.getLogger().handlers[:]
    level = logging.getLogger().level
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = handlers
    logging.getLogger().setLevel(level)
