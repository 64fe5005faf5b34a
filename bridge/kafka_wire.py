"""Two Kafka request versions aiokafka 0.14 does not define, in its own protocol types.

- Metadata v8 (KIP-430): with `include_topic_authorized_operations` the broker says, per topic,
  which operations this principal may perform, so the start-up check and `bridge check
  --connect` can tell "may not write" without writing anything. aiokafka stops at v5.
- CreateTopics v4 (KIP-464): -1 partitions / replication factor mean the cluster's own
  defaults (num.partitions, default.replication.factor). aiokafka stops at v3, where -1 is
  refused.

Both are the non-flexible versions, identical on the wire to the newest ones aiokafka knows
plus the fields named here (Kafka's `MetadataRequest.json` / `CreateTopicsRequest.json`).
Every broker since 2.4 answers them (Kafka 4 dropped only Metadata v0-v3); a broker that
does not gets the older version aiokafka negotiates, without the new fields.
"""

from __future__ import annotations

from typing import Any, Final

from aiokafka.protocol.admin import (
    CreateTopicsRequest_v3,
    CreateTopicsResponse_v3,
)
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.metadata import MetadataRequest_v5
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Schema, String

# Kafka's AclOperation codes: bit N of `topic_authorized_operations` is operation N.
WRITE: Final = 4
DESCRIBE: Final = 8
# Int32.MinValue: the broker did not report operations (an old broker, or not asked).
NOT_REPORTED: Final = -(2**31)


class MetadataResponse_v8(Response):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            Array(
                ("node_id", Int32),
                ("host", String("utf-8")),
                ("port", Int32),
                ("rack", String("utf-8")),
            ),
        ),
        ("cluster_id", String("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            Array(
                ("error_code", Int16),
                ("topic", String("utf-8")),
                ("is_internal", Boolean),
                (
                    "partitions",
                    Array(
                        ("error_code", Int16),
                        ("partition", Int32),
                        ("leader", Int32),
                        ("leader_epoch", Int32),
                        ("replicas", Array(Int32)),
                        ("isr", Array(Int32)),
                        ("offline_replicas", Array(Int32)),
                    ),
                ),
                ("topic_authorized_operations", Int32),
            ),
        ),
        ("cluster_authorized_operations", Int32),
    )


class MetadataRequest_v8(RequestStruct):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    RESPONSE_TYPE = MetadataResponse_v8
    SCHEMA = Schema(
        *zip(MetadataRequest_v5.SCHEMA.names, MetadataRequest_v5.SCHEMA.fields, strict=True),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
    )


class TopicMetadata(Request[MetadataRequest_v5 | MetadataRequest_v8]):  # type: ignore[misc]
    """Metadata of `topics` without ever creating one (auto-create off for this request), with
    each topic's authorized operations where the broker supports v8."""

    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[Any]) -> Any:
        if request_struct_class.API_VERSION >= 8:
            return request_struct_class(self._topics, False, False, True)
        return request_struct_class(self._topics, False)


class CreateTopicsResponse_v4(Response):  # type: ignore[misc]
    API_KEY = 19
    API_VERSION = 4
    SCHEMA = CreateTopicsResponse_v3.SCHEMA


class CreateTopicsRequest_v4(RequestStruct):  # type: ignore[misc]
    API_KEY = 19
    API_VERSION = 4
    RESPONSE_TYPE = CreateTopicsResponse_v4
    SCHEMA = CreateTopicsRequest_v3.SCHEMA


class CreateTopics(Request[CreateTopicsRequest_v3 | CreateTopicsRequest_v4]):  # type: ignore[misc]
    """CreateTopics; `None` partitions / replication factor = the cluster's default (v4+)."""

    API_KEY = 19

    def __init__(
        self, topics: list[tuple[str, int | None, int | None, dict[str, str]]], timeout_ms: int
    ) -> None:
        self._topics = topics
        self._timeout_ms = timeout_ms

    def build(self, request_struct_class: type[Any]) -> Any:
        defaults_ok = request_struct_class.API_VERSION >= 4
        entries: list[tuple[str, int, int, list[Any], list[tuple[str, str]]]] = []
        for name, partitions, replication, configs in self._topics:
            if not defaults_ok and (partitions is None or replication is None):
                raise ValueError(
                    "this broker cannot create topics with its own defaults (CreateTopics < v4): "
                    "set kafka.new_topics.partitions and replication_factor"
                )
            p = -1 if partitions is None else partitions
            r = -1 if replication is None else replication
            entries.append((name, p, r, [], list(configs.items())))
        return request_struct_class(entries, self._timeout_ms, False)
