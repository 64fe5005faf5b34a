"""Pure: which shard a stream belongs to.

A shard is the unit the bridge's durable state is partitioned by: the checkpoint topic
(`kafka.topics.state`) has one partition per shard, and a stream's checkpoint entries all go to
its shard's partition, so restoring a stream reads one partition, never the others' data. Fleet
mode (issue 14) hands shards to replicas the same way.

Streams that share an API key share a shard: the venue's REST limits are per key, and a replica
that owns a key's streams can share one limiter between them. The shard key is the venue plus a
digest of the key — never the key itself (shard keys appear in logs and partition keys).
"""

from __future__ import annotations

import hashlib


def shard_key(venue: str, credential: str) -> str:
    """`<venue>:<first 16 hex digits of SHA-256(credential)>`: stable across processes and
    versions, the same for every stream of one API key, and reveals nothing of the key."""
    digest = hashlib.sha256(credential.encode("utf-8")).hexdigest()[:16]
    return f"{venue}:{digest}"


def shard_of(key: str, count: int) -> int:
    """The shard (0 … count-1) of a shard key. A stable hash (not Python's `hash`, which is
    salted per process): every process and version agrees."""
    if count < 1:
        raise ValueError(f"shard count must be at least 1, not {count}")
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count
