"""The bridge's topics: which exist, which may be written, and creating the missing ones.

At start (bridge/app.py) every configured topic must exist and be writable; with
`kafka.create_topics` the missing ones are created, otherwise the bridge exits 2 naming them
and the command that creates them. `bridge topics create|describe` does the same by hand.

The table below is the one place a topic's kind lives: state topics (the last record per key
is the truth) are compacted, facts and dead letters expire by time. A new topic (a control
topic, a checkpoint topic) is one line here and one field in `TopicNames`; a unit test holds
the two lists equal.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import DescribeConfigsRequest

from bridge.errors import KafkaAccessError
from bridge.kafka import KafkaAccess, TopicState
from bridge.kafka_wire import CreateTopics
from bridge.sections import KafkaSettings, TopicNames

CleanupPolicy = Literal["compact", "delete"]
CLEANUP_POLICY: Final[dict[str, CleanupPolicy]] = {
    "balances": "compact",
    "orders": "compact",
    "positions": "compact",
    "credit": "compact",
    "trades": "delete",
    "deadletter": "delete",
    "control": "delete",  # markers and signals: facts about the bridge, not state
    "state": "compact",  # the bridge's checkpoint (bridge/checkpoint.py)
}
TOPIC_ALREADY_EXISTS: Final = 36
_RESOURCE_TOPIC: Final = 2
# What `bridge topics describe` shows of each topic's configuration.
_SHOWN_CONFIGS: Final = ("cleanup.policy", "min.insync.replicas", "retention.ms")


@dataclass(frozen=True, slots=True)
class TopicPlan:
    """How one configured topic is created when missing."""

    logical: str
    name: str
    partitions: int | None  # None: the cluster's default
    replication_factor: int | None
    configs: dict[str, str]


def plans(settings: KafkaSettings) -> list[TopicPlan]:
    """Every configured topic with the settings it is created with."""
    new = settings.new_topics
    out = []
    for logical in TopicNames.model_fields:
        configs: dict[str, str] = {"cleanup.policy": CLEANUP_POLICY[logical]}
        if new.min_insync_replicas is not None:
            configs["min.insync.replicas"] = str(new.min_insync_replicas)
        configs |= new.configs.get("all", {}) | new.configs.get(logical, {})
        name = settings.topics.name(logical)
        partitions = new.state_partitions if logical == "state" else new.partitions
        out.append(TopicPlan(logical, name, partitions, new.replication_factor, configs))
    return out


def create_command(config: Path | None) -> str:
    return f"bridge topics create --config {config}" if config else "bridge topics create"


async def ensure_topics(
    access: KafkaAccess, *, create: bool, config: Path | None = None
) -> list[str]:
    """Check every configured topic; create the missing ones when `create`. Returns the names
    created. Raises `KafkaAccessError` (`topics`, `authorization`, `create`) otherwise."""
    wanted = plans(access.settings)
    states = {s.name: s for s in await access.topics([p.name for p in wanted])}
    refused = [n for n, s in states.items() if s.writable is False]
    if refused:
        raise KafkaAccessError(
            "authorization",
            f"kafka: this principal ({access.describe()}) may not write to "
            f"{', '.join(sorted(refused))}: grant it WRITE and DESCRIBE on them",
        )
    missing = [p for p in wanted if not states[p.name].exists]
    if not missing:
        return []
    if not create:
        names = ", ".join(p.name for p in missing)
        raise KafkaAccessError(
            "topics",
            f"kafka: missing topics: {names}. Create them with `{create_command(config)}`, "
            "or set kafka.create_topics: true",
        )
    created = await create_topics(access, missing)
    await _until_listed(access, created)
    return created


async def _until_listed(access: KafkaAccess, names: list[str]) -> None:
    """CreateTopics answers once the controller has the topics; a broker's metadata lists them
    a moment later. Until it does, the checks that follow at start (the Kafka watch, the
    state topic's partitions) would find them missing (CI saw "topics gone" right after a
    creation). Waits at most `request_timeout_ms`."""
    deadline = time.monotonic() + access.settings.request_timeout_ms / 1000
    while not all(s.exists for s in await access.topics(names)):
        if time.monotonic() > deadline:
            raise KafkaAccessError(
                "create", f"kafka: created {', '.join(names)}, but no broker lists them yet"
            )
        await asyncio.sleep(0.05)


async def create_topics(access: KafkaAccess, missing: list[TopicPlan]) -> list[str]:
    """Create `missing`; a topic someone else created meanwhile counts as created."""
    request = CreateTopics(
        [(p.name, p.partitions, p.replication_factor, p.configs) for p in missing],
        access.settings.request_timeout_ms,
    )
    async with access.connect() as conn:
        try:
            response = await conn.send(request)
        except ValueError as exc:  # an old broker and cluster defaults asked for
            raise KafkaAccessError("create", f"kafka: {exc}") from exc
        except (KafkaError, TimeoutError, OSError) as exc:
            raise access.translate(exc, f"{conn.host}:{conn.port}") from exc
    failures = [
        f"{name}: {message or f'error code {code}'}"
        for name, code, message in response.topic_errors
        if code not in (0, TOPIC_ALREADY_EXISTS)
    ]
    if failures:
        raise KafkaAccessError("create", "kafka refused to create " + "; ".join(failures))
    return [p.name for p in missing]


async def describe(access: KafkaAccess) -> str:
    """`bridge topics describe`: one line per configured topic."""
    wanted = plans(access.settings)
    states = {s.name: s for s in await access.topics([p.name for p in wanted])}
    existing = [p.name for p in wanted if states[p.name].exists]
    configs = await _configs(access, existing) if existing else {}
    rows: list[tuple[str, ...]] = [
        ("topic", "kafka topic", "partitions", "writable", *_SHOWN_CONFIGS)
    ]
    for p in wanted:
        state = states[p.name]
        shown = configs.get(p.name, {})
        rows.append(
            (
                p.logical,
                p.name,
                str(state.partitions) if state.exists else "missing",
                _writable(state),
                *(shown.get(key, "-") for key in _SHOWN_CONFIGS),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _writable(state: TopicState) -> str:
    if state.writable is None:
        return "unknown" if state.exists else "-"
    return "yes" if state.writable else "no"


async def _configs(access: KafkaAccess, names: list[str]) -> dict[str, dict[str, str]]:
    request = DescribeConfigsRequest([(_RESOURCE_TOPIC, n, list(_SHOWN_CONFIGS)) for n in names])
    async with access.connect() as conn:
        try:
            response = await conn.send(request)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise access.translate(exc, f"{conn.host}:{conn.port}") from exc
    out: dict[str, dict[str, str]] = {}
    for resource in response.to_object()["resources"]:
        entries = resource["config_entries"] if resource["error_code"] == 0 else []
        out[resource["resource_name"]] = {
            e["config_names"]: str(e["config_value"]) for e in entries
        }
    return out
