"""The venue registry (bridge/venues/__init__.py) is the one list every venue-dependent part
derives from: the config's stream sections, `bridge check`, secret masking."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from pydantic import SecretStr

from bridge.sections import StreamBase
from bridge.settings import secret_keys, secrets_of, validate_settings
from bridge.venues import STREAM_TYPES, VENUES, venue_name

pytestmark = pytest.mark.unit

SATORI_DOC_KEY = "0x2bf7cc40cfc5b2a43f60769d31191e82ed33aafb5e75be710271acd40a769564"


def test_every_venue_implements_the_stream_section() -> None:
    assert VENUES == ("aquanow", "satori")
    for stream_type in STREAM_TYPES:
        assert issubclass(stream_type, StreamBase)
        assert not inspect.isabstract(stream_type), stream_type
        assert venue_name(stream_type) in VENUES


def test_secret_keys_are_every_secret_field_of_every_section() -> None:
    keys = secret_keys()
    assert {"api_key", "api_secret", "private_key", "sasl_password", "registry_password"} <= keys
    for stream_type in STREAM_TYPES:
        for name, field in stream_type.model_fields.items():
            if field.annotation is SecretStr:
                assert name in keys, (stream_type, name)


def test_every_secret_of_a_config_is_found_for_masking() -> None:
    settings = validate_settings(
        {
            "kafka": {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "bridge",
                "sasl_password": "kafka-pw",
            },
            "streams": [
                {
                    "name": "a",
                    "venue": "aquanow",
                    "url": "ws://x",
                    "api_key": "aq-key",
                    "api_secret": "aq-secret",
                },
                {
                    "name": "s",
                    "venue": "satori",
                    "url": "ws://y",
                    "api_key": "sat-key",
                    "private_key": SATORI_DOC_KEY,
                    "coins": ["USD"],
                    "pairs": ["ETH-USD"],
                },
            ],
        }
    )
    assert sorted(secrets_of(settings)) == sorted(
        ["kafka-pw", "aq-key", "aq-secret", "sat-key", SATORI_DOC_KEY]
    )


def test_importing_the_service_loads_no_signing_library() -> None:
    """eth-account costs seconds and raises the recursion limit: only a Satori stream loads it."""
    code = "import bridge.app, sys; print('eth_account' in sys.modules, sys.getrecursionlimit())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "1000"]


def test_signing_for_satori_leaves_the_recursion_limit_alone() -> None:
    """py_ecc raises it to 100,000 at import; with that, a deeply nested frame overflows the C
    stack in the JSON decoder (SIGSEGV) instead of raising RecursionError."""
    code = (
        "import sys; limit = sys.getrecursionlimit(); import bridge.venues.satori.signing; "
        "print(sys.getrecursionlimit() == limit, 'py_ecc' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
