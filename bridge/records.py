"""The canonical record model: one frozen dataclass per topic, shared by every venue.

Field names here are ours (the venue's own names stay in the venue modules and in `raw`). Each
dataclass mirrors its Avro schema in `schemas/<topic>/` field for field; `tests/unit/test_codec.py`
checks that they agree. Amounts are `Decimal` parsed from the JSON text, never floats.
Times: `event_time` is the venue's own time in epoch milliseconds (None when the venue gives
none), `received_at` is our wall-clock receive time in epoch microseconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Final

import msgspec

from bridge.errors import DeadLetterReason

SOURCE_STREAM: Final = "stream"
SOURCE_SNAPSHOT: Final = "snapshot"

# Canonical order sides and statuses. Strings, not Avro enums, so that a new value never breaks
# an old reader; the venue's own value always travels beside them (`side_raw`, `status_raw`).
SIDE_BUY: Final = "buy"
SIDE_SELL: Final = "sell"
SIDE_UNKNOWN: Final = "unknown"
ORDER_STATUSES: Final = (
    "new",  # accepted, nothing filled yet
    "open",  # working at the venue, nothing filled yet
    "partially_filled",  # some quantity filled (final only when `is_final`)
    "filled",  # fully filled, final
    "cancel_pending",  # a cancel was requested, not yet confirmed
    "canceled",  # final
    "expired",  # final
    "rejected",  # final: the venue refused or failed the order
    "unknown",  # a venue status this version does not know; see `status_raw`
)

# A dead-letter record keeps at most this much of the raw frame, so that it fits the broker's
# default message.max.bytes and the producer's max_request_size (1 MiB) with a wide margin.
# Its detail then says so, with the full length and SHA-256.
DEADLETTER_MAX_RAW: Final = 512 * 1024

_EVENT_NAMESPACE: Final = uuid.UUID("6f1c1a4e-0b7c-5d35-9a4e-3c1f5b2f8e10")


_NAMESPACE_BYTES: Final = _EVENT_NAMESPACE.bytes
_COMPACT_JSON: Final = json.JSONEncoder(separators=(",", ":"))
_ID_JSON: Final = msgspec.json.Encoder()  # json's bytes for printable ASCII (see below)
# RFC 4122 variant: the top two bits of the clock_seq_hi nibble are 10.
_VARIANT: Final = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def make_event_id(*parts: object) -> str:
    """Deterministic id of one venue fact: the same fact (from a push or a snapshot) gives the
    same id, so consumers can deduplicate. UUIDv5 over the parts as a JSON list (unambiguous
    whatever the parts contain); decimals are normalized first, so "2.50" from a snapshot and
    2.5 from a push are the same fact.

    RFC 4122 §4.3 written out (SHA-1 of namespace + name, version and variant bits set): the
    same bytes as `uuid.uuid5`, in a quarter of the time (tests/unit/test_event_id.py holds
    them equal). The name is `json.dumps`'s text: msgspec writes the same bytes when they are
    printable ASCII (json escapes everything else, DEL included, as \\uXXXX; msgspec writes
    UTF-8), else json writes it.
    """
    listed = [p if type(p) is str else _id_part(p) for p in parts]
    try:
        name = _ID_JSON.encode(listed)
    except UnicodeEncodeError:  # a lone surrogate: json escapes it
        name = b"\x80"
    if not name.isascii() or b"\x7f" in name:
        name = _COMPACT_JSON.encode(listed).encode()
    h = hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def _id_part(part: object) -> str | None:
    if part is None:
        return None
    if isinstance(part, Decimal):
        return format(part.normalize(), "f")
    return str(part)


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """Fields every record carries, dead letters included."""

    TOPIC: ClassVar[str]

    venue: str
    stream: str
    received_at: int
    source: str
    event_id: str

    def key(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, slots=True, kw_only=True)
class VenueRecord(Envelope):
    """A record built from one venue item; `raw` is that item's original JSON text."""

    account: str | None
    event_time: int | None
    raw: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Balance(VenueRecord):
    """State of one asset in one account (a full state, not a delta: safe to compact)."""

    TOPIC: ClassVar[str] = "balances"

    asset: str
    available: Decimal | None
    total: Decimal | None
    frozen: Decimal | None
    pending: Decimal | None
    pending_transfer: Decimal | None
    credit: Decimal | None
    change: Decimal | None  # the delta that caused this push, where the venue says (Satori)
    version: int | None  # the venue's monotonic version of this balance (Satori `logId`)
    # Since schemas/balances/v2. Defaulted so venues that have no such field need no change.
    deposit_address: str | None = None

    def key(self) -> str:
        return f"{self.venue}|{self.account or ''}|{self.asset}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Order(VenueRecord):
    """State of one order after one venue event. Quantities are cumulative unless `last_`."""

    TOPIC: ClassVar[str] = "orders"

    order_id: str
    client_order_id: str | None
    parent_order_id: str | None
    symbol: str
    base_asset: str | None
    quote_asset: str | None
    side: str
    side_raw: str | None
    order_type: str | None
    status: str
    status_raw: str
    is_final: bool
    change_type: str | None
    quantity: Decimal | None
    price: Decimal | None
    filled_quantity: Decimal | None
    filled_quote: Decimal | None
    last_fill_quantity: Decimal | None
    average_price: Decimal | None
    remaining_quantity: Decimal | None
    fee: Decimal | None
    fee_asset: str | None
    is_taker: bool | None
    reduce_only: bool | None
    leverage: int | None
    created_at: int | None

    def key(self) -> str:
        return f"{self.venue}|{self.account or ''}|{self.order_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Position(VenueRecord):
    """State of one derivatives position after one venue event."""

    TOPIC: ClassVar[str] = "positions"

    position_id: str
    symbol: str
    side: str
    side_raw: str | None
    change_type: str | None
    is_open: bool
    quantity: Decimal | None
    change_quantity: Decimal | None
    closable_quantity: Decimal | None
    entry_price: Decimal | None
    margin: Decimal | None
    margin_call_amount: Decimal | None
    margin_mode: str | None

    def key(self) -> str:
        return f"{self.venue}|{self.account or ''}|{self.position_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Trade(VenueRecord):
    """One trade print (a market trade, or the account's own fill where the venue says so)."""

    TOPIC: ClassVar[str] = "trades"

    trade_id: str
    symbol: str
    price: Decimal
    quantity: Decimal
    amount: Decimal | None
    side: str
    side_raw: str | None
    order_id: str | None
    fee: Decimal | None
    fee_asset: str | None
    is_taker: bool | None

    def key(self) -> str:
        return f"{self.venue}|{self.symbol}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditBalance(VenueRecord):
    """Credit-line state of one account; values in `asset` (USD at Aquanow)."""

    TOPIC: ClassVar[str] = "credit"

    asset: str
    adjusted_mtm: Decimal | None
    ltv: Decimal | None
    unutilized_credit: Decimal | None
    credit_limit: Decimal | None
    created_at: int | None

    def key(self) -> str:
        return f"{self.venue}|{self.account or ''}|{self.asset}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter(Envelope):
    """A frame, item or record the bridge could not publish as a fact, with the reason.

    `raw` is bytes: the frame may not even be UTF-8.
    """

    TOPIC: ClassVar[str] = "deadletter"

    reason: str
    detail: str
    raw: bytes

    def key(self) -> str:
        return f"{self.venue}|{self.stream}"


