"""Structured logging: JSON lines when not on a terminal, readable console output on one.

Secrets are never passed to a logger. As a second line of defence, a processor masks (`***`)
every configured secret value wherever it would appear in an event, nested values included,
and any long hex run (an HMAC-SHA384 or secp256k1 signature, a private key without its `0x`):
`[hex redacted]`. Either marker in a log means something tried to log a secret: a test runs
full sessions and fails if one shows up.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, Final

import structlog
from structlog.typing import FilteringBoundLogger

Processor = Any
MASK: Final = "***"
HEX_MASK: Final = "[hex redacted]"
# 64+ hex digits: private keys (64), HMAC-SHA384 (96) and EIP-191 (130) signatures. Nothing the
# bridge logs on purpose is that long (wallet addresses are 40, event ids are UUIDs).
_LONG_HEX: Final = re.compile(r"(?:0x)?[0-9a-fA-F]{64,}")
# Up to this many secrets, each is looked for in turn (C-speed `in` per secret).
_SCANNED_UP_TO: Final = 32


def secret_variants(secrets: Iterable[str]) -> list[str]:
    """The values to mask, longest first: each secret, plus a hex key without its `0x`."""
    values: set[str] = set()
    for secret in secrets:
        values.add(secret)
        if secret[:2] in ("0x", "0X"):
            values.add(secret[2:])
    return sorted((v for v in values if len(v) >= 6), key=len, reverse=True)


def secret_replacer(values: list[str]) -> Callable[[str], str]:
    """Masks every one of `values` (longest first) in a text. A few are looked for one by one;
    many (a process of 10,000 streams has 10,000 keys: 5 ms a log line that way, and every
    stream logs its connection) are found by their first characters in one pass."""
    if len(values) <= _SCANNED_UP_TO:

        def each(text: str) -> str:
            for secret in values:
                if secret in text:
                    text = text.replace(secret, MASK)
            return text

        return each
    width = min(len(v) for v in values)
    by_prefix: dict[str, dict[int, set[str]]] = {}
    for secret in values:
        by_prefix.setdefault(secret[:width], {}).setdefault(len(secret), set()).add(secret)
    # prefix → (length, secrets of that length), longest first: the longest match wins; one
    # set lookup per length, however many secrets share a prefix ("sk_live_…")
    index = {p: sorted(lengths.items(), reverse=True) for p, lengths in by_prefix.items()}

    def indexed(text: str) -> str:
        parts: list[str] = []
        i = start = 0
        while i <= len(text) - width:
            lengths = index.get(text[i : i + width], ())
            found = next((n for n, group in lengths if text[i : i + n] in group), 0)
            if not found:
                i += 1
                continue
            parts += (text[start:i], MASK)
            i = start = i + found
        return "".join((*parts, text[start:])) if parts else text

    return indexed


def _masker(secrets: Iterable[str]) -> Processor:
    replace = secret_replacer(secret_variants(secrets))

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return _LONG_HEX.sub(HEX_MASK, replace(value))
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, bytes):
            return clean(value.decode("utf-8", "replace"))
        return value

    def mask(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            event[key] = clean(value)
        return event

    return mask


def configure(level: str = "info", fmt: str = "auto", secrets: Iterable[str] = ()) -> None:
    """Configure structlog (and the stdlib loggers of aiokafka & co) once, in `main`."""
    json_output = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    numeric = logging.getLevelNamesMapping()[level.upper()]
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _masker(secrets),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries (aiokafka, websockets, aiohttp) log through the stdlib: same renderer, same
    # masking, WARNING and above.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *processors],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))


def get_logger(**bound: Any) -> FilteringBoundLogger:
    """The bridge's logger with `bound` context (stream, venue, component) on every event."""
    logger: FilteringBoundLogger = structlog.get_logger("bridge").bind(**bound)
    return logger
