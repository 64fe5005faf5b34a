"""Satori's signatures (venues.md §2.2): EIP-191 `personal_sign` with the API wallet's key.

Subscriptions sign `str(timestamp)`; REST calls sign the sorted, unencoded query string (or the
compact JSON body). The only module of the bridge that imports eth-account.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Final

# py_ecc (imported by eth-account) raises the process's recursion limit to 100,000 at import.
# With that limit, a deeply nested JSON frame overflows the C stack inside the json decoder
# (a SIGSEGV) instead of raising RecursionError. Nothing we call needs it: put it back.
_LIMIT: Final = sys.getrecursionlimit()
from eth_account import Account  # noqa: E402
from eth_account.messages import encode_defunct  # noqa: E402

sys.setrecursionlimit(_LIMIT)

from bridge.venues.satori import SCOPE  # noqa: E402

SIGN_TYPE: Final = "2"  # secp256k1 (§2.2: "just chose the 2")


def sign(private_key: str, message: str) -> str:
    """EIP-191 personal_sign of `message`: "0x" + r + s + v with v = 27/28 (§2.2)."""
    signature = Account.sign_message(encode_defunct(text=message), private_key=private_key)
    hexed = str(signature.signature.hex())
    return hexed if hexed.startswith("0x") else "0x" + hexed


def recover_address(message: str, signature: str) -> str:
    """The wallet address that produced `signature` over `message` (checksummed)."""
    return str(Account.recover_message(encode_defunct(text=message), signature=signature))


def wallet_address(private_key: str) -> str:
    return str(Account.from_key(private_key).address)


def build_query_string(params: Mapping[str, object]) -> str:
    """The REST signing string: keys sorted, `k=v` joined by `&`, unencoded (§2.2)."""
    return "&".join(f"{key}={params[key]}" for key in sorted(params))


def build_rest_headers(api_key: str, private_key: str, signed: str) -> dict[str, str]:
    """Headers for a signed REST call; `signed` is the query string or compact JSON body."""
    return {
        "APIKEY": api_key,
        "X-SAPI-SIGN-TYPE": SIGN_TYPE,
        "signature": sign(private_key, signed),
    }


def build_subscribe(
    api_key: str, private_key: str, event: str, scope: str, timestamp: int, period: str = "1MIN"
) -> str:
    """A subscribe request: only `str(timestamp)` is signed (§2.2); timestamp is a number."""
    request: dict[str, object] = {SCOPE[event]: scope}
    if event == "api_trade":
        request["period"] = period
    request.update(
        method="SUBSCRIBE",
        event=event,
        apiKey=api_key,
        signature=sign(private_key, str(timestamp)),
        timestamp=timestamp,
        signType=SIGN_TYPE,
    )
    return json.dumps(request, separators=(",", ":"))
