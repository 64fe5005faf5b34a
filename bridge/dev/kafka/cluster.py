"""A real multi-broker KRaft cluster from the same jars, for the scenarios one broker cannot
play: a partition below `min.insync.replicas`, a partition leader lost while the cluster lives.

One controller quorum: node 1 is broker and controller, nodes 2..N are brokers only, so
stopping any of those never stops the quorum. Defaults are a production shape in miniature:
every topic replicated N times, `min.insync.replicas=2`. The JVMs boot at once (their storage
is formatted in parallel threads; the processes are started from the calling thread so that
they die with it), each with a small heap. `pause(ids)`/`resume(ids)` SIGSTOP/SIGCONT brokers:
a stopped broker holds its connections open and answers nothing, like a hung machine, and the
controller fences it after `broker.session.timeout.ms` (3 s here).
"""

from __future__ import annotations

import concurrent.futures
import signal
from collections.abc import Iterable, Mapping
from typing import Self

from bridge.dev.kafka.broker import DevKafkaError, LocalKafka, _free_ports, ensure_jars


class ClusterNode(LocalKafka):
    """One broker of a `LocalKafkaCluster` (node 1 is also the cluster's only controller)."""

    def __init__(
        self,
        node_id: int,
        brokers: int,
        controller_port: int,
        *,
        heap: str,
        startup_timeout: float,
        extra_properties: Mapping[str, str],
    ) -> None:
        super().__init__(
            startup_timeout=startup_timeout, heap=heap, extra_properties=extra_properties
        )
        self.node_id = node_id
        self._brokers = brokers
        self._controller_port = controller_port

    def _properties(self) -> dict[str, str]:
        props = super()._properties()  # the single broker's, then this node's own
        b, c = self._port, self._controller_port
        controller = self.node_id == 1
        listeners = f"PLAINTEXT://127.0.0.1:{b}"
        replicas = str(self._brokers)
        props.update(
            {
                "node.id": str(self.node_id),
                "process.roles": "broker,controller" if controller else "broker",
                "controller.quorum.voters": f"1@127.0.0.1:{c}",
                "listeners": listeners + (f",CONTROLLER://127.0.0.1:{c}" if controller else ""),
                "advertised.listeners": listeners,
                "offsets.topic.replication.factor": replicas,
                "transaction.state.log.replication.factor": replicas,
                "transaction.state.log.min.isr": "2",
                "default.replication.factor": replicas,
                "min.insync.replicas": "2",
                "num.network.threads": "1",
                "num.io.threads": "1",
            }
        )
        props.update(self._extra)
        return props


class LocalKafkaCluster:
    """`brokers` KRaft brokers on loopback; see the module docstring."""

    def __init__(
        self,
        brokers: int = 3,
        *,
        heap: str = "256m",
        startup_timeout: float = 120.0,
        extra_properties: Mapping[str, str] | None = None,
    ) -> None:
        if brokers < 2:
            raise DevKafkaError("a cluster needs 2 brokers or more; LocalKafka is one")
        *ports, controller = _free_ports(brokers + 1)
        self.nodes = [
            ClusterNode(
                i + 1,
                brokers,
                controller,
                heap=heap,
                startup_timeout=startup_timeout,
                extra_properties=extra_properties or {},
            )
            for i in range(brokers)
        ]
        for node, port in zip(self.nodes, ports, strict=True):
            node._port = port
            node._cluster_id = self.nodes[0]._cluster_id  # one cluster
        self.startup_seconds: float | None = None

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.nodes)

    def node(self, node_id: int) -> ClusterNode:
        return self.nodes[node_id - 1]

    def start(self) -> Self:
        """Format every node's storage at once, start every JVM, wait until each answers."""
        libs = ensure_jars()
        for node in self.nodes:
            node._prepare()
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda n: n._format_storage(libs), self.nodes))
        try:
            started = [node._spawn(libs) for node in self.nodes]  # this thread: pdeathsig
            for node, t0 in zip(self.nodes, started, strict=True):
                node._await_ready(t0)
        except BaseException:
            self.close()
            raise
        self.startup_seconds = max(node.startup_seconds or 0.0 for node in self.nodes)
        return self

    def pause(self, node_ids: Iterable[int]) -> None:
        """SIGSTOP these brokers: connections stay open, nothing is answered."""
        for node_id in node_ids:
            self._signal(node_id, signal.SIGSTOP)

    def resume(self, node_ids: Iterable[int]) -> None:
        for node_id in node_ids:
            self._signal(node_id, signal.SIGCONT)

    def _signal(self, node_id: int, sig: signal.Signals) -> None:
        jvm = self.node(node_id)._jvm
        if jvm is None or not jvm.is_running:
            raise DevKafkaError(f"broker {node_id} is not running")
        jvm.signal(sig)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(f"-- broker {n.node_id}\n{n.log_tail(lines)}" for n in self.nodes)

    def close(self) -> None:
        """Kill every JVM (a throwaway cluster: no controlled shutdown to wait for) and delete
        the data."""
        for node in self.nodes:
            node.kill()
            node.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()
