"""Real Kafka for tests and demos on machines without Docker (README.md, "Development")."""

from bridge.dev.kafka.broker import (
    KAFKA_VERSION,
    DevKafkaError,
    KafkaEndpoint,
    KafkaKind,
    LocalKafka,
    cache_root,
    docker_available,
    ensure_jars,
    kafka_bootstrap,
    probe_metadata,
)

__all__ = [
    "KAFKA_VERSION",
    "DevKafkaError",
    "KafkaEndpoint",
    "KafkaKind",
    "LocalKafka",
    "cache_root",
    "docker_available",
    "ensure_jars",
    "kafka_bootstrap",
    "probe_metadata",
]
