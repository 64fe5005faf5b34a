"""Reading venue JSON exactly: decimals from the text, "-" as null, errors that name the field.

Shared by every venue module so that "what is a valid amount" is decided in one place. The
limits match the records' Avro decimal (precision 38, scale 18): an amount with more than 18
fractional digits or more than 20 integer digits cannot be stored exactly, so it is refused
(the item goes to the dead-letter topic) rather than rounded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Context, Decimal, InvalidOperation
from typing import Any, Final, NoReturn

from bridge.errors import ParseError

SCALE: Final = 18
MAX_INTEGER_DIGITS: Final = 38 - SCALE
_QUANTUM: Final = Decimal(1).scaleb(-SCALE)
_WIDE: Final = Context(prec=80)
PLACEHOLDERS: Final = frozenset({"-", ""})


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number JSON allows")


def loads_exact(text: str | bytes) -> Any:
    """`json.loads` with every fractional number as an exact `Decimal` (never a float).

    Raises `ParseError("invalid_json", …)` for anything that is not strict JSON.
    """
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        raise ParseError("invalid_json", str(exc)[:200]) from exc


def dumps_exact(value: Any) -> str:
    """Compact JSON in which a `Decimal` keeps its exact digits (json.dumps would need floats).

    Used to re-serialize one item of a larger frame for the records' `raw` field, and by the
    simulators to write venue frames whose numbers are exactly the ground truth.
    """
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} cannot be written as JSON")
        return str(value)
    if isinstance(value, Mapping):
        items = (f"{json.dumps(str(k))}:{dumps_exact(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps_exact(v) for v in value) + "]"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


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
    """Typed access to one JSON object; every error names `path.field`."""

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
        got = _kind(self.obj.get(name))
        return ParseError("invalid_field", f"{self.path}.{name}: expected {expected}, got {got}")

    def req_str(self, name: str) -> str:
        value = self.opt_str(name)
        if value is None:
            raise self._missing(name)
        return value

    def opt_str(self, name: str) -> str | None:
        """A string, or an id the venue sometimes sends as a number; "-" and "" are null."""
        value = self.obj.get(name)
        if _absent(value):
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, int | Decimal) and not isinstance(value, bool):
            return str(value)
        raise self._bad(name, "a string")

    def req_decimal(self, name: str) -> Decimal:
        value = self.opt_decimal(name)
        if value is None:
            raise self._missing(name)
        return value

    def opt_decimal(self, name: str) -> Decimal | None:
        """A JSON number or a decimal string (Satori sends amounts as strings)."""
        value = self.obj.get(name)
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
            try:
                parsed = Decimal(value.strip())
            except InvalidOperation:
                raise self._bad(name, "a decimal string") from None
            return to_amount(parsed, path)
        raise self._bad(name, "a number")

    def req_int(self, name: str) -> int:
        value = self.opt_int(name)
        if value is None:
            raise self._missing(name)
        return value

    def opt_int(self, name: str) -> int | None:
        """An integer (ids, epoch milliseconds, versions). "123" strings are accepted too."""
        value = self.obj.get(name)
        if _absent(value):
            return None
        number: int | None = None
        if isinstance(value, bool):
            number = None
        elif isinstance(value, int):
            number = value
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
            number = int(value.strip())
        elif isinstance(value, Decimal) and value.is_finite() and value == value.to_integral():
            number = int(value)
        if number is None or not -(2**63) <= number < 2**63:
            raise self._bad(name, "a 64-bit integer")
        return number

    def opt_bool(self, name: str) -> bool | None:
        value = self.obj.get(name)
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
        return f"the number {value}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
