"""The aiokafka producers the sink sends through (bridge/sink.py): `Producer`, the idempotent
one every bridge uses, and `TxnProducer`, the transactional one of a fleet shard.

`TxnProducer` (fleet mode, bridge/fleet.py): one per owned shard, `transactional.id` stable per
group and shard (bridge/ownership.py). Starting it runs InitProducerId, which bumps the id's
epoch: the shard's previous owner is fenced (the broker refuses its writes and aborts its open
transaction) before the new owner restores the shard's state and connects. Records are sent in
short transactions, committed every `fleet.commit_interval`; the sink hears of a record's
delivery only when its transaction committed (a read_committed consumer sees it then), and of
its failure when the transaction was aborted. A fenced producer (`ProducerFenced`), a lost
lease or a lost shard (`ShardLost`) end the shard's sink for good: starting the producer again
would fence the new owner in turn.

aiokafka facts relied on (0.12-0.14): `send_batch` outside a transaction raises
`IllegalOperation` (not a KafkaError), so no batch is handed over while a commit is under way;
`commit_transaction` first waits for every batch handed over, then sends EndTxn; a fenced
producer's batches fail with `ProducerFenced` (INVALID_PRODUCER_EPOCH), and after that its
transaction manager is in a fatal state in which neither commit nor abort may be called (read
from `_txn_manager`, the one private attribute used).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    IllegalOperation,
    InvalidProducerEpoch,
    KafkaError,
    ProducerFenced,
    TransactionalIdAuthorizationFailed,
)

from bridge.backoff import Backoff, retry_until
from bridge.batches import MAX_REQUEST_BYTES, Batch
from bridge.codec import Encoded
from bridge.kafka import KafkaAccess
from bridge.logs import get_logger
from bridge.records import Envelope
from bridge.sections import ReconnectSettings

# Delays between attempts to resend a record or to start a replacement producer.
RECOVERY_DELAYS = ReconnectSettings(initial_delay=0.5, max_delay=10.0, multiplier=2.0, jitter=0.0)
# A transaction left open by a member that died is aborted by the broker after this long, if
# no new owner's InitProducerId aborted it first (which is what normally happens).
TRANSACTION_TIMEOUT_MS: Final = 60_000


class ShardLost(KafkaError):  # type: ignore[misc]
    """This member may no longer write for the shard: its lease expired, or the group gave the
    shard to another member."""


# Errors after which a shard's producer must never be started again by this owner.
FENCED_ERRORS: Final = (
    ProducerFenced,
    InvalidProducerEpoch,
    TransactionalIdAuthorizationFailed,
    ShardLost,
)


class Producer:
    """The current aiokafka producer: started, replaced after a failed delivery (a fresh
    producer id leaves no sequence gap behind), closed."""

    def __init__(
        self,
        access: KafkaAccess,
        factory: Callable[..., AIOKafkaProducer] = AIOKafkaProducer,
        **options: Any,
    ) -> None:
        # Built once (TLS context, token cache); the request limit the sink checks explicit.
        self._options = {
            **access.producer_options(),
            "max_request_size": MAX_REQUEST_BYTES,
            **options,
        }
        self._factory = factory
        self._current: AIOKafkaProducer | None = None
        self._log = get_logger(component="sink")

    async def start(self) -> None:
        producer = self._factory(**self._options)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._current = producer

    @property
    def current(self) -> AIOKafkaProducer:
        assert self._current is not None, "Sink.start() was not awaited"
        return self._current

    async def send_batch(self, batch: Batch) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self.current.send_batch(
            batch.builder, batch.topic, partition=batch.partition
        )
        return future

    async def send(
        self,
        topic: str,
        encoded: Encoded,
        partition: int | None = None,
        record: Envelope | None = None,
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self.current.send(
            topic, encoded.value, key=encoded.key, headers=encoded.headers, partition=partition
        )
        return future

    async def replace(self) -> None:
        """Close the current producer and start a new one, retrying until the brokers answer."""
        await self.close(timeout=10)

        def unreachable(exc: KafkaError, delay: float) -> None:
            self._log.warning("kafka unreachable", error=repr(exc), retry_in=delay)

        await retry_until(
            self.start,
            Backoff(RECOVERY_DELAYS),
            retry_on=KafkaError,
            retriable=lambda exc: not isinstance(exc, FENCED_ERRORS),
            on_retry=unreachable,
        )

    async def close(self, timeout: float) -> None:
        producer, self._current = self._current, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), timeout)
            except (TimeoutError, KafkaError) as exc:
                self._log.warning("producer did not close cleanly", error=repr(exc))


class TxnProducer(Producer):
    """One fleet shard's transactional producer (see the module docstring). `may_start()`
    says whether this member owns the shard (assigned, lease valid): asked before a producer
    starts, which would fence whoever owns the shard now. `may_write()` says whether it may
    still write (its lease is valid): asked before a transaction begins and before it commits.
    A shard that moved may still commit what it has until the new owner fences it."""

    def __init__(
        self,
        access: KafkaAccess,
        transactional_id: str,
        commit_interval: float,
        may_start: Callable[[], bool],
        may_write: Callable[[], bool],
        factory: Callable[..., AIOKafkaProducer] = AIOKafkaProducer,
    ) -> None:
        super().__init__(
            access,
            factory,
            transactional_id=transactional_id,
            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
        )
        self.transactional_id = transactional_id
        self._interval = commit_interval
        self._may_start = may_start
        self._may_write = may_write
        self._open: list[tuple[asyncio.Future[Any], asyncio.Future[Any]]] = []
        self._ending: list[tuple[asyncio.Future[Any], asyncio.Future[Any]]] = []  # committing
        self._records: list[Envelope] = []  # what the open transaction carries, in order
        # Records → the checkpoint entries (topic, partition, bytes) that describe them: written
        # into the same transaction, so the checkpoint never lags or leads what is visible.
        self.entries_for: Callable[[list[Envelope]], list[tuple[str, int, Encoded]]] | None = None
        self._in_transaction = False
        self._beginning = asyncio.Lock()
        self._committing = asyncio.Event()
        self._committed = asyncio.Event()  # set whenever no commit is under way
        self._committed.set()
        self._handing = 0  # hand-overs under way
        self._idle = asyncio.Event()  # set when none is
        self._idle.set()
        self._ended: BaseException | None = None  # fenced or lost: no more transactions
        self._committer: asyncio.Task[None] | None = None
        self.commits = 0
        self._log = get_logger(component="sink", transactional_id=transactional_id)

    async def start(self) -> None:
        """InitProducerId under this shard's transactional id: fences the previous owner."""
        if self._ended is not None:
            raise self._ended
        if not self._may_start():
            raise ShardLost(f"{self.transactional_id}: not starting a producer for a lost shard")
        await super().start()
        if not self._may_start():
            # The shard moved while InitProducerId ran (a forming group gives its first member
            # every shard until the next rebalance): its owner now restores and connects, not
            # this member, which would otherwise run the shard until its next rebalance step.
            await super().close(timeout=5)
            raise ShardLost(f"{self.transactional_id}: the shard moved while its producer started")
        self._in_transaction = False
        if self._committer is None or self._committer.done():
            self._committer = asyncio.get_running_loop().create_task(
                self._commit_loop(), name=f"commit:{self.transactional_id}"
            )

    async def send_batch(self, batch: Batch) -> asyncio.Future[Any]:
        async with self._sending():
            future = self._defer(await super().send_batch(batch))
            self._records.extend(p.record for p in batch.pendings)
            return future

    async def send(
        self,
        topic: str,
        encoded: Encoded,
        partition: int | None = None,
        record: Envelope | None = None,
    ) -> asyncio.Future[Any]:
        async with self._sending():
            future = self._defer(await super().send(topic, encoded, partition))
            if record is not None:
                self._records.append(record)
            return future

    def _fatal(self) -> bool:
        """aiokafka's transaction manager is fatal: fenced (its batches failed with
        ProducerFenced) or its sender died; no transaction can begin or end."""
        return self._current is not None and bool(self._current._txn_manager.is_fatal_error())

    @contextlib.asynccontextmanager
    async def _sending(self) -> AsyncIterator[None]:
        """A hand-over into the open transaction: a commit waits until none is under way
        (aiokafka refuses sends once the commit began)."""
        await self._enter()
        self._handing += 1
        self._idle.clear()
        try:
            yield
        except IllegalOperation as exc:  # fenced meanwhile: the transaction is over
            raise self._end(ProducerFenced() if self._fatal() else ShardLost(repr(exc))) from exc
        finally:
            self._handing -= 1
            if not self._handing:
                self._idle.set()

    async def _enter(self) -> None:
        """Into the open transaction (beginning one), after any commit under way."""
        while not self._committed.is_set():
            await self._committed.wait()
        if self._ended is None and self._fatal():
            self._end(ProducerFenced())
        if self._ended is not None:
            raise self._ended
        if not self._may_write():
            raise self._end(ShardLost(f"{self.transactional_id}: lease expired"))
        async with self._beginning:  # begin_transaction suspends; begin it once
            if not self._in_transaction:
                await self.current.begin_transaction()
                self._in_transaction = True

    def _defer(self, sent: asyncio.Future[Any]) -> asyncio.Future[Any]:
        """A future settled when the transaction `sent` is part of ends."""
        outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._open.append((sent, outcome))
        self._committing.set()
        return outcome

    async def _commit_loop(self) -> None:
        while True:
            await self._committing.wait()
            await asyncio.sleep(self._interval)
            self._committing.clear()
            await self.commit()

    async def commit(self) -> None:
        """End the open transaction: commit it, or abort it if a batch of it failed or this
        member may no longer write; settle each of its records' futures accordingly."""
        if not self._open:
            return
        self._committed.clear()
        try:
            await self._idle.wait()
        except BaseException:
            self._committed.set()
            raise
        batches, self._open = self._open, []
        records, self._records = self._records, []
        self._ending = batches  # settled by close() if the commit is cancelled
        try:
            failure = await self._end_transaction([sent for sent, _ in batches], records)
        finally:
            self._in_transaction = False
            self._committed.set()
        self._ending = []
        for _, outcome in batches:
            if outcome.done():
                continue
            if failure is None:
                outcome.set_result(None)
            else:
                outcome.set_exception(failure)

    async def _end_transaction(
        self, sent: list[asyncio.Future[Any]], records: list[Envelope]
    ) -> BaseException | None:
        """Commit (None) or abort (the reason). A fenced producer is left as it is."""
        results = await asyncio.gather(*sent, return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is None and not self._may_write():
            failure = ShardLost(f"{self.transactional_id}: lease expired")
        if isinstance(failure, FENCED_ERRORS):
            return self._end(failure)
        producer = self.current
        try:
            if failure is None:
                await self._write_entries(records)
                await producer.commit_transaction()
                self.commits += 1
                return None
        except KafkaError as exc:
            failure = exc
        if isinstance(failure, FENCED_ERRORS) or self._fatal():
            return self._end(failure)
        self._log.warning("transaction aborted", error=repr(failure))
        with contextlib.suppress(KafkaError):
            await producer.abort_transaction()
        aborted: BaseException = failure
        return aborted

    async def _write_entries(self, records: list[Envelope]) -> None:
        """The checkpoint entries describing `records`, into the open transaction."""
        if self.entries_for is None or not records:
            return
        sends = [
            await self.current.send(
                topic, e.value, key=e.key, headers=e.headers, partition=partition
            )
            for topic, partition, e in self.entries_for(records)
        ]
        await asyncio.gather(*sends)

    def _end(self, reason: BaseException) -> BaseException:
        if self._ended is None:
            self._log.warning("shard producer ended", reason=repr(reason))
            self._ended = reason if isinstance(reason, KafkaError) else ShardLost(repr(reason))
        return self._ended

    async def close(self, timeout: float) -> None:
        """Stop committing; what is still open is aborted (by the next owner's start, or the
        broker's transaction timeout) and its records fail."""
        if self._committer is not None:
            self._committer.cancel()
            await asyncio.gather(self._committer, return_exceptions=True)
            self._committer = None
        batches, self._open, self._ending = [*self._ending, *self._open], [], []
        for _, outcome in batches:
            if not outcome.done():
                outcome.set_exception(ShardLost(f"{self.transactional_id}: producer closed"))
        self._in_transaction = False
        await super().close(timeout)
