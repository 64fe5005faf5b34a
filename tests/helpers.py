"""Test helpers: an independent Avro reader, a Kafka collector, and the bridge as a process.

The reader deliberately uses only `schemas/*.avsc` and fastavro (not the bridge's codec), so
the end-to-end tests check what a real downstream consumer would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, overload

import aiohttp
import fastavro
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from fastavro.schema import fingerprint, to_parsing_canonical_form

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"
LOGICAL_TOPICS = ("balances", "orders", "positions", "trades", "credit", "deadletter")
# The version the bridge writes: the newest file of each topic.
NEWEST_VERSION = {
    t: max(int(p.stem[1:]) for p in (SCHEMAS / t).glob("v*.avsc"))
    for t in (*LOGICAL_TOPICS, "control", "state")
}


def read_record(data: bytes, schema: Any, reader_schema: Any = None) -> dict[str, Any]:
    """One schemaless Avro record (a dict: all our schemas are records)."""
    record = fastavro.schemaless_reader(io.BytesIO(data), schema, reader_schema)
    assert isinstance(record, dict), record
    return record


class AvroReader:
    """Decodes single-object-encoded values using only the repository's .avsc files, and
    Confluent-framed ones with the writer schema fetched from the registry by id (plain HTTP,
    no bridge code), which must be one of the repository's files."""

    def __init__(self, registry_url: str | None = None) -> None:
        self.registry_url = registry_url
        self.by_id: dict[int, tuple[str, int, Any]] = {}
        self.by_fingerprint: dict[bytes, tuple[str, int, Any]] = {}
        for path in SCHEMAS.glob("*/v*.avsc"):
            document = json.loads(path.read_text())
            fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(document), "CRC-64-AVRO"))
            self.by_fingerprint[fp] = (
                path.parent.name,
                int(path.stem[1:]),
                fastavro.parse_schema(document),
            )

    def decode(self, value: bytes) -> tuple[str, int, dict[str, Any]]:
        if self.registry_url is not None:
            assert value[:1] == b"\x00", f"not Confluent framed: {value[:5]!r}"
            topic, version, schema = self.registry_schema(int.from_bytes(value[1:5], "big"))
            return topic, version, read_record(value[5:], schema)
        assert value[:2] == b"\xc3\x01", f"not single-object encoded: {value[:4]!r}"
        topic, version, schema = self.by_fingerprint[value[2:10]]
        return topic, version, read_record(value[10:], schema)

    def registry_schema(self, schema_id: int) -> tuple[str, int, Any]:
        if schema_id not in self.by_id:
            url = f"{self.registry_url}/schemas/ids/{schema_id}"
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
                document = json.loads(json.loads(response.read())["schema"])
            fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(document), "CRC-64-AVRO"))
            topic, version, _ = self.by_fingerprint[fp]  # the registry serves our own files
            self.by_id[schema_id] = (topic, version, fastavro.parse_schema(document))
        return self.by_id[schema_id]


@dataclass
class Message:
    topic: str  # logical topic
    key: str
    headers: dict[str, str]
    record: dict[str, Any]
    schema_version: int
    schema_id: int | None = None  # registry id, for Confluent-framed values
    value: bytes = b""  # the raw Kafka value


# The bridge's other topics: gap markers and signals, and its private checkpoint (never in
# a schema registry: always single-object encoded).
REGISTERED_TOPICS = (*LOGICAL_TOPICS, "control")
BRIDGE_TOPICS = (*REGISTERED_TOPICS, "state")


def unique_topics() -> dict[str, str]:
    """Per-test topic names, so tests sharing the session broker never see each other (the
    checkpoint topic too: a bridge would restore another test's streams of the same name)."""
    suffix = uuid.uuid4().hex[:8]
    return {t: f"t{suffix}.{t}" for t in BRIDGE_TOPICS}


async def collect(
    bootstrap: str,
    topics: dict[str, str],
    done: Callable[[list[Message]], bool],
    timeout: float = 60.0,
    registry_url: str | None = None,
    extra: tuple[str, ...] = (),
) -> list[Message]:
    """Read every data topic (and the `extra` logical topics, e.g. control) from the beginning
    until `done(messages)` or the deadline. With `registry_url`, values must be Confluent
    framed (registry mode)."""
    reader = AvroReader(registry_url)
    logical = {name: t for t, name in topics.items() if t in (*LOGICAL_TOPICS, *extra)}
    consumer = AIOKafkaConsumer(
        *logical,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        metadata_max_age_ms=500,
    )
    await consumer.start()
    messages: list[Message] = []
    try:
        async with asyncio.timeout(timeout):
            while not done(messages):
                batches = await consumer.getmany(timeout_ms=200)
                for tp in sorted(batches, key=lambda tp: tp.topic):
                    for m in batches[tp]:
                        schema_topic, version, record = reader.decode(m.value)
                        topic = logical[m.topic]
                        assert schema_topic == topic, (schema_topic, topic)
                        headers = {k: v.decode() for k, v in m.headers}
                        schema_id = int.from_bytes(m.value[1:5], "big") if registry_url else None
                        messages.append(
                            Message(
                                topic, m.key.decode(), headers, record, version, schema_id, m.value
                            )
                        )
    except TimeoutError:
        counts = {t: sum(1 for m in messages if m.topic == t) for t in LOGICAL_TOPICS}
        raise AssertionError(f"condition not met within {timeout} s; got {counts}") from None
    finally:
        await consumer.stop()
    return messages


T = TypeVar("T")


