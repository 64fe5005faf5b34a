"""The simulators' own signing code (bridge/dev/simulator/wire.py) against the venues'
documented signing vectors: the simulators verify the bridge's signatures with it, so it must be
right on its own, independently of the bridge's venue modules."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from bridge.dev.simulator.wire import (
    BadSatoriSignature,
    aquanow_rest_signed_text,
    aquanow_signature,
    aquanow_ws_signed_text,
    json_text,
    satori_signer,
)
from tests.data import aquanow, satori

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "signature"), aquanow.VECTORS)
def test_aquanow_hmac_reproduces_every_vector(text: str, signature: str) -> None:
    assert aquanow_signature(aquanow.SECRET, text) == signature


def test_aquanow_signed_texts_are_the_vectors_byte_for_byte() -> None:
    texts = [text for text, _ in aquanow.VECTORS]
    channels = ("executionReport", "parentOrderReport", "balanceReport")
    assert [aquanow_ws_signed_text("subscribe", c, "1700000000000") for c in channels] == texts[:3]
    assert [
        aquanow_rest_signed_text("GET", path, "1700000000000")
        for path in ("/users/v1/userbalance", "/trades/v2/order")
    ] == texts[3:]


@pytest.mark.parametrize(("message", "signature"), satori.VECTORS)
def test_satori_recovery_finds_the_documented_wallet(message: str, signature: str) -> None:
    assert satori_signer(message, signature) == satori.WALLET


def test_satori_recovery_of_another_message_is_another_address() -> None:
    (message, signature), (other, _) = satori.VECTORS[0], satori.VECTORS[1]
    assert satori_signer(other, signature) != satori.WALLET
    assert satori_signer(message + " ", signature) != satori.WALLET


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[2:],  # no 0x
        lambda s: s.upper().replace("0X", "0x"),  # hex must be lowercase
        lambda s: s[:-2] + "00",  # v must be 27/28 (1b/1c), never 0/1
        lambda s: s[:-2],  # no v
        lambda s: "0x" + "00" * 64 + "1b",  # r = s = 0 recovers no key
    ],
)
def test_satori_refuses_signatures_not_in_the_documented_form(
    mangle: Callable[[str], str],
) -> None:
    _, signature = satori.VECTORS[0]
    with pytest.raises(BadSatoriSignature):
        satori_signer(satori.VECTORS[0][0], mangle(signature))


def test_json_text_keeps_every_digit_and_the_key_order() -> None:
    value = {"b": Decimal("0.10000000000000000001"), "a": [1, "x", None, True], "c": "é"}
    assert json_text(value) == '{"b":0.10000000000000000001,"a":[1,"x",null,true],"c":"é"}'
    with pytest.raises(ValueError, match="no JSON form"):
        json_text(Decimal("NaN"))
