"""Pure delivery bookkeeping: publish order, buffer slots, outcomes and the resend plan.

No asyncio, no producer, no clock. The sink (`bridge/sink.py`) asks `admit` for a `Pending`
before it hands a record to Kafka and reports every record's outcome (`acked`, `failed`,
`dropped`); the ledger answers whether a record may be admitted, whether everything handed over
is acknowledged, and, after failed deliveries, what to send again and in which order. Outcomes
are per record: the shell may hand records over one by one or in batches, through one producer
or several.

Slots: an admitted record holds one of `capacity` slots until it is acknowledged or dropped; a
failed record keeps its slot until its resend is acknowledged. `in_flight` counts the slots
taken; "has room" and "drained" are derived from it. A record republished only to make its key's
newest value the last one again is a duplicate and takes no slot.

Stalls: the ledger keeps the records holding a slot in publish order with the (monotonic) time
each was admitted, so the age of the oldest unacknowledged record is known at any moment,
derived when asked (a scrape, the sink's stall watch), at no cost per record beyond one dict
entry.

Recovery: the first failure opens an episode. Nothing new is admitted, and every record
acknowledged from then on is remembered per key. Once every record in flight has an outcome
(`resend_due`), `begin_resend` hands back the failed records in publish order, then the newest
acknowledged record of each key published after that key's last failure (`plan_resend`). The
episode ends when each of them has an outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.codec import Encoded
from bridge.disklog import Ticket
from bridge.records import Envelope

Key = tuple[str, bytes]  # (logical topic, record key): one partition, one order


@dataclass(eq=False, slots=True)
class Pending:
    """A record handed (or about to be handed) to Kafka. `seq` is the publish order; `slot`
    says whether it holds a buffer slot now (from `admit` to its acknowledgement: a duplicate
    sent again after that holds none); `resend` that it is in the resend plan in progress and
    has no outcome yet. The shell may swap `record`/`encoded` for a dead letter: the Pending
    keeps its place."""

    seq: int
    record: Envelope
    encoded: Encoded
    received_mono: float | None
    admitted: float = 0.0  # monotonic seconds, when `admit` gave it a slot
    slot: bool = True
    resend: bool = False
    ticket: Ticket | None = None  # the disk buffer's frame this record was made from
    digest: str | None = None  # a state record's digest, computed at admission (bridge/stream.py)

    def settle_ticket(self) -> None:
        """Acknowledged: tell the frame's ticket, once (a republished duplicate is acked
        again)."""
        ticket, self.ticket = self.ticket, None
        if ticket is not None:
            ticket.done()

    @property
    def key(self) -> Key:
        return self.encoded.topic, self.encoded.key


@dataclass(frozen=True, slots=True)
class Resend:
    """What to send again, in this order: the failed records (they keep their slots), then the
    duplicates that make each affected key's newest record its last again."""

    failed: tuple[Pending, ...]
    republish: tuple[Pending, ...]

    @property
    def records(self) -> tuple[Pending, ...]:
        return self.failed + self.republish


def plan_resend(failed: list[Pending], acked_after: dict[Key, Pending]) -> list[Pending]:
    """What to send again after failed deliveries: the failed records in publish order, then,
    for each key with a failed record, the newest acknowledged record of that key that was
    published after its last failed one (it must be the last record of the key again)."""
    ordered = sorted(failed, key=lambda p: p.seq)
    last_failed = {p.key: p.seq for p in ordered}
    newer = [a for key, a in acked_after.items() if a.seq > last_failed.get(key, a.seq)]
    return ordered + sorted(newer, key=lambda p: p.seq)


class Ledger:
    """Every record between `admit` and its final outcome, for one bounded buffer."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_flight = 0  # slots taken: admitted records not yet acknowledged or dropped
        self.resent = 0  # failed records handed back for resending, over the ledger's life
        self._next_seq = 0
        self._failed: list[Pending] = []
        # Newest acknowledged record per key since the episode's first failure (None: no episode
        # open, or its plan already made).
        self._acked_after: dict[Key, Pending] | None = None
        self._resending = 0  # records of the current plan without an outcome yet
        self._holding: dict[int, Pending] = {}  # seq → record holding a slot, oldest first

    @property
    def has_room(self) -> bool:
        return self.in_flight < self.capacity

    @property
    def recovering(self) -> bool:
        return bool(self._failed) or self._resending > 0

    @property
    def accepting(self) -> bool:
        """A new record may be admitted: there is room and no recovery is in progress."""
        return self.has_room and not self.recovering

    @property
    def drained(self) -> bool:
        """Every record admitted so far, and every duplicate, is acknowledged (or dropped)."""
        return self.in_flight == 0 and not self.recovering

    @property
    def resend_due(self) -> bool:
        """Records failed and every other record in flight has an outcome: the failed set and
        the acknowledged-after map are final, the resend can be planned."""
        held = sum(p.slot for p in self._failed)
        return bool(self._failed) and self._resending == 0 and self.in_flight == held

    @property
    def next_seq(self) -> int:
        """The `seq` the next admitted record gets: every record admitted so far is below."""
        return self._next_seq

    def settled_below(self, seq: int) -> bool:
        """Every record admitted before `seq` was acknowledged (or dropped for good)."""
        oldest = self.oldest()
        return oldest is None or oldest.seq >= seq

    def oldest(self) -> Pending | None:
        """The oldest record not acknowledged yet (failed ones included), if any."""
        return next(iter(self._holding.values()), None)

    def oldest_age(self, now: float) -> float:
        """Seconds since the oldest unacknowledged record was admitted; 0 when none is."""
        oldest = self.oldest()
        return 0.0 if oldest is None else max(now - oldest.admitted, 0.0)

    def admit(
        self,
        record: Envelope,
        encoded: Encoded,
        received_mono: float | None,
        now: float = 0.0,
    ) -> Pending:
        """Take a slot and the next publish position for `record`, admitted at `now`."""
        assert self.accepting, "admit() without room or during a recovery"
        pending = Pending(self._next_seq, record, encoded, received_mono, now)
        self._holding[pending.seq] = pending
        self._next_seq += 1
        self.in_flight += 1
        return pending

    def acked(self, pending: Pending) -> None:
        """Kafka acknowledged `pending`: its slot is free."""
        if self._acked_after is not None:
            self._acked_after[pending.key] = pending
        self._settle(pending)

    def failed(self, pending: Pending) -> bool:
        """`pending` was not delivered and must be sent again; it keeps its slot. True when this
        failure opens a recovery episode."""
        if pending.resend:
            pending.resend = False
            self._resending -= 1
        self._failed.append(pending)
        opened = self._acked_after is None
        if opened:
            self._acked_after = {}
        return opened

    def dropped(self, pending: Pending) -> None:
        """`pending` will not be delivered (never handed over, or refused for good)."""
        self._settle(pending)

    def begin_resend(self) -> Resend:
        """Take the failed records and return what to send again. Call when `resend_due`."""
        assert self.resend_due, "begin_resend() with records still in flight"
        plan = plan_resend(self._failed, self._acked_after or {})
        failed = len(self._failed)
        self._failed, self._acked_after = [], None
        for pending in plan:
            pending.resend = True
        self._resending = len(plan)
        self.resent += failed
        return Resend(tuple(plan[:failed]), tuple(plan[failed:]))

    def _settle(self, pending: Pending) -> None:
        if pending.resend:
            pending.resend = False
            self._resending -= 1
        if pending.slot:
            pending.slot = False
            self.in_flight -= 1
            del self._holding[pending.seq]