async def topic_partitions(bootstrap: str, names: list[str]) -> list[TopicPartition]:
    """Every partition of the topics `names`, as the cluster describes them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    return [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]


async def read_to_end(
    bootstrap: str,
    partitions: list[TopicPartition],
    isolation_level: str = "read_uncommitted",
    timeout: float = 60.0,
) -> list[Any]:
    """Every message (aiokafka's ConsumerRecord; a tombstone's value is None) of `partitions`,
    from their beginning to the end offsets they had when reading began (read_committed: the
    last stable offsets). AssertionError when that takes longer than `timeout`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level=isolation_level, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        found: list[Any] = []
        deadline = time.monotonic() + timeout
        left = {tp for tp in partitions if await consumer.position(tp) < end[tp]}
        while left and time.monotonic() < deadline:
            for messages in (await consumer.getmany(*left, timeout_ms=500)).values():
                found += [
                    m for m in messages if m.offset < end[TopicPartition(m.topic, m.partition)]
                ]
            left = {tp for tp in left if await consumer.position(tp) < end[tp]}
        assert not left, f"could not read {sorted(map(str, left))} in {timeout} s"
        return found
    finally:
        await consumer.stop()


@overload
async def wait_until(
    condition: Callable[[], Awaitable[T]],
    what: str,
    timeout: float = 30.0,
    *,
    interval: float = 0.05,
    ignore: tuple[type[BaseException], ...] = (),
    detail: Callable[[], str] | None = None,
) -> T: ...


@overload
async def wait_until(
    condition: Callable[[], T],
    what: str,
    timeout: float = 30.0,
    *,
    interval: float = 0.05,
    ignore: tuple[type[BaseException], ...] = (),
    detail: Callable[[], str] | None = None,
) -> T: ...


async def wait_until(
    condition: Callable[[], Any],
    what: str,
    timeout: float = 30.0,
    *,
    interval: float = 0.05,
    ignore: tuple[type[BaseException], ...] = (),
    detail: Callable[[], str] | None = None,
) -> Any:
    """The tests' one way to wait: call `condition()` (sync or async) until it returns a true
    value, and return that value. An exception of an `ignore` type counts as "not yet" (say,
    a server not listening yet); any other propagates. At the deadline the test fails naming
    `what` was awaited, followed by `detail()` if given (the last value seen, a log tail)."""
    if not isinstance(what, str):  # a timeout passed where the description goes
        raise TypeError(f"wait_until: `what` must say what is awaited, got {what!r}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except ignore:
            pass
        if time.monotonic() >= deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"not within {timeout:g} s: {what}{extra}")
        await asyncio.sleep(interval)


class LoopTurns:
    """`async with LoopTurns() as turns:` counts the event loop's turns while the block runs
    (`turns.count`): a task that yields at every turn. A block that never suspends counts 0."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopTurns:
        self._task = asyncio.create_task(self._turn())
        await asyncio.sleep(0)  # the counter runs from here
        self.count = 0
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _turn(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` in a /metrics text whose labels include `labels` (0 when
    absent). One scrape can serve several figures: each costs the bridge ~1 ms of CPU."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        sample, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in sample for k, v in labels.items()):
            total += float(value)
    return total


class BridgeProcess:
    """`python -m bridge run --config …` as a child process, logs (JSON) kept in a file."""

    def __init__(
        self,
        tmp_path: Path,
        config: dict[str, Any],
        env: dict[str, str] | None = None,
        python_args: tuple[str, ...] = (),
    ):
        self._python_args = python_args  # e.g. a profiler: ("-m", "pyinstrument", ...)
        self.metrics_port = free_port()
        metrics = {**config.get("metrics", {}), "host": "127.0.0.1", "port": self.metrics_port}
        config = {**config, "metrics": metrics}
        # Each test's topics are new: the bridge creates them at start unless a test says not.
        config["kafka"] = {"create_topics": True, **config.get("kafka", {})}
        config.setdefault("log", {"format": "json"})
        self.config_path = tmp_path / "bridge.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = tmp_path / "bridge.log"
        self._env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> BridgeProcess:
        # The child gets its own copy of the file descriptor: ours is closed at once, so no
        # ending (stop(), a test's SIGTERM or SIGKILL) leaves it open (a ResourceWarning).
        with self.log_path.open("wb") as log:
            self.process = self._spawn(log)
        return self

    def _spawn(self, log: BinaryIO) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                *self._python_args,
                "-m",
                "bridge",
                "run",
                "--config",
                str(self.config_path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._env,
            cwd=ROOT,
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{self.metrics_port}{path}"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                return response.status, await response.text()

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
        _, text = await self.get("/metrics")
        return metric_sum(text, name, **labels)

    async def wait_metric(
        self, name: str, at_least: float, timeout: float = 30.0, **labels: str
    ) -> float:
        """Poll /metrics until `name` (summed over matching labels) reaches `at_least`."""
        last = [0.0]

        async def reached() -> bool:
            last[0] = await self.metric(name, **labels)
            return last[0] >= at_least

        await wait_until(
            reached,
            f"{name}{labels} >= {at_least}",
            timeout,
            interval=0.1,
            ignore=(aiohttp.ClientError, TimeoutError),  # not up yet, or busy starting
            detail=lambda: f"last value: {last[0]}",
        )
        return last[0]

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll /readyz until 200; fail at once if the process exits."""

        async def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"bridge exited with {self.process.returncode}:\n{self.log_text()}"
                )
            status, _ = await self.get("/readyz")
            return status == 200

        await wait_until(
            ready,
            "the bridge ready (/readyz 200)",
            timeout,
            interval=0.1,
            ignore=(aiohttp.ClientError, TimeoutError),  # a 5 s answer while starting: not yet
            detail=lambda: self.log_text()[-4000:],
        )

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()

    def __enter__(self) -> BridgeProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
