"""Structured logging: JSON lines when not on a terminal, readable console output on one.

Secrets are never passed to a logger; as a second line of defence, `configure` takes the
configured secret values and a processor masks any of them wherever they would appear.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

Processor = Any


def _masker(secrets: Iterable[str]) -> Processor:
    values = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def mask(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if values:
            for key, value in event.items():
                if isinstance(value, str):
                    for secret in values:
                        if secret in value:
                            value = value.replace(secret, "***")
                    event[key] = value
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


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("bridge").bind(**bound)
