"""Pure: what a fleet member decides about ownership (bridge/fleet.py does the I/O).

- Which streams belong to which shard (`shard_streams`): a stream's shard is the checkpoint
  topic partition of its shard key (bridge/shards.py), the group's unit of assignment.
- What an assignment changes (`plan`): aiokafka's rebalance protocol is eager — every member
  hears "revoked: everything" before each new assignment — so a member keeps running what it
  had and, once the new assignment is known, stops only the shards it lost and starts only
  the shards it gained.
- The lease (`Lease`): a member whose last successful contact with the group is older than
  the session timeout must assume its shards were given to others and stop its streams.
- The connect budget (`ConnectBudget`): stream starts after a rebalance are spread out per
  venue (a token bucket, jittered), so a membership change is not a reconnect storm.
- Transactional ids (`transactional_id`): stable per group and shard, so the new owner of a
  shard fences the old one.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from bridge.backoff import TokenBucket
from bridge.shards import shard_of


class Sharded(Protocol):
    """A stream as sharding sees it (bridge.sections.StreamBase)."""

    @property
    def name(self) -> str: ...

    def shard_key(self) -> str: ...


S = TypeVar("S", bound=Sharded)


def shard_streams(streams: Iterable[S], shards: int) -> dict[int, list[S]]:
    """Every shard (0 … shards-1, empty ones too) and its streams, in config order."""
    out: dict[int, list[S]] = {shard: [] for shard in range(shards)}
    for stream in streams:
        out[shard_of(stream.shard_key(), shards)].append(stream)
    return out


def transactional_id(group: str, shard: int) -> str:
    """The producer identity of one shard: whoever owns the shard uses it, so a new owner's
    `InitProducerId` fences the previous owner's producer (KIP-98; Kafka Connect's KIP-618)."""
    return f"{group}.shard-{shard}"


@dataclass(frozen=True, slots=True)
class Plan:
    """What an assignment changes: shards to stop, to start, and kept running."""

    stop: frozenset[int]
    start: frozenset[int]
    keep: frozenset[int]


def plan(running: Iterable[int], assigned: Iterable[int]) -> Plan:
    before, after = frozenset(running), frozenset(assigned)
    return Plan(stop=before - after, start=after - before, keep=before & after)


def balanced(assignment: Mapping[str, Sequence[int]]) -> bool:
    """No member holds more than one shard above the mean (the fleet's fairness promise)."""
    if not assignment:
        return True
    counts = [len(shards) for shards in assignment.values()]
    mean = sum(counts) / len(counts)
    return max(counts) <= mean + 1


@dataclass(slots=True)
class Lease:
    """Valid for `timeout` seconds after the last renewal (monotonic seconds)."""

    timeout: float
    renewed: float | None = None

    def renew(self, now: float) -> None:
        self.renewed = now

    def valid(self, now: float) -> bool:
        return self.renewed is not None and now - self.renewed <= self.timeout

    def age(self, now: float) -> float | None:
        return None if self.renewed is None else now - self.renewed


@dataclass
class ConnectBudget:
    """When each stream start may connect: at most `rate` starts a second per venue (bursts of
    `burst`), plus a random delay of up to `jitter` seconds, so many streams moving at once do
    not hit a venue together (a reconnect storm can get an IP banned)."""

    rate: float
    burst: int
    jitter: float
    rng: random.Random = field(default_factory=random.Random)
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def delay(self, venue: str, now: float) -> float:
        """Seconds from `now` until a start at `venue` may connect (the token is taken)."""
        bucket = self._buckets.get(venue)
        if bucket is None:
            bucket = self._buckets[venue] = TokenBucket(self.rate, self.burst)
        return bucket.reserve(now) + self.rng.uniform(0, self.jitter)
