"""Reading venue JSON exactly and safely: decimals from the text, "-" as null, errors that name
the field, and limits that hold before anything is converted.

Shared by every venue module so that "what is a valid amount" is decided in one place. The
limits match the records' Avro decimal (precision 38, scale 18): an amount with more than 18
fractional digits or more than 20 integer digits cannot be stored exactly, so it is refused
(the item goes to the dead-letter topic) rather than rounded.

A frame is hostile input: `loads_exact` holds these properties whatever the decoder (the fuzz
tests, tests/unit/test_fuzz_frames.py, pin them down for any replacement):
- nesting deeper than `MAX_DEPTH` is refused before decoding, so no frame depends on the
  interpreter's recursion limit (a dependency raised it to 100,000 and the C decoder then
  overflowed the C stack: SIGSEGV);
- a number longer than `MAX_NUMBER_CHARS` or with an exponent beyond ±`MAX_EXPONENT` is never
  converted (`int(Decimal("1e1000000"))` blocks the event loop for ~47 s; `1e9999999999999999999`
  makes `Decimal` raise): it decodes as `OutOfRange`, which a field read refuses naming the field
  and `dumps_exact` writes back as its text;
- bytes must be valid in their JSON encoding (UTF-8 on the wire), and a lone surrogate
  (`"\\ud800"`) anywhere is refused: no string that cannot be encoded again gets through;
- a duplicate key in any object is refused (RFC 8259 §4: names SHOULD be unique; last-wins
  would silently pick one of two values).
Each refusal is a `ParseError("invalid_json", …)`.
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Mapping
from decimal import Context, Decimal
from itertools import accumulate
from typing import Any, Final, NoReturn

from bridge.errors import ParseError

SCALE: Final = 18
MAX_INTEGER_DIGITS: Final = 38 - SCALE
_QUANTUM: Final = Decimal(1).scaleb(-SCALE)
# Every number that passes MAX_NUMBER_CHARS quantizes to SCALE places within this precision.
_WIDE: Final = Context(prec=MAX_INTEGER_DIGITS + 64)
PLACEHOLDERS: Final = frozenset({"-", ""})

MAX_DEPTH: Final = 32  # venue frames nest 3 or 4 levels
MAX_NUMBER_CHARS: Final = 64  # a decimal(38, 18) needs 40 ("-" + 20 + "." + 18)
MAX_EXPONENT: Final = 64

_DEPTH_STEPS: Final = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1, +1, -1, -1
_NOT_BRACKETS: Final = bytes(set(range(256)) - set(b"[{]}"))
_DEEP_RUN: Final = b"\x01" * (MAX_DEPTH + 1)
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
DECIMAL_TEXT: Final = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT_TEXT: Final = re.compile(r"-?[0-9]{1,19}")


class OutOfRange:
    """A JSON number beyond the limits, kept as its text and never converted."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutOfRange) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"OutOfRange({self.text[:40]!r})"

    def __str__(self) -> str:
        return self.text if len(self.text) <= 40 else self.text[:40] + "…"


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number JSON allows")


def bounded(text: str) -> bool:
    """A number's text is short enough, and its exponent small enough, to convert safely."""
    if len(text) > MAX_NUMBER_CHARS:
        return False
    cut = text.find("e")
    if cut < 0:
        cut = text.find("E")
    return cut < 0 or -MAX_EXPONENT <= int(text[cut + 1 :]) <= MAX_EXPONENT


def _parse_float(text: str) -> Decimal | OutOfRange:
    if len(text) <= 32 and "e" not in text and "E" not in text:
        return Decimal(text)  # the usual amount: short, no exponent
    return Decimal(text) if bounded(text) else OutOfRange(text)


