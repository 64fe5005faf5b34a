"""Reading the bridge's topics back: decode any record the codec wrote, print it for people.

Used by `bridge tail` and the demo. Exact decimals print as strings, timestamps as ISO-8601.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal
from typing import Any

from bridge.codec import SchemaStore, decode_single_object


def decode(store: SchemaStore, value: bytes) -> dict[str, Any]:
    """Decode one record value (single-object framing) with its writer schema."""
    return decode_single_object(store, value)


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    return value


def json_line(record: dict[str, Any], *, drop: tuple[str, ...] = ()) -> str:
    """One record as a JSON line (fields in schema order; `drop` leaves some out)."""
    shown = {k: v for k, v in record.items() if k not in drop}
    return json.dumps(to_jsonable(shown), ensure_ascii=False)
