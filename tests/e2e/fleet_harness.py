"""A fleet on this machine: bridge processes playing the pods (fleet mode, one group), one
simulated venue account per stream (Aquanow and Satori), and the checks the fleet tests and the
fleet benchmark share: who owns which stream (each member's /metrics), how long each stream was
without a subscribed session (seen from the venues), and whether the last record of every key
a read_committed consumer sees equals the venues' truth."""

from __future__ import annotations

import ast
import asyncio
import datetime as dt
import hashlib
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer
from eth_account import Account

from bridge.checkpoint import state_digest
from bridge.codec import Codec, SchemaStore
from bridge.dev.kafka import KafkaEndpoint
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.base import VenueSimulator
from bridge.dev.simulator.satori import SatoriSimulator
from bridge.records import StateEntry, VenueRecord
from tests.e2e.expected import aquanow_truth, mismatches, satori_truth
from tests.helpers import (
    AvroReader,
    BridgeProcess,
    read_to_end,
    topic_partitions,
    unique_topics,
    wait_until,
)

STATE = ("balances", "orders", "positions", "credit")
CODEC = Codec(SchemaStore.load())


@dataclass
class Account_:
    """One simulated venue account and the stream that reads it."""

    stream: str
    venue: str
    sim: VenueSimulator
    config: dict[str, Any]
    wallet: str | None = None  # Satori: the account keys are the wallet address


def satori_key(i: int) -> tuple[str, str]:
    """A deterministic private key and its wallet address."""
    key = "0x" + hashlib.sha256(f"fleet-satori-{i}".encode()).hexdigest()
    return key, Account.from_key(key).address


def build_accounts(aquanow: int, satori: int, rate: float) -> list[Account_]:
    common = {"ping_interval": 1, "ping_timeout": 3}
    snapshot = {"rate_per_second": 50, "burst": 20, "interval": 0, "since_margin": 1}
    accounts = []
    for i in range(aquanow):
        key, secret = f"aq-fleet-{i}", f"aq-secret-{i}"
        sim: VenueSimulator = AquanowSimulator(
            key,
            secret,
            account_id=f"CA{1000 + i}",
            username=f"user{i}",
            rate=rate,
            seed=100 + i,
            emit_while_disconnected=True,
        )
        accounts.append(Account_(f"aq{i}", "aquanow", sim, {"api_key": key, "api_secret": secret}))
    for i in range(satori):
        private, wallet = satori_key(i)
        key = f"st-fleet-{i}"
        sim = SatoriSimulator(
            key,
            wallet,
            rate=rate,
            seed=200 + i,
            emit_while_disconnected=True,
            coins=("USD", "ETH"),
            pairs=("ETH-USD",),
        )
        stream = {"api_key": key, "private_key": private, "coins": ["USD", "ETH"]}
        accounts.append(Account_(f"sat{i}", "satori", sim, {**stream, "pairs": ["ETH-USD"]}))
        accounts[-1].wallet = wallet
    for a in accounts:
        a.config = {
            "name": a.stream,
            "venue": a.venue,
            **common,
            "snapshot": snapshot,
            **a.config,
        }
        if a.venue == "aquanow":
            a.config["ack_grace"] = 0.3
    return accounts


