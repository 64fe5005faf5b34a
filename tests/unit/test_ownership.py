"""Fleet mode's pure decisions (bridge/ownership.py) and its config section: which streams a
shard holds, what an assignment stops and starts, the lease, the connect budget, the
transactional ids, and the `fleet` keys (member id from the environment, shards = the state
topic's partitions)."""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.ownership import ConnectBudget, Lease, balanced, plan, shard_streams, transactional_id
from bridge.settings import load_settings
from bridge.shards import shard_key

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class S:
    name: str
    key: str

    def shard_key(self) -> str:
        return shard_key("aquanow", self.key)


def test_every_stream_in_exactly_one_shard_and_one_key_one_shard() -> None:
    streams = [S(f"s{i}", f"key-{i % 7}") for i in range(40)]
    shards = shard_streams(streams, 12)
    assert sorted(shards) == list(range(12))  # empty shards are listed too
    placed = [s.name for members in shards.values() for s in members]
    assert sorted(placed) == sorted(s.name for s in streams)
    for members in shards.values():  # streams of one key share a shard
        for other in shards.values():
            if other is not members:
                assert not {s.key for s in members} & {s.key for s in other}


def test_an_assignment_stops_only_what_moved_and_starts_only_what_came() -> None:
    changes = plan(running={0, 1, 2, 5}, assigned={1, 2, 5, 7})
    assert changes.stop == {0}
    assert changes.start == {7}
    assert changes.keep == {1, 2, 5}
    # The eager protocol's "revoked everything" is no assignment: the same set changes nothing.
    same = plan(running={3, 4}, assigned={3, 4})
    assert not same.stop
    assert not same.start


def test_balanced_is_at_most_one_above_the_mean() -> None:
    assert balanced({"a": [0, 1, 2, 3], "b": [4, 5, 6, 7], "c": [8, 9, 10, 11]})
    assert balanced({"a": [0, 1, 2, 3, 4], "b": [5, 6, 7, 8], "c": [9, 10, 11]})
    assert not balanced({"a": [0, 1, 2, 3, 4, 5, 6], "b": [7, 8, 9], "c": [10, 11]})
    assert balanced({})


def test_the_lease_lapses_after_the_session_timeout_without_a_renewal() -> None:
    lease = Lease(timeout=3.0)
    assert not lease.valid(100.0)  # never renewed: no member runs anything before joining
    lease.renew(100.0)
    assert lease.valid(103.0)
    assert not lease.valid(103.01)
    lease.renew(103.5)
    assert lease.valid(106.0)
    assert lease.age(106.0) == pytest.approx(2.5)


def test_the_connect_budget_spreads_starts_per_venue_with_jitter() -> None:
    budget = ConnectBudget(rate=5.0, burst=2, jitter=0.0)
    delays = [budget.delay("aquanow", 10.0) for _ in range(6)]
    assert delays == pytest.approx([0.0, 0.0, 0.2, 0.4, 0.6, 0.8])
    assert budget.delay("satori", 10.0) == 0.0  # a bucket per venue
    jittered = ConnectBudget(rate=100.0, burst=100, jitter=1.0, rng=random.Random(7))
    spread = [jittered.delay("satori", 0.0) for _ in range(50)]
    assert all(0.0 <= d <= 1.0 for d in spread)
    assert max(spread) - min(spread) > 0.5  # not all at once


def test_transactional_ids_are_stable_per_group_and_shard() -> None:
    assert transactional_id("desk", 3) == transactional_id("desk", 3)
    assert len({transactional_id(g, s) for g in ("a", "b") for s in range(4)}) == 8


FLEET = """
kafka: {bootstrap_servers: "127.0.0.1:9092"}
fleet: {enabled: true, group: desk-a, shards: 12, session_timeout: 6}
streams:
  - {name: aq, venue: aquanow, url: "wss://x/", rest_url: "https://x", api_key: k,
     api_secret: s, channels: [executionReport]}
"""


def test_fleet_section_member_id_and_shards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(FLEET)
    settings = load_settings(path, {})
    assert settings.fleet.enabled
    assert settings.fleet.member_id == socket.gethostname()
    assert settings.kafka.new_topics.state_partitions == 12  # the shards are its partitions
    monkeypatch.setenv("BRIDGE_FLEET__MEMBER_ID", "bridge-2")  # the chart: the pod's name
    assert load_settings(path, {}).fleet.member_id == "bridge-2"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("state_partitions", "fleet.shards: 12 differs from kafka.new_topics.state_partitions"),
        ("state_off", "fleet: fleet mode needs state.enabled"),
        ("member", "fleet.member_id"),
        ("disk_buffer", "disk_buffer: not available in fleet mode"),
    ],
)
def test_fleet_errors_name_the_key(tmp_path: Path, edit: str, message: str) -> None:
    text = {
        "state_partitions": FLEET.replace(
            '"127.0.0.1:9092"}', '"127.0.0.1:9092", new_topics: {state_partitions: 6}}'
        ),
        "state_off": FLEET + "state: {enabled: false}\n",
        "member": FLEET.replace("session_timeout: 6", "session_timeout: 6, member_id: 'a b'"),
        "disk_buffer": FLEET + f"disk_buffer: {{enabled: true, path: {tmp_path}}}\n",
    }[edit]
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, {})
