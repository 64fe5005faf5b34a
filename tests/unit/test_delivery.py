"""The delivery ledger without a producer: publish order, buffer slots, outcomes and the resend
plan (`bridge/delivery.py`). A model of the broker's log checks the sink's promise: nothing
lost, and each key's newest record is its last again after any pattern of failures."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.codec import Encoded
from bridge.delivery import Ledger, Pending, plan_resend
from tests import records as make

pytestmark = pytest.mark.unit

RECORD = make.balance()


def encoded(key: str, topic: str = "balances") -> Encoded:
    return Encoded(topic, key.encode(), b"", [])


def admit(ledger: Ledger, *keys: str) -> list[Pending]:
    return [ledger.admit(RECORD, encoded(key), None) for key in keys]


def test_plan_resend_keeps_order_and_restores_the_newest_record_per_key() -> None:
    def pending(seq: int, key: str) -> Pending:
        return Pending(seq, RECORD, encoded(key, "orders"), None)

    failed = [pending(5, "b"), pending(3, "a"), pending(4, "a")]
    acked = {
        ("orders", b"a"): pending(7, "a"),  # newer than a's failures: must be last again
        ("orders", b"b"): pending(2, "b"),  # older than b's failure: the resend is newest
        ("orders", b"c"): pending(6, "c"),  # no failure for c: nothing to do
    }
    plan = plan_resend(failed, acked)
    assert [(p.seq, p.key[1]) for p in plan] == [(3, b"a"), (4, b"a"), (5, b"b"), (7, b"a")]
    assert plan_resend([], acked) == []


def test_failed_records_are_resent_in_publish_order_whatever_order_they_failed_in() -> None:
    ledger = Ledger(capacity=10)
    a1, b1, c1, a2 = admit(ledger, "a", "b", "c", "a")
    assert [p.seq for p in (a1, b1, c1, a2)] == [0, 1, 2, 3]
    assert ledger.failed(c1), "the first failure opens a recovery episode"
    assert not ledger.failed(a1)
    assert not ledger.resend_due, "b1 and a2 have no outcome yet"
    ledger.acked(b1)
    assert not ledger.resend_due
    assert not ledger.failed(a2)
    assert ledger.resend_due
    resend = ledger.begin_resend()
    assert resend.failed == (a1, c1, a2)
    assert resend.republish == ()
    assert ledger.resent == 3


def test_the_newest_record_acknowledged_after_a_failure_is_republished_last() -> None:
    ledger = Ledger(capacity=10)
    a1, b1, a2, a3, b2, c1 = admit(ledger, "a", "b", "a", "a", "b", "c")
    ledger.acked(b1)  # before any failure: not remembered
    ledger.failed(a1)
    ledger.acked(a2)
    ledger.acked(a3)  # a's newest: after a1's resend it must be a's last record again
    ledger.acked(b2)  # b had no failure: nothing to restore
    ledger.acked(c1)
    resend = ledger.begin_resend()
    assert resend.failed == (a1,)
    assert resend.republish == (a3,)
    assert resend.records == (a1, a3)


def test_slots_under_failures_failed_keep_theirs_duplicates_take_none_all_return() -> None:
    ledger = Ledger(capacity=3)
    a1, b1, a2 = admit(ledger, "a", "b", "a")
    assert ledger.in_flight == 3
    assert not ledger.has_room
    assert not ledger.accepting
    ledger.failed(a1)
    ledger.acked(b1)
    assert ledger.in_flight == 2, "a failed record keeps its slot"
    assert ledger.has_room
    assert not ledger.accepting, "nothing new is admitted during a recovery"
    ledger.acked(a2)
    assert ledger.in_flight == 1
    resend = ledger.begin_resend()
    assert resend.records == (a1, a2)
    assert ledger.in_flight == 1, "planning takes no slot for the duplicate"
    ledger.acked(a1)
    assert ledger.in_flight == 0
    assert not ledger.drained, "the duplicate restoring a's order is still on its way"
    assert not ledger.accepting
    ledger.acked(a2)
    assert ledger.in_flight == 0, "an acknowledged duplicate frees no slot it never held"
    assert ledger.drained
    assert ledger.accepting


def test_dropped_records_free_their_slot_and_are_not_resent() -> None:
    ledger = Ledger(capacity=2)
    a1, b1 = admit(ledger, "a", "b")
    ledger.dropped(a1)  # e.g. refused for good (topic authorization)
    assert ledger.in_flight == 1
    ledger.dropped(b1)
    ledger.dropped(b1)  # a second report of the same record changes nothing
    assert ledger.in_flight == 0
    assert ledger.drained


def test_a_resend_that_fails_again_is_planned_again() -> None:
    ledger = Ledger(capacity=4)
    a1, a2 = admit(ledger, "a", "a")
    ledger.failed(a1)
    ledger.acked(a2)
    first = ledger.begin_resend()
    assert first.records == (a1, a2)
    assert ledger.failed(a1), "a new episode: its own acknowledged-after map"
    assert not ledger.resend_due, "a2's resend has no outcome yet"
    ledger.acked(a2)
    second = ledger.begin_resend()
    assert second.records == (a1, a2)
    ledger.acked(a1)
    ledger.acked(a2)
    assert ledger.in_flight == 0
    assert ledger.drained


# Records of a few keys, each acknowledged or failed on its first send. Outcomes of one key
# arrive in publish order (one partition), interleaved in any way with other keys' outcomes.
KEYS = st.sampled_from("abc")
RUNS = st.lists(st.tuples(KEYS, st.booleans()), min_size=1, max_size=40)


@given(RUNS, st.randoms(use_true_random=False))
def test_any_failures_end_with_nothing_lost_the_newest_last_and_every_slot_back(
    run: list[tuple[str, bool]], rng: random.Random
) -> None:
    ledger = Ledger(capacity=len(run))
    pendings = admit(ledger, *(key for key, _ in run))
    ok = {p.seq: delivered for p, (_, delivered) in zip(pendings, run, strict=True)}
    queues: dict[str, list[Pending]] = defaultdict(list)
    for p in pendings:
        queues[p.key[1].decode()].append(p)
    log: list[Pending] = []  # the broker's log, in ack order
    while any(queues.values()):
        key = rng.choice(sorted(k for k, q in queues.items() if q))
        p = queues[key].pop(0)
        if ok[p.seq]:
            ledger.acked(p)
            log.append(p)
        else:
            ledger.failed(p)
        assert 0 <= ledger.in_flight <= ledger.capacity
    if not all(ok.values()):
        assert ledger.resend_due
        for p in ledger.begin_resend().records:
            ledger.acked(p)
            log.append(p)
    assert {p.seq for p in log} == set(ok), "nothing lost"
    last: dict[bytes, int] = {}
    for p in log:
        last[p.key[1]] = p.seq
    newest = {p.key[1]: p.seq for p in pendings}
    assert last == newest, "each key's newest record is its last one"
    assert ledger.in_flight == 0
    assert ledger.drained
    assert ledger.accepting