def build_dead_letter(
    *,
    venue: str,
    stream: str,
    received_at: int,
    source: str,
    reason: DeadLetterReason,
    detail: str,
    raw: bytes,
) -> DeadLetter:
    """The dead-letter record for `raw`; its id is stable for the same bytes and reason."""
    digest = hashlib.sha256(raw).hexdigest()
    if len(raw) > DEADLETTER_MAX_RAW:
        detail = f"{detail} (raw cut from {len(raw)} bytes, sha256 {digest})"
        raw = raw[:DEADLETTER_MAX_RAW]
    return DeadLetter(
        venue=venue,
        stream=stream,
        received_at=received_at,
        source=source,
        event_id=make_event_id(venue, stream, "deadletter", reason, digest),
        reason=reason,
        detail=detail,
        raw=raw,
    )


SOURCE_BRIDGE: Final = "bridge"  # records the bridge writes about itself (state, control)
SOURCE_OPERATOR: Final = "operator"  # control records an operator wrote (`bridge resync`)


@dataclass(frozen=True, slots=True, kw_only=True)
class StateEntry(Envelope):
    """One line of a stream's memory on the checkpoint topic (bridge/checkpoint.py): what was
    last published and acknowledged for one state key, or (`topic` "meta") the stream's
    restart facts. Private to the bridge; see schemas/state/v1.avsc."""

    TOPIC: ClassVar[str] = "state"

    topic: str
    record_key: str
    account: str | None
    digest: str | None
    open: bool
    event_time: int | None
    record: bytes | None
    versions: dict[str, int]
    facts: dict[str, str]
    last_order_time: int | None

    def key(self) -> str:
        return f"{self.stream}|{self.topic}|{self.record_key}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StateTombstone(Envelope):
    """Deletes one state key's entry from the checkpoint topic: a null value under its key,
    which compaction then drops (bridge/checkpoint.py, finished orders and positions)."""

    TOPIC: ClassVar[str] = "state"

    topic: str
    record_key: str

    def key(self) -> str:
        return f"{self.stream}|{self.topic}|{self.record_key}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlRecord(Envelope):
    """Gap markers, heartbeats and operator signals of one stream (schemas/control/v1.avsc)."""

    TOPIC: ClassVar[str] = "control"

    kind: str
    trigger: str | None = None
    gap_start: int | None = None  # epoch microseconds
    gap_end: int | None = None
    records_corrected: int | None = None
    drift: int | None = None
    request_id: str | None = None
    last_record_at: int | None = None
    detail: str | None = None

    def key(self) -> str:
        return f"{self.venue}|{self.stream}"


