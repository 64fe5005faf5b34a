"""What the simulators need of the venues' wire formats, written from the venues' docs
(docs/venues.md), not taken from the bridge's venue modules.

The simulators stand in for the venues in every end-to-end test: if they verified signatures
with the bridge's own signing code, a signing bug would pass every test. So they verify with
this module, which implements each rule as the docs state it, and the simulator self-tests
(tests/loop/test_simulators.py) hold it to the docs' published signing vectors.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from eth_hash.auto import keccak
from eth_keys.datatypes import Signature
from eth_keys.exceptions import BadSignature
from eth_utils.exceptions import ValidationError

# -- Aquanow (docs/venues.md part 1) -----------------------------------------------------
# §1.3: the reporting feed's channels.
AQUANOW_CHANNELS: Final = frozenset({"executionReport", "parentOrderReport", "balanceReport"})


def js_stringify(value: Mapping[str, str]) -> str:
    """`JSON.stringify` of a flat object of strings: keys in insertion order, no spaces,
    non-ASCII left as is (JavaScript does not escape it)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def aquanow_ws_signed_text(action: str, channel: str, nonce: str) -> str:
    """§1.2: `JSON.stringify({type, channel, nonce})`, keys in exactly that order."""
    return js_stringify({"type": action, "channel": channel, "nonce": nonce})


def aquanow_rest_signed_text(method: str, path: str, nonce: str) -> str:
    """§1.2: `JSON.stringify({httpMethod, path, nonce})`; `path` without host or query."""
    return js_stringify({"httpMethod": method, "path": path, "nonce": nonce})


def aquanow_signature(secret: str, text: str) -> str:
    """§1.2: HMAC-SHA384 keyed with the UTF-8 secret, lowercase hex (96 characters)."""
    return hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha384).hexdigest()


# -- Satori (docs/venues.md part 2) ------------------------------------------------------
# §2.3: the events and the parameter that scopes each one (echoed in its ack).
SATORI_SCOPE: Final = {
    "api_account": "symbol",
    "api_entrust": "pair",
    "api_position": "pair",
    "api_trade": "pair",
}
SATORI_PERIODS: Final = frozenset(
    {"1MIN", "3MIN", "5MIN", "15MIN", "30MIN", "1HOUR", "4HOUR", "8HOUR", "12HOUR", "1DAY"}
)
# §2.7: the private queries (all POST, parameters in the signed query string).
SATORI_BALANCE: Final = "/api/third/hot/order/balance"
SATORI_CURRENT_ORDERS: Final = "/api/third/order/selectContractCurrentEntrustList"
SATORI_POSITIONS: Final = "/api/third/hot/order/selectContractPositionList"
SATORI_FILLS: Final = "/api/third/order/selectContractMatchPairList"
SATORI_QUERY_ORDER: Final = "/api/third/order/queryOrder"
# §2.2 step 4: "0x" + r (32 bytes) + s (32 bytes) + v (27 or 28), lowercase hex.
_SIGNATURE: Final = re.compile(r"0x[0-9a-f]{128}(1b|1c)")


class BadSatoriSignature(ValueError):
    """The signature is malformed or recovers to no key."""


def personal_sign_digest(message: str) -> bytes:
    """§2.2 steps 1-2 (EIP-191 `personal_sign`): keccak256 of
    `"\\x19Ethereum Signed Message:\\n" + <decimal byte length> + message`."""
    data = message.encode("utf-8")
    return keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode("ascii") + data)


def satori_signer(message: str, signature: str) -> str:
    """The checksummed address of the key that made `signature` over `message` (§2.2)."""
    if not _SIGNATURE.fullmatch(signature):
        raise BadSatoriSignature("not 0x + r + s + v (v 1b/1c), lowercase hex")
    raw = bytes.fromhex(signature[2:])
    r, s, v = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big"), raw[64] - 27
    try:
        public = Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(
            personal_sign_digest(message)
        )
    except (BadSignature, ValidationError) as exc:
        raise BadSatoriSignature(str(exc)) from exc
    return str(public.to_checksum_address())


# -- JSON with exact decimals --------------------------------------------------------------
def json_text(value: Any) -> str:
    """Compact JSON in which a `Decimal` is written with exactly its digits, so a frame's
    numbers are the simulator's ground truth (`json.dumps` would go through a float)."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} has no JSON form")
        return str(value)
    if isinstance(value, Mapping):
        return (
            "{" + ",".join(f"{json.dumps(str(k))}:{json_text(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ",".join(map(json_text, value)) + "]"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