@dataclass
class Fleet:
    """The venues, the topics and the members of one test's fleet."""

    kafka: KafkaEndpoint
    tmp_path: Path
    accounts: list[Account_]
    shards: int = 12
    session_timeout: float = 3.0
    topics: dict[str, str] = field(default_factory=unique_topics)
    group: str = field(default_factory=lambda: f"fleet-{time.time_ns()}")
    members: dict[str, BridgeProcess] = field(default_factory=dict)
    _runs: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))

    async def __aenter__(self) -> Fleet:
        for a in self.accounts:
            await a.sim.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        for member in self.members.values():
            if member.process is not None and member.process.poll() is None:
                member.process.send_signal(signal.SIGCONT)
                member.process.kill()
                member.process.wait(10)
        for a in self.accounts:
            await a.sim.stop()

    def config(self, **fleet: Any) -> dict[str, Any]:
        streams = [
            {**a.config, "url": a.sim.url, "rest_url": a.sim.rest_url} for a in self.accounts
        ]
        return {
            "kafka": {
                "bootstrap_servers": self.kafka.bootstrap_servers,
                "topics": self.topics,
                "linger_ms": 5,
            },
            "reconnect": {"initial_delay": 0.2, "max_delay": 1},
            "state": {"flush_interval": 0.2},
            "shutdown": {"grace_seconds": 5},
            "control": {"heartbeat_interval": 0},
            "fleet": {
                "enabled": True,
                "group": self.group,
                "shards": self.shards,
                "session_timeout": self.session_timeout,
                "connect_jitter": 0.2,
                **fleet,
            },
            "streams": streams,
        }

    def start(self, member: str, **fleet: Any) -> BridgeProcess:
        """Start (or restart) `member` as a new process with the member id `member`."""
        self._runs[member] += 1
        where = self.tmp_path / f"{member}-{self._runs[member]}"
        where.mkdir(parents=True)
        process = BridgeProcess(
            where, self.config(**fleet), env={"BRIDGE_FLEET__MEMBER_ID": member}
        ).start()
        self.members[member] = process
        return process

    def stop(self, member: str) -> int:
        """SIGTERM `member` and wait for it to exit: its exit code."""
        process = self.members[member].process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        return process.wait(60)

    async def stream_starts(self) -> dict[int, float]:
        """Streams started so far per live member process (a restarted member is a new
        process): subtract two of these for the starts in between."""
        return {
            id(m): await m.metric("bridge_fleet_stream_starts_total") for m in self.live().values()
        }

    def live(self) -> dict[str, BridgeProcess]:
        return {
            name: p
            for name, p in self.members.items()
            if p.process is not None and p.process.poll() is None
        }

    async def owned(self, members: dict[str, BridgeProcess] | None = None) -> dict[str, list[str]]:
        """stream → the members whose /metrics say they own it."""
        owners: dict[str, list[str]] = {a.stream: [] for a in self.accounts}
        for name, member in (members or self.live()).items():
            _, text = await member.get("/metrics")
            for line in text.splitlines():
                if line.startswith("bridge_stream_owned{") and line.endswith(" 1.0"):
                    stream = line.split('stream="', 1)[1].split('"', 1)[0]
                    owners[stream].append(name)
        return owners

    async def wait_owned_once(
        self, timeout: float, members: dict[str, BridgeProcess] | None = None
    ) -> dict[str, list[str]]:
        """Wait until the group settled over `members` (default: the live ones): every shard
        assigned to one of them, each of them ready (it runs all it owns), every stream owned
        by exactly one and subscribed at its venue; returns the ownership. (Owned once alone
        is also true just before a rebalance: new members own nothing yet.)"""
        last: list[dict[str, list[str]]] = [{}]

        async def settled() -> bool:
            chosen = members or self.live()
            for member in chosen.values():
                status, _ = await member.get("/readyz")
                if status != 200:
                    return False
            if await metric_sum(chosen, "bridge_fleet_shards_assigned") != self.shards:
                return False
            last[0] = owners = await self.owned(chosen)
            if not all(len(o) == 1 for o in owners.values()):
                return False
            return all(self.subscribed(a.sim) for a in self.accounts)

        await wait_until(
            settled,
            "every stream owned by exactly one member and subscribed",
            timeout,
            interval=0.2,
            ignore=(aiohttp.ClientError, TimeoutError),
            detail=lambda: f"owners: {last[0]}",
        )
        return last[0]

    @staticmethod
    def subscribed(sim: VenueSimulator) -> bool:
        return any(s.subscriptions for s in sim.sessions.values())

    def pause(self, paused: bool = True) -> None:
        for a in self.accounts:
            a.sim.pause(paused)

    async def converge(self, timeout: float) -> tuple[list[str], int]:
        """Read the state topics (read_committed) until the last record of every key equals
        the venues' truth, or the deadline: the problems left, and the number of keys."""
        reader = AvroReader()
        logical = {self.topics[t]: t for t in STATE}
        consumer = AIOKafkaConsumer(
            *logical,
            bootstrap_servers=self.kafka.bootstrap_servers,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await consumer.start()
        last: dict[tuple[str, str], dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        try:
            while True:
                for batch in (await consumer.getmany(timeout_ms=300)).values():
                    for m in batch:
                        _, _, record = reader.decode(m.value)
                        last[(logical[m.topic], m.key.decode())] = record
                problems = mismatches(self.truth(set(last)), last)
                if not problems or time.monotonic() > deadline:
                    return problems, len(last)
                await asyncio.sleep(0.2)
        finally:
            await consumer.stop()

    async def committed(self, timeout: float = 30) -> list[Written]:
        """Every record of the data topics a read_committed consumer sees (up to their end
        offsets now), with the member that wrote it."""
        reader = AvroReader()
        logical = {self.topics[t]: t for t in (*STATE, "trades")}
        bootstrap = self.kafka.bootstrap_servers
        partitions = await topic_partitions(bootstrap, list(logical))
        out: list[Written] = []
        for m in await read_to_end(bootstrap, partitions, "read_committed", timeout):
            _, _, record = reader.decode(m.value)
            out.append(
                Written(
                    logical[m.topic],
                    m.partition,
                    m.offset,
                    dict(m.headers).get("member", b"").decode(),
                    record["stream"],
                    _micros(record["received_at"]),
                )
            )
        return out

    async def explain(self, problems: list[str], keys: int = 2) -> str:
        """Why keys did not converge, for a failure's report: each key's records as a
        read_uncommitted consumer sees them (offset, writer, source, committed or not) and
        its stream's life in every member's log."""
        lines: list[str] = []
        for problem in problems[:keys]:
            topic, key = ast.literal_eval(problem[: problem.index("): ") + 1])
            account = next(a for a in self.accounts if _account_id(a) in key)
            lines.append(
                f"-- {topic} {key} (stream {account.stream}) venue: {_at_venue(account, key)}"
            )
            lines += await self._history(topic, key)
            lines += await self._history("state", f"{account.stream}|{topic}|{key}")
            for name, member in self.members.items():
                lines += [f"{name} {e}" for e in _lifecycle(member, account.stream)]
        return "\n".join(lines)

    async def _history(self, topic: str, key: str, last: int = 12) -> list[str]:
        seen: dict[str, dict[tuple[int, int], str]] = {}
        tps = await topic_partitions(self.kafka.bootstrap_servers, [self.topics[topic]])
        for isolation in ("read_committed", "read_uncommitted"):
            seen[isolation] = {
                (m.partition, m.offset): _described(m.value, m.headers)
                for m in await read_to_end(self.kafka.bootstrap_servers, tps, isolation)
                if m.key is not None and m.key.decode() == key and m.value
            }
        committed = seen["read_committed"]
        return [
            f"  @{p}:{o} {'' if (p, o) in committed else 'NOT COMMITTED '}{text}"
            for (p, o), text in sorted(seen["read_uncommitted"].items())[-last:]
        ]

    def truth(self, published: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        truth: dict[tuple[str, str], dict[str, Any]] = {}
        for a in self.accounts:
            if a.venue == "aquanow":
                truth |= aquanow_truth(a.sim)
            else:
                assert a.wallet is not None
                truth |= satori_truth(a.sim, a.wallet, published)
        return truth


@dataclass(frozen=True)
class Written:
    """A record as a read_committed consumer sees it, and who wrote it."""

    topic: str
    partition: int
    offset: int
    member: str
    stream: str
    received_at: int  # epoch microseconds


HISTORY_FIELDS = ("available", "frozen", "status", "filled_quantity", "version", "event_time")
LIFECYCLE = frozenset(
    {"connecting", "subscribed", "connection lost", "snapshot done", "snapshot failed"}
    | {"stream stopped", "stream state restored", "shard started"}
)


def _described(value: bytes, headers: Any) -> str:
    """A record or checkpoint entry in one line: writer, source, state digest, key fields."""
    record = CODEC.decode(value)
    member = dict(headers).get("member", b"").decode()
    if isinstance(record, StateEntry):
        return f"{member} entry digest={record.digest} open={record.open}"
    digest = state_digest(record) if isinstance(record, VenueRecord) else "-"
    fields = {k: getattr(record, k, None) for k in HISTORY_FIELDS if getattr(record, k, None)}
    return f"{member} {record.source} digest={digest} {fields}"


def _at_venue(account: Account_, key: str) -> dict[str, Any]:
    """The venue's own record of a key's times and status (Aquanow orders, Satori balances)."""
    ident = key.rsplit("|", 1)[-1]
    sim: Any = account.sim
    found = sim.orders.get(ident) if account.venue == "aquanow" else sim.balances.get(ident)
    wanted = ("createdAt", "updatedAt", "tradeStatus", "logId", "availableAmount")
    out: dict[str, Any] = {k: found[k] for k in wanted if found and k in found}
    out["pushed"] = [  # to which connection, when (UTC): the last frames naming the key
        f"{s.connection}@{dt.datetime.fromtimestamp(s.at, dt.UTC):%H:%M:%S.%f}"[:-3]
        for s in sim.sent
        if ident in s.text
    ][-6:]
    return out


def _account_id(account: Account_) -> str:
    if account.wallet is not None:
        return account.wallet
    return str(getattr(account.sim, "account_id", account.stream))


def _lifecycle(member: BridgeProcess, stream: str) -> list[str]:
    """`stream`'s connections, snapshots and starts in `member`'s log, one line each."""
    out = []
    for e in member.log_events():
        if e.get("event") in LIFECYCLE and stream in (e.get("stream"), *e.get("streams", ())):
            rest = {k: v for k, v in e.items() if k not in ("event", "level", "timestamp")}
            out.append(f"{e['timestamp'][11:23]} {e['event']} {rest}")
    return out


def _micros(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return (value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
    return int(value)


def restarts(member: BridgeProcess, after: float) -> dict[str, float]:
    """stream → when (epoch seconds) `member` started it again after `after`, from its log."""
    out: dict[str, float] = {}
    for event in member.log_events():
        if event.get("event") != "shard started":
            continue
        at = dt.datetime.fromisoformat(event["timestamp"]).timestamp()
        if at > after:
            for stream in event["streams"]:
                out.setdefault(stream, at)
    return out


def zombie_writes(
    records: list[Written],
    zombie: str,
    streams: set[str],
    paused_at: float,
    restarted: dict[str, float],
) -> list[Written]:
    """Records of `zombie` for `streams` that became visible after another member's record of
    the same stream in the same partition received after the zombie was paused (`paused_at`,
    epoch seconds: the handover; another member may have run the stream before, while the
    group formed), though received before the zombie legitimately started that stream again
    (`restarted`, epoch seconds; never: no bound) — written by the old owner after the
    handover: what it had in flight when paused, and what its old sessions read once resumed."""
    first_other: dict[tuple[str, int, str], int] = {}
    for r in records:
        if r.stream in streams and r.member != zombie and r.received_at >= paused_at * 1e6:
            where = (r.topic, r.partition, r.stream)
            first_other[where] = min(first_other.get(where, r.offset), r.offset)
    return [
        r
        for r in records
        if r.member == zombie
        and r.stream in streams
        and r.offset > first_other.get((r.topic, r.partition, r.stream), r.offset)
        and r.received_at < restarted.get(r.stream, float("inf")) * 1_000_000
    ]


class Downtime:
    """Samples every venue every 50 ms: how long each stream had no subscribed session."""

    def __init__(self, accounts: list[Account_]) -> None:
        self._accounts = accounts
        self._down_since: dict[str, float | None] = {a.stream: None for a in accounts}
        self.longest: dict[str, float] = {a.stream: 0.0 for a in accounts}
        self.outages: dict[str, int] = {a.stream: 0 for a in accounts}
        self._task: asyncio.Task[None] | None = None

    def reset(self) -> None:
        self.longest = dict.fromkeys(self.longest, 0.0)
        self.outages = dict.fromkeys(self.outages, 0)

    async def _sample(self) -> None:
        while True:
            now = time.monotonic()
            for a in self._accounts:
                up = Fleet.subscribed(a.sim)
                since = self._down_since[a.stream]
                if up and since is not None:
                    self.longest[a.stream] = max(self.longest[a.stream], now - since)
                    self._down_since[a.stream] = None
                elif not up and since is None:
                    self._down_since[a.stream] = now
                    self.outages[a.stream] += 1
            await asyncio.sleep(0.05)

    def start(self) -> Downtime:
        self._task = asyncio.create_task(self._sample())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def worst(self) -> tuple[str, float]:
        now = time.monotonic()
        current = {s: now - t for s, t in self._down_since.items() if t is not None}
        merged = {s: max(v, current.get(s, 0.0)) for s, v in self.longest.items()}
        stream = max(merged, key=lambda s: merged[s])
        return stream, merged[stream]


def started_between(before: dict[int, float], after: dict[int, float]) -> int:
    return int(sum(v - before.get(k, 0) for k, v in after.items()))


async def metric_sum(members: dict[str, BridgeProcess], name: str, **labels: str) -> float:
    total = 0.0
    for member in members.values():
        total += await member.metric(name, **labels)
    return total