Record = Balance | Order | Position | Trade | CreditBalance | DeadLetter
RECORD_TYPES: Final[tuple[type[Envelope], ...]] = (
    Balance,
    Order,
    Position,
    Trade,
    CreditBalance,
    DeadLetter,
    StateEntry,
    ControlRecord,
)


def _fast_init(cls: type[Envelope]) -> None:
    """Give a record dataclass an `__init__` that sets its fields through the slots' own
    descriptors. The frozen dataclass's sets each through `object.__setattr__`: 4.6 µs for an
    Order's 34 fields against 2.5 µs, on every record's path (tests/bench breakdown,
    `record_init_us`). Same keyword-only signature and defaults; instances stay frozen."""
    fields = dataclasses.fields(cls)
    setters: dict[str, Any] = {}
    params, body = [], []
    for f in fields:
        assert f.default_factory is dataclasses.MISSING, f"{cls.__name__}.{f.name}"
        owner = next(c for c in cls.__mro__ if f.name in c.__dict__.get("__slots__", ()))
        setters[f"_set_{f.name}"] = owner.__dict__[f.name].__set__
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            setters[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _set_{f.name}(self, {f.name})\n")
    source = f"def __init__(self, *, {', '.join(params)}):\n{''.join(body)}"
    exec(compile(source, f"<record {cls.__name__}>", "exec"), setters)  # noqa: S102
    init = setters["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    setattr(cls, "__init__", init)  # noqa: B010 (mypy refuses assigning a method)


for _record_type in (*RECORD_TYPES, StateTombstone):
    _fast_init(_record_type)

# Topics the bridge's own consumers read, not a contract with anyone else: always encoded
# with single-object framing and never registered in a schema registry.
PRIVATE_TOPICS: Final = frozenset({StateEntry.TOPIC})
