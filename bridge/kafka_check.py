"""Kafka at start and while running: can the bridge sign in, do its topics exist, may it write.

At start (`prepare`), before anything is published: unreachable brokers are retried with the
reconnect backoff (SIGTERM interrupts); a refused sign-in, an untrusted certificate, missing
topics (unless `kafka.create_topics`) or a topic the principal may not write raise
`KafkaAccessError`, which the CLI turns into exit 2 with the cause.

While running (`KafkaWatch`), every `kafka.check_interval` seconds the same check runs on a
fresh connection with the current credentials: `bridge_kafka_up` says whether it passed, and
`bridge_kafka_auth_failures_total` counts refused sign-ins, so a rotated password or a revoked
API key is seen (and alerted on) as a Kafka credentials problem, not as a venue outage. The
producer's own connections stay as they are: the check only reports.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridge.backoff import Backoff, retry_until
from bridge.errors import KafkaAccessError
from bridge.kafka import KafkaAccess
from bridge.logs import get_logger
from bridge.metrics import Metrics
from bridge.sections import ReconnectSettings
from bridge.topics import ensure_topics, plans


async def prepare(
    access: KafkaAccess,
    metrics: Metrics,
    reconnect: ReconnectSettings,
    stop: asyncio.Event,
    config: Path | None = None,
) -> bool:
    """Wait until Kafka lets the bridge in and every topic is there (created when configured).
    False when a stop was requested first."""
    log = get_logger(component="kafka")
    settings = access.settings

    async def attempt() -> bool:
        try:
            created = await ensure_topics(access, create=settings.create_topics, config=config)
        except KafkaAccessError as exc:
            _count(metrics, exc)
            raise
        if created:
            log.info("topics created", topics=created)
        metrics.kafka_up.set(1)
        return True

    def unreachable(exc: KafkaAccessError, delay: float) -> None:
        log.warning("kafka unreachable; retrying", error=str(exc), retry_in=round(delay, 2))

    try:
        done = await retry_until(
            attempt,
            Backoff(reconnect),
            retry_on=KafkaAccessError,
            retriable=lambda exc: exc.retriable,
            on_retry=unreachable,
            stop=stop,
        )
    except KafkaAccessError as exc:
        log.error("kafka refused the bridge", problem=exc.problem, error=str(exc))
        raise
    if done:
        log.info("kafka ready", cluster=access.describe())
    return bool(done)


def _count(metrics: Metrics, exc: KafkaAccessError) -> None:
    metrics.kafka_up.set(0)
    if exc.problem == "auth":
        metrics.kafka_auth_failures.inc()


class KafkaWatch:
    """The running bridge's periodic Kafka check (see the module docstring)."""

    def __init__(self, access: KafkaAccess, metrics: Metrics, interval: float) -> None:
        self._access = access
        self._metrics = metrics
        self._interval = interval
        self._log = get_logger(component="kafka")
        self._last: str | None = None  # the failure last logged, so an episode logs once

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check_once()

    async def check_once(self) -> KafkaAccessError | None:
        problem: KafkaAccessError | None = None
        try:
            states = await self._access.topics([p.name for p in plans(self._access.settings)])
        except KafkaAccessError as exc:
            problem = exc
        else:
            missing = [s.name for s in states if not s.exists]
            refused = [s.name for s in states if s.writable is False]
            if missing:
                problem = KafkaAccessError("topics", f"kafka: topics gone: {', '.join(missing)}")
            elif refused:
                problem = KafkaAccessError(
                    "authorization", f"kafka: may no longer write to {', '.join(refused)}"
                )
        if problem is None:
            if self._last is not None:
                self._log.info("kafka check passed again")
            self._last = None
            self._metrics.kafka_up.set(1)
            return None
        _count(self._metrics, problem)
        if str(problem) != self._last:
            self._log.error("kafka check failed", problem=problem.problem, error=str(problem))
            self._last = str(problem)
        return problem
