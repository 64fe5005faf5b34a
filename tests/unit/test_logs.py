"""Log output: JSON lines off a terminal, bound fields, and the masking second line of defence
(configured secrets, hex private keys without their 0x, signatures as long hex runs), also on
records from the stdlib loggers libraries use."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bridge.logs import HEX_MASK, MASK, configure, get_logger, secret_replacer, secret_variants

pytestmark = pytest.mark.unit

PRIVATE = "0x2bf7cc40cfc5b2a43f60769d31191e82ed33aafb5e75be710271acd40a769564"
SECRET = "aquanow-hmac-secret"
SIGNATURE = "ab" * 48  # an HMAC-SHA384 hex digest's length


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]


def test_json_lines_bound_to_the_stream(capsys: pytest.CaptureFixture[str]) -> None:
    configure("info", "auto")  # stderr is captured, not a terminal: JSON
    get_logger(stream="s1", venue="aquanow").info("connected", attempt=2)
    get_logger(stream="s1").debug("not shown at info")
    (event,) = lines(capsys)
    assert {k: event[k] for k in ("event", "stream", "venue", "attempt", "level")} == {
        "event": "connected",
        "stream": "s1",
        "venue": "aquanow",
        "attempt": 2,
        "level": "info",
    }
    assert str(event["timestamp"]).endswith("Z")


def test_secrets_are_masked_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    configure("debug", "json", secrets=[SECRET, PRIVATE, "short"])
    log = get_logger(stream="s1")
    log.info(f"oops {SECRET}", detail={"nested": [f"key={PRIVATE[2:]}", SIGNATURE]})
    log.warning("sig", signature=f"0x{'cd' * 65}", raw=SECRET.encode())
    try:
        raise ValueError(f"bad key {PRIVATE}")
    except ValueError:
        log.exception("failed")
    logging.getLogger("aiokafka").warning("library says %s", SECRET)
    text = capsys.readouterr().err
    for secret in (SECRET, PRIVATE, PRIVATE[2:], SIGNATURE, "cd" * 65):
        assert secret not in text
    events = [json.loads(line) for line in text.splitlines()]
    assert events[0]["event"] == f"oops {MASK}"
    assert events[0]["detail"] == {"nested": [f"key={MASK}", HEX_MASK]}
    assert events[1]["signature"] == HEX_MASK
    assert events[1]["raw"] == MASK
    assert MASK in events[2]["exception"]
    assert events[3]["event"] == f"library says {MASK}"
    assert events[3]["logger"] == "aiokafka"


def test_public_values_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    configure("info", "json", secrets=[SECRET])
    wallet = "0x134eF0CfABEBF9c70eAE631254a6b4736f9b8508"
    event_id = "0b6d1a1e-9c0e-5f43-8a57-0f2d2e6c7a11"
    get_logger().info("subscribed", account=wallet, event_id=event_id)
    (event,) = lines(capsys)
    assert (event["account"], event["event_id"]) == (wallet, event_id)


def test_variants() -> None:
    assert secret_variants(["0xabcdef12", "abc", "plain-secret"]) == [
        "plain-secret",
        "0xabcdef12",
        "abcdef12",
    ]


KEYS = st.text("0123456789abcdef-", min_size=6, max_size=40)


@given(
    secrets=st.lists(KEYS, min_size=1, max_size=80, unique=True),
    words=st.lists(st.text("ghijk 0123", max_size=12), max_size=12),
    picks=st.lists(st.integers(0, 79), max_size=12),
)
def test_many_secrets_are_masked_as_a_few_are(
    secrets: list[str], words: list[str], picks: list[int]
) -> None:
    """Beyond a few dozen secrets (one per stream) they are found by prefix in one pass:
    the same text as looking for each in turn, and no secret left."""
    assume(not any(a != b and a in b for a in secrets for b in secrets))
    values = sorted(secrets, key=len, reverse=True)
    chosen = [values[p % len(values)] for p in picks]
    text = " ".join(w for pair in zip(words, chosen, strict=False) for w in pair)
    one_by_one = text
    for secret in values:
        one_by_one = one_by_one.replace(secret, MASK)
    never = [f"zz{i:04d}zz" for i in range(40)]  # absent: makes the many-secrets path run
    masked = secret_replacer(sorted(values + never, key=len, reverse=True))(text)
    assert masked == one_by_one
    assert not any(secret in masked for secret in values)
