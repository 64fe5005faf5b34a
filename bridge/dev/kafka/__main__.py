"""``python -m bridge.dev.kafka``: run a local Kafka broker for the demo until Ctrl-C / SIGTERM.

Prints ``KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<port>`` on stdout (so a shell can ``eval`` or grep
it); everything else goes to stderr. ``--fetch-only`` only fills the jar cache (CI pre-fetch).
"""

import sys

from bridge.dev.jvm import serve
from bridge.dev.kafka.broker import LocalKafka, ensure_jars

if __name__ == "__main__":
    sys.exit(
        serve(
            None,
            prog="python -m bridge.dev.kafka",
            description="Run a single-node Apache Kafka broker (KRaft) from Maven Central jars.",
            what="Kafka broker",
            fetch=ensure_jars,
            server=lambda timeout: LocalKafka(startup_timeout=timeout),
            announce=lambda broker: f"KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}",
            startup_timeout=60.0,
        )
    )