def _parse_int(text: str) -> int | OutOfRange:
    return int(text) if len(text) <= MAX_NUMBER_CHARS else OutOfRange(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


_DECODER: Final = json.JSONDecoder(
    parse_float=_parse_float,
    parse_int=_parse_int,
    parse_constant=_reject_constant,
    object_pairs_hook=_object,
)


def loads_exact(data: str | bytes) -> Any:
    """Strict JSON within the limits above, every fractional number an exact `Decimal` (never
    a float). Raises `ParseError("invalid_json", …)` for anything else."""
    text = _text(data)
    if _too_deep(text):
        raise ParseError("invalid_json", f"nested deeper than {MAX_DEPTH} levels")
    try:
        value = _DECODER.decode(text)
    except _DuplicateKey as exc:
        raise ParseError("invalid_json", f"duplicate key {exc.key[:40]!r}") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError included
        raise ParseError("invalid_json", str(exc)[:200]) from exc
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        lone = _lone_surrogate(value)
        if lone is not None:
            raise ParseError("invalid_json", f"lone surrogate in the string {lone[:40]!r}")
    return value


def _text(data: str | bytes) -> str:
    """The frame as text: bytes strictly decoded in their JSON encoding (RFC 8259 §8.1)."""
    if isinstance(data, bytes | bytearray):
        encoding = json.detect_encoding(data)
        try:
            return bytes(data).decode(encoding)
        except UnicodeDecodeError as exc:
            detail = f"not valid {encoding}: {exc.reason} at byte {exc.start}"
            raise ParseError("invalid_json", detail) from None
    if not data.isascii():
        try:
            data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ParseError("invalid_json", f"lone surrogate at character {exc.start}") from None
    return data


def _too_deep(text: str) -> bool:
    """Nested deeper than MAX_DEPTH. Counting the opening brackets settles almost every frame;
    otherwise the depth is the highest running count of the brackets outside strings, all at
    C speed: escaped backslashes and quotes dropped, the text split at its quotes (the even
    parts are outside strings), the brackets kept as +1/-1 and summed. Where the text is not
    JSON the split may be off, but only after the point where the decoder would stop."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    bare = text.replace("\\\\", "").replace('\\"', "")
    outside = "".join(bare.split('"')[::2])
    steps = outside.encode("utf-8", "surrogatepass").translate(_DEPTH_STEPS, _NOT_BRACKETS)
    if _DEEP_RUN in steps:
        return True
    return max(accumulate(array("b", steps)), default=0) > MAX_DEPTH


def _lone_surrogate(value: Any) -> str | None:
    """The first string (key or value) holding a lone surrogate, if any. A valid pair decodes
    to one character, so any surrogate left is alone."""
    if isinstance(value, str):
        return value if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _lone_surrogate(key) or _lone_surrogate(item)
            if found is not None:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _lone_surrogate(item)
            if found is not None:
                return found
    return None


def dumps_exact(value: Any) -> str:
    """Compact JSON in which a `Decimal` keeps its exact digits (json.dumps would need floats)
    and an `OutOfRange` number its text.

    Used to re-serialize one item of a larger frame for the records' `raw` field, and by the
    simulators to write venue frames whose numbers are exactly the ground truth.
    """
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} cannot be written as JSON")
        return str(value)
    if isinstance(value, OutOfRange):
        return value.text
    if isinstance(value, Mapping):
        items = (f"{json.dumps(str(k))}:{dumps_exact(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps_exact(v) for v in value) + "]"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _fits(value: Decimal) -> bool:
    """`value` is finite with at most SCALE places and MAX_INTEGER_DIGITS integer digits, so
    `to_amount` returns it unchanged. Read from its text, plain notation when the exponent is
    ≤ 0 and the value not tiny (half the cost of `as_tuple`); any other text gets `to_amount`."""
    if not value.is_finite():
        return False
    text = str(value)
    if "E" in text:
        return False
    dot = text.find(".")
    return (dot < 0 or len(text) - dot <= SCALE + 1) and value.adjusted() < MAX_INTEGER_DIGITS


def to_amount(value: Decimal, path: str) -> Decimal:
    """Check that `value` fits decimal(38, 18) exactly; return it with at most 18 places."""
    if not value.is_finite():
        raise ParseError("invalid_field", f"{path}: {value} is not a finite number")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -SCALE:
        quantized = value.quantize(_QUANTUM, context=_WIDE)
        if quantized != value:
            raise ParseError(
                "invalid_field", f"{path}: {value} has more than {SCALE} decimal places"
            )
        value = quantized
    if value and value.adjusted() >= MAX_INTEGER_DIGITS:
        raise ParseError(
            "invalid_field", f"{path}: {value} has more than {MAX_INTEGER_DIGITS} integer digits"
        )
    return value


class Fields:
    """Typed access to one JSON object; every error names `path.field`. A value of the wrong
    JSON type is an error, never converted: a number where a string is documented must not
    become an asset called `1E+400`."""

    __slots__ = ("obj", "path")

    def __init__(self, obj: object, path: str) -> None:
        if not isinstance(obj, dict):
            raise ParseError("invalid_field", f"{path}: expected an object, got {_kind(obj)}")
        self.obj: dict[str, Any] = obj
        self.path = path

    def child(self, name: str) -> Fields:
        return Fields(self.obj.get(name), f"{self.path}.{name}")

    def has(self, name: str) -> bool:
        return not _absent(self.obj.get(name))

    def _missing(self, name: str) -> ParseError:
        return ParseError("missing_field", f"{self.path}.{name} is required")

    def _bad(self, name: str, expected: str) -> ParseError:
        value, path = self.obj.get(name), f"{self.path}.{name}"
        if isinstance(value, OutOfRange) and expected != "a string":
            return ParseError("invalid_field", f"{path}: a number out of range ({value})")
        return ParseError("invalid_field", f"{path}: expected {expected}, got {_kind(value)}")

    def req_str(self, name: str) -> str:
        value = self.opt_str(name)
        if value is None:
            raise self._missing(name)
        return value

    def opt_str(self, name: str) -> str | None:
        """A string; "-" and "" are null."""
        value = self.obj.get(name)
        if type(value) is str:  # the usual case first: the same answer, sooner
            return None if value in PLACEHOLDERS else value
        if _absent(value):
            return None
        if isinstance(value, str):
            return value
        raise self._bad(name, "a string")

    def opt_id(self, name: str) -> str | None:
        """An id the venue sends as a string or as an integer (Satori's `entrustId`)."""
        value = self.obj.get(name)
        if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
            return str(value)
        if _absent(value) or isinstance(value, str):
            return self.opt_str(name)
        raise self._bad(name, "a string or an integer")

    def req_decimal(self, name: str) -> Decimal:
        value = self.opt_decimal(name)
        if value is None:
            raise self._missing(name)
        return value

    def opt_decimal(self, name: str) -> Decimal | None:
        """A JSON number or a decimal string (Satori sends amounts as strings)."""
        value = self.obj.get(name)
        if type(value) is Decimal and _fits(value):  # the usual case first
            return value
        if _absent(value):
            return None
        path = f"{self.path}.{name}"
        if isinstance(value, bool):
            raise self._bad(name, "a number")
        if isinstance(value, int):
            return to_amount(Decimal(value), path)
        if isinstance(value, Decimal):
            return to_amount(value, path)
        if isinstance(value, str):
            text = value.strip()
            if not DECIMAL_TEXT.fullmatch(text):
                raise self._bad(name, "a decimal string")
            if not bounded(text):
                raise ParseError("invalid_field", f"{path}: a number out of range ({text[:40]})")
            return to_amount(Decimal(text), path)
        raise self._bad(name, "a number")

    def req_int(self, name: str) -> int:
        value = self.opt_int(name)
        if value is None:
            raise self._missing(name)
        return value

    def opt_int(self, name: str) -> int | None:
        """An integer (ids, epoch milliseconds, versions). "123" strings are accepted too."""
        value = self.obj.get(name)
        if type(value) is int and -(2**63) <= value < 2**63:  # the usual case first
            return value
        if _absent(value):
            return None
        number: int | None = None
        if isinstance(value, bool):
            number = None
        elif isinstance(value, int):
            number = value
        elif isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
            number = int(value.strip())
        elif isinstance(value, Decimal) and value.is_finite() and value == value.to_integral():
            number = int(value)  # bounded by the decoder: at most 64 digits, exponent ±64
        if number is None or not -(2**63) <= number < 2**63:
            raise self._bad(name, "a 64-bit integer")
        return number

    def opt_bool(self, name: str) -> bool | None:
        value = self.obj.get(name)
        if type(value) is bool:
            return value
        if _absent(value):
            return None
        if isinstance(value, bool):
            return value
        raise self._bad(name, "true or false")


def _absent(value: object) -> bool:
    """Null, or one of the placeholders venues put in place of a value ("-" at Aquanow)."""
    return value is None or (isinstance(value, str) and value in PLACEHOLDERS)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, int | Decimal):
        return f"the number {str(value)[:40]}"
    if isinstance(value, OutOfRange):
        return f"a number out of range ({value})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
